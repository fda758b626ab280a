"""Benchmark of the whole pipeline: per-stage latency, end-to-end frames/s, peak RSS, and the
accuracy of every fast path against fp32 eager (issue #6).

    python benchmarks/bench.py                                # ConvNeXt-L (random weights), 1280x736
    python benchmarks/bench.py --weights ../shared/golden/tiny_v1 --size 320x192 --frames 12
    segcli bench --variants fp32-eager,bf16,bf16-compile --tasks vis

One synthetic H.264 video (moving shapes, 16:9 at the --size width) is generated first. Every
(model, task, variant) then runs end to end (decode -> preprocess -> model -> tracking ->
post-processing -> writers, in the CLI's default folder format) in its OWN subprocess, so the
peak RSS is per run and no run warms another's caches. The runs are cold (the first clip pays
oneDNN set-up); `--compile` variants report their warm-up (compilation) separately.

Accuracy: every variant is compared with `fp32-eager` of the same model and task, on
  * the model's raw outputs: IoU of each query's binarised stride-4 mask (logit > 0), mean and
    worst over the queries; largest class-logit difference; top-1 class agreement;
  * the task outputs: IoU of each reported object (matched by id) and its score difference.
The bound is mean mask IoU >= 0.98 on both. ConvNeXt-L uses seeded random weights (the recipe
of the golden bundles: layer scales 0.2..0.6, damped decoder projections) and 133 random unit
class embeddings, so its masks are not meaningful objects, only a numerical stress test.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import UsageError

TASKS = ("vis", "vps", "vos")
DEFAULT_FORMAT = {"vis": "ytvis", "vps": "panoptic", "vss": "panoptic", "vos": "davis"}
STAGES = ("decode", "preprocess", "backbone", "pixel_decoder", "decoder", "postprocess", "write")
IOU_BOUND = 0.98
REFERENCE = "fp32-eager"


@dataclass(frozen=True)
class Variant:
    """One way to run the pipeline. `fp32-eager` is the plain reference: fp32, NCHW, no compile,
    no overlap and none of the exact shortcuts (it classifies all 10 predictions and upsamples
    every query to the frame, as the official code does). `overlap` decodes ahead and writes
    behind on worker threads (segcli.pipeline.prefetch); `shortcuts` are Segmenter's."""

    name: str
    precision: str
    channels_last: bool
    compile: bool = False
    overlap: bool = False
    gpu_only: bool = False
    shortcuts: bool = True


VARIANTS = {v.name: v for v in (
    Variant("fp32-eager", "fp32", False, shortcuts=False),
    Variant("fp32-sync", "fp32", False),
    Variant("fp32", "fp32", True, overlap=True),
    Variant("bf16-nchw", "bf16", False, overlap=True),
    Variant("bf16-sync", "bf16", True),
    Variant("bf16", "bf16", True, overlap=True),
    Variant("bf16-compile", "bf16", True, compile=True, overlap=True),
    Variant("fp16", "fp16", True, overlap=True, gpu_only=True),
    Variant("fp16-compile", "fp16", True, compile=True, overlap=True, gpu_only=True),
)}
DEFAULT_VARIANTS = {"cpu": ("fp32-eager", "fp32", "bf16"), "cuda": ("fp32-eager", "fp32", "fp16", "bf16")}


@dataclass
class BenchOptions:
    weights: list[str] = field(default_factory=lambda: ["convl"])  # "convl" = random ConvNeXt-L
    size: str = "1280x736"  # resize limits, as the CLI's --size
    frames: int = 3
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    variants: list[str] | None = None  # default per device: DEFAULT_VARIANTS
    device: str = "cpu"
    threads: int | None = None
    warmup: bool = False  # one untimed clip first for every variant (compile variants always)
    repeat: int = 1  # runs per (task, variant), interleaved; the table shows the fastest
    json_out: str | None = None
    keep: str | None = None  # keep the run folder (video, outputs) here
    no_floors: bool = False  # skip the GEMM-peak measurement and MAC counting


# ---- small helpers ------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def parse_size(text: str) -> tuple[int, int]:
    presets = {"official": (1280, 736), "hd": (1280, 736), "fast": (960, 544), "small": (640, 384),
               "tiny": (320, 192)}
    if text in presets:
        return presets[text]
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text!r}: expected WxH or one of {', '.join(presets)}") from None
    return w, h


def source_frame_size(size: tuple[int, int]) -> tuple[int, int]:
    """A 16:9 source frame as wide as the resize limit: 1280x736 limits -> 1280x720 frames."""
    w = max(size)
    return w, int(round(w * 9 / 16 / 2)) * 2


def synthetic_frames(n: int, width: int, height: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Deterministic uint8 RGB frames: a textured background with coloured shapes moving across."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([90 + 60 * np.sin(xx / 97.0), 110 + 50 * np.cos(yy / 61.0), 120 + 40 * np.sin((xx + yy) / 143.0)],
                    -1)
    base = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    shapes = [(rng.uniform(0.05, 0.95, 2), rng.uniform(-0.01, 0.01, 2), rng.uniform(0.04, 0.12),
               tuple(int(c) for c in rng.integers(0, 255, 3)), i % 2) for i in range(6)]
    for t in range(n):
        img = base.copy()
        for pos, vel, rad, color, kind in shapes:
            cx, cy = ((pos + vel * t) % 1.0) * (width, height)
            r = int(rad * min(width, height))
            if kind:
                cv2.circle(img, (int(cx), int(cy)), r, color, -1)
            else:
                cv2.rectangle(img, (int(cx) - r, int(cy) - r // 2), (int(cx) + r, int(cy) + r // 2), color, -1)
        yield img


def write_video(path: Path, n: int, width: int, height: int, fps: float = 24.0) -> None:
    from segcli.io.video import VideoEncoder

    enc = VideoEncoder(path, "mp4", "libx264", width, height, "yuv420p", fps,
                       codec_options={"crf": "20", "preset": "veryfast"})
    try:
        for frame in synthetic_frames(n, width, height):
            enc.encode(frame, "rgb24")
    except BaseException:
        enc.abort()
        raise
    enc.close()


# ---- models ---------------------------------------------------------------------------------------
def random_convl(seed: int = 0):
    """Released ConvNeXt-L / 300-query architecture with seeded random weights, initialised like
    the golden bundles so that every path matters, and 133 random unit class embeddings."""
    import torch

    from segcli.model.config import convl_config
    from segcli.model.omgseg import build_model
    from segcli.vocab.datasets import dataset_vocabulary

    torch.manual_seed(seed)
    model = build_model(convl_config())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".gamma"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.4 + 0.2)
            elif ".cross_attn.attn.in_proj" in name:
                p.mul_(0.5)
            elif ".attn.out_proj." in name or (".ffn.layers.1." in name and "transformer_decoder" in name):
                p.mul_(0.2)
            elif name.endswith("level_embed.weight"):
                p.mul_(0.1)
    vocab = dataset_vocabulary("coco")
    emb = torch.randn(len(vocab), 1, model.cfg.backbone.embed_dim, generator=g)
    model.set_class_embeddings(torch.nn.functional.normalize(emb, dim=-1))
    return model, vocab


def build_segmenter(weights: str, device, variant: Variant):
    import torch

    from segcli.pipeline.engine import Segmenter, resolve_weights

    pipeline = None  # the official demo settings for the random ConvNeXt-L
    if weights == "convl":
        model, vocab = random_convl()
    else:
        from segcli.model.checkpoint import load_weights
        from segcli.model.omgseg import build_model

        source = resolve_weights(weights)
        model = build_model(source.config)
        load_weights(model, source.weights, clip=source.clip)
        vocab, pipeline = source.vocabulary, source.pipeline
        golden = Path(weights) / "outputs.npz"
        if vocab is None or not golden.is_file():
            return Segmenter.load(weights, device=str(device), precision=variant.precision,
                                  channels_last=variant.channels_last, compile=variant.compile,
                                  shortcuts=variant.shortcuts)
        with np.load(golden) as data:  # the bundle's own class embeddings: no text tower, no cache
            model.set_class_embeddings(torch.from_numpy(data["cls_embed_file"]))
    return Segmenter(model, vocab, device, variant.precision, channels_last=variant.channels_last,
                     compile=variant.compile, shortcuts=variant.shortcuts, pipeline=pipeline)


# ---- one run (in a subprocess) --------------------------------------------------------------------
class StageClock:
    """The session's timing hook (segcli.pipeline.session.Hooks): accumulated seconds per stage,
    waiting for the GPU before reading the clock. The pixel decoder is timed by torch forward
    hooks on its module and taken out of "decoder"; each clip's raw outputs are kept (binarised)
    for the accuracy comparison."""

    def __init__(self, device):
        import torch

        self.seconds = dict.fromkeys(STAGES + ("session",), 0.0)
        self.captured: list = []
        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def now(self) -> float:
        self._sync()
        return time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str):
        start = self.now()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + self.now() - start

    def clip_decoded(self, out) -> None:
        q = out.mask_logits.shape[1]
        self.captured.append((out.cls_logits[0].cpu().numpy().copy(), out.iou_logits[0].cpu().numpy().copy(),
                              np.packbits((out.mask_logits[0] > 0).cpu().numpy().reshape(q, -1), -1),
                              out.mask_logits.shape[1:]))

    def watch_pixel_decoder(self, seg) -> None:
        pd = seg.model.panoptic_head.pixel_decoder
        marks = {}
        pd.register_forward_pre_hook(lambda *a: marks.__setitem__("start", self.now()))

        def done(*a):
            spent = self.now() - marks["start"]
            self.seconds["pixel_decoder"] += spent
            self.seconds["decoder"] -= spent
        pd.register_forward_hook(done)

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        self.captured.clear()


def _video_options(task: str, size: tuple[int, int], info):
    from segcli.pipeline.video import ObjectPrompt, VideoOptions

    objects = []
    if task == "vos":  # one click in the middle of the first frame
        objects = [ObjectPrompt(1, 0, points=[(info.width / 2, info.height / 2)])]
    # random weights give low class scores: keep everything, at most 20 tracks (same for every variant)
    return VideoOptions(task=task, mode="auto", scale=size, score_threshold=0.0, max_objects=20, objects=objects)


def run_worker(spec: dict) -> dict:
    """One (model, task, variant) run through segcli.api.VideoJob, the CLI's own path."""
    import torch

    from segcli.api import VideoJob
    from segcli.pipeline.engine import resolve_device
    from segcli.pipeline.reader import open_source
    from segcli.pipeline.session import VideoSession

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    variant = VARIANTS[spec["variant"]]
    device = resolve_device(spec["device"])
    task, size = spec["task"], tuple(spec["size"])
    start = time.perf_counter()
    seg = build_segmenter(spec["weights"], device, variant)
    load_s = time.perf_counter() - start
    rss_load = peak_rss_mb()
    clock = StageClock(device)
    clock.watch_pixel_decoder(seg)
    vocab = None if task == "vos" else seg.vocabulary  # vos is class-agnostic, as in the CLI

    warmup_s = 0.0
    if variant.compile or spec.get("warmup"):
        with open_source(spec["video"]) as source:
            clip = seg.cfg.video.clip_size
            frames = [f for _, f in zip(range(clip), source)]
            t = time.perf_counter()
            for _ in VideoSession(seg, _video_options(task, size, source.info)).run(frames):
                pass
        warmup_s = time.perf_counter() - t
        clock.reset()

    out_dir = Path(spec["out"])
    source = open_source(spec["video"])
    src = source.info
    job = VideoJob(source, _video_options(task, size, src), vocabulary=vocab, output=str(out_dir / "written") + "/",
                   formats=[DEFAULT_FORMAT[task]])
    rows, masks = [], []

    def keep(frame) -> None:
        for s in frame.segments:
            rows.append((frame.index, s.id, s.category, s.score))
            masks.append(np.packbits(s.mask.reshape(-1)))

    t_start = clock.now()
    report = job.run(seg, hooks=clock, on_result=keep, overlap=variant.overlap)
    wall = clock.now() - t_start
    # post-processing (+ association, bookkeeping) = time inside the session not in a model stage
    model_side = sum(clock.seconds[k] for k in ("preprocess", "backbone", "pixel_decoder", "decoder"))
    clock.seconds["postprocess"] = clock.seconds.pop("session") - model_side

    arrays = {"rows": np.asarray(rows, dtype=np.float64).reshape(-1, 4),
              "masks": np.stack(masks) if masks else np.zeros((0, 0), np.uint8),
              "frame_shape": np.asarray([src.height, src.width])}
    for i, (cls, iou, bits, shape) in enumerate(clock.captured):
        arrays[f"clip{i}_cls"], arrays[f"clip{i}_iou"], arrays[f"clip{i}_masks"] = cls, iou, bits
        arrays[f"clip{i}_shape"] = np.asarray(shape)
    np.savez(out_dir / "outputs.npz", **arrays)
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    n = report.frames
    return {"weights": spec["weights"], "task": task, "variant": variant.name, "frames": n, "wall_s": wall,
            "fps": n / wall if wall > 0 else 0.0, "stages_s": clock.seconds, "load_s": load_s,
            "warmup_s": warmup_s, "rss_after_load_mb": rss_load, "peak_rss_mb": peak_rss_mb(),
            "gpu_peak_mb": gpu_peak, "threads": torch.get_num_threads(), "device": str(device),
            "outputs": str(out_dir / "outputs.npz")}


# ---- accuracy -------------------------------------------------------------------------------------
def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of packed boolean masks (N, bytes); NaN where both are empty."""
    inter = np.unpackbits(a & b, axis=-1).sum(-1).astype(np.float64)
    union = np.unpackbits(a | b, axis=-1).sum(-1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def compare_outputs(ref_path: str, run_path: str) -> dict:
    ref, run = np.load(ref_path), np.load(run_path)
    out: dict = {}
    # model level: every query of every clip
    ious, dlogit, agree, total = [], 0.0, 0, 0
    i = 0
    while f"clip{i}_cls" in ref and f"clip{i}_cls" in run:
        ious.append(_iou(ref[f"clip{i}_masks"], run[f"clip{i}_masks"]))
        a, b = ref[f"clip{i}_cls"], run[f"clip{i}_cls"]
        dlogit = max(dlogit, float(np.abs(a - b).max()), float(np.abs(ref[f"clip{i}_iou"] - run[f"clip{i}_iou"]).max()))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += a.shape[0]
        i += 1
    q = np.concatenate(ious) if ious else np.zeros(0)
    q = q[~np.isnan(q)]
    out["query_iou_mean"] = float(q.mean()) if q.size else float("nan")
    out["query_iou_min"] = float(q.min()) if q.size else float("nan")
    out["logit_max_diff"] = dlogit
    out["top1_agree"] = agree / total if total else float("nan")
    # task level: objects matched by (frame, id)
    ra, rb = ref["rows"], run["rows"]
    index_b = {(int(f), int(s)): j for j, (f, s, _, _) in enumerate(rb)}
    obj_iou, dscore, missing = [], 0.0, 0
    for j, (f, s, _, score) in enumerate(ra):
        k = index_b.get((int(f), int(s)))
        if k is None:
            missing += 1
            continue
        v = _iou(ref["masks"][j:j + 1], run["masks"][k:k + 1])[0]
        obj_iou.append(1.0 if np.isnan(v) else v)
        dscore = max(dscore, abs(float(score) - float(rb[k, 3])))
    keys_a = {(int(f), int(s)) for f, s, _, _ in ra}
    extra = sum(1 for f, s, _, _ in rb if (int(f), int(s)) not in keys_a)
    out["object_iou_mean"] = float(np.mean(obj_iou)) if obj_iou else float("nan")
    out["object_iou_min"] = float(np.min(obj_iou)) if obj_iou else float("nan")
    out["score_max_diff"] = dscore
    out["objects"] = len(ra)
    out["objects_unmatched"] = missing + extra
    means = [v for v in (out["query_iou_mean"], out["object_iou_mean"]) if not np.isnan(v)]
    out["within_bound"] = bool(means) and min(means) >= IOU_BOUND
    return out


# ---- floors: the machine's matrix-multiply peak and each stage's MACs -----------------------------
def gemm_peak(device, precision: str, n: int = 2048, seconds: float = 0.6) -> float:
    """TFLOP/s of an n x n x n matmul in the variant's dtype on this machine (best of repeated runs)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    best, spent = float("inf"), 0.0
    while spent < seconds:
        t = time.perf_counter()
        a @ b
        sync()
        dt = time.perf_counter() - t
        best, spent = min(best, dt), spent + dt
    return 2 * n**3 / best / 1e12


def stage_macs(weights: str, size: tuple[int, int], frames: int) -> dict[str, float]:
    """Multiply-accumulates per frame of each model stage at this input size, counted by torch's
    FlopCounterMode on the meta device (shapes only: instant, no weights needed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from segcli.model.config import convl_config
    from segcli.model.omgseg import build_model
    from segcli.pipeline.engine import model_config_for
    from segcli.pipeline.preprocess import resize_shape

    cfg = convl_config() if weights == "convl" else model_config_for(weights)
    src_w, src_h = source_frame_size(size)
    h, w, _ = resize_shape(src_h, src_w, size)
    h, w = -(-h // 32) * 32, -(-w // 32) * 32
    t = min(frames, 3)  # one clip
    out = {}
    with torch.device("meta"), torch.no_grad():
        model = build_model(cfg).eval().requires_grad_(False)
        model.set_class_embeddings(torch.zeros(133, 1, cfg.backbone.embed_dim))
        with FlopCounterMode(display=False) as fc:
            feats = model.extract_features(torch.zeros(t, 3, h, w), 50)
        out["backbone"] = fc.get_total_flops() / 2 / t
        with FlopCounterMode(display=False) as fc:
            model.panoptic_head.pixel_decoder(feats)
        out["pixel_decoder"] = fc.get_total_flops() / 2 / t
        with FlopCounterMode(display=False) as fc:
            model.forward_clip(feats, t)
        out["decoder"] = fc.get_total_flops() / 2 / t - out["pixel_decoder"]
    return out


def format_floors(results: list[dict], peaks: dict[str, float], macs: dict[str, dict]) -> str:
    """Each model stage against its floor: MACs / the machine's GEMM peak in the variant's dtype."""
    lines = ["matrix-multiply peak here: " + ", ".join(f"{p} {v:.2f} TFLOP/s" for p, v in peaks.items()),
             f"{'task':<4} {'variant':<13} " + " ".join(f"{s + ' (GMAC, floor ms, x floor)':>36}"
                                                      for s in ("backbone", "pixel_decoder", "decoder"))]
    lines.append("-" * len(lines[-1]))
    for r in results:
        if "fps" not in r or r["weights"] not in macs:
            continue
        peak = peaks.get(VARIANTS[r["variant"]].precision)
        n = max(r["frames"], 1)
        cells = []
        for stage in ("backbone", "pixel_decoder", "decoder"):
            gmac = macs[r["weights"]][stage] / 1e9
            floor_ms = 2 * gmac / (peak * 1e3) * 1e3 if peak else float("nan")
            measured = 1000 * r["stages_s"][stage] / n
            cells.append(f"{gmac:10.1f} {floor_ms:11.0f} {measured / floor_ms if floor_ms else float('nan'):12.2f}x")
        lines.append(f"{r['task']:<4} {r['variant']:<13} " + " ".join(f"{c:>36}" for c in cells))
    return "\n".join(lines)


# ---- driver ---------------------------------------------------------------------------------------
def _model_name(weights: str) -> str:
    return "ConvNeXt-L (random)" if weights == "convl" else Path(weights).name


def run(opts: BenchOptions) -> list[dict]:
    import torch

    from segcli.pipeline.engine import resolve_device

    device = resolve_device(opts.device)
    variants = opts.variants or list(DEFAULT_VARIANTS["cuda" if device.type == "cuda" else "cpu"])
    for v in variants:
        if v not in VARIANTS:
            raise UsageError(f"unknown variant {v!r} (choose {', '.join(VARIANTS)})")
        if VARIANTS[v].gpu_only and device.type == "cpu":
            raise UsageError(f"variant {v} needs a GPU")
    if REFERENCE not in variants:
        variants = [REFERENCE] + variants
    size = parse_size(opts.size)
    work = Path(opts.keep) if opts.keep else Path(tempfile.mkdtemp(prefix="segcli-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src_w, src_h = source_frame_size(size)
    video = work / f"synthetic_{src_w}x{src_h}_{opts.frames}.mp4"
    write_video(video, opts.frames, src_w, src_h)
    print(f"segcli bench: {_machine(device)}; torch {torch.__version__}, threads "
          f"{opts.threads or torch.get_num_threads()}; {opts.frames} frames {src_w}x{src_h} -> --size "
          f"{size[0]}x{size[1]}", flush=True)
    results = []
    for weights in opts.weights:
        for task in opts.tasks:
            # variants interleaved (a, b, a, b): a slow spell of a shared machine hits both alike
            runs: dict[str, list[dict]] = {name: [] for name in variants}
            for rep in range(max(1, opts.repeat)):
                for name in variants:
                    run_dir = work / (f"{Path(weights).name}_{task}_{name}" + (f"_{rep + 1}" if rep else ""))
                    run_dir.mkdir(exist_ok=True)
                    spec = {"weights": weights, "task": task, "variant": name, "device": opts.device,
                            "size": list(size), "video": str(video), "out": str(run_dir),
                            "threads": opts.threads, "warmup": opts.warmup}
                    res = _spawn(spec, run_dir)
                    print(f"  {_model_name(weights):>20} {task} {name:<13} "
                          + (f"{res['fps']:.3f} frames/s, peak RSS {res['peak_rss_mb']:.0f} MB" if "fps" in res
                             else f"FAILED: {res['error']}"), flush=True)
                    runs[name].append(res)
            for name in variants:
                ok = [r for r in runs[name] if "fps" in r]
                best = max(ok, key=lambda r: r["fps"]) if ok else runs[name][0]
                best["runs_fps"] = [r["fps"] for r in ok]
                results.append(best)
        for task in opts.tasks:
            ref = next((r for r in results if r.get("weights") == weights and r.get("task") == task
                        and r.get("variant") == REFERENCE and "outputs" in r), None)
            for r in results:
                if ref and r.get("weights") == weights and r.get("task") == task and "outputs" in r:
                    r["accuracy"] = compare_outputs(ref["outputs"], r["outputs"])
                    r["speedup"] = r["fps"] / ref["fps"] if ref["fps"] else float("nan")
    print()
    print(format_tables(results, size, opts.frames, opts.repeat))
    if not opts.no_floors:
        peaks = {p: gemm_peak(device, p) for p in dict.fromkeys(VARIANTS[v].precision for v in variants)}
        macs = {w: stage_macs(w, size, opts.frames) for w in opts.weights}
        print(format_floors(results, peaks, macs))
        for r in results:
            r["floors"] = {"gemm_peak_tflops": peaks, "macs_per_frame": macs.get(r.get("weights"))}
    if opts.json_out:
        Path(opts.json_out).write_text(json.dumps({"options": asdict(opts), "results": results}, indent=1))
    return results


def _machine(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}"
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {name}, {os.cpu_count()} cores"


def _spawn(spec: dict, run_dir: Path) -> dict:
    spec_path = run_dir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    result_path = run_dir / "result.json"
    env = dict(os.environ)  # the worker imports this very segcli, installed or not
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "segcli.bench", str(spec_path), str(result_path)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not result_path.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {**spec, "error": tail[0]}
    return json.loads(result_path.read_text())


def format_tables(results: list[dict], size: tuple[int, int], frames: int, repeat: int = 1) -> str:
    lines = []
    ok = [r for r in results if "fps" in r]
    for weights in dict.fromkeys(r["weights"] for r in ok):
        rows = [r for r in ok if r["weights"] == weights]
        best = f"; fastest of {repeat} interleaved runs" if repeat > 1 else ""
        lines.append(f"{_model_name(weights)} at --size {size[0]}x{size[1]}, {frames} frames, device "
                     f"{rows[0]['device']}, {rows[0]['threads']} threads (ms per frame; cold start{best})")
        head = (f"{'task':<4} {'variant':<13} " + " ".join(f"{s[:9]:>9}" for s in STAGES)
                + f" {'total':>8} {'frames/s':>8} {'speedup':>7} {'peakRSS':>8} {'load s':>6} {'warmup':>6}")
        lines += [head, "-" * len(head)]
        for r in rows:
            n = max(r["frames"], 1)
            cells = " ".join(f"{1000 * r['stages_s'][s] / n:9.0f}" for s in STAGES)
            lines.append(f"{r['task']:<4} {r['variant']:<13} {cells} {1000 * r['wall_s'] / n:8.0f} "
                         f"{r['fps']:8.3f} {r.get('speedup', float('nan')):6.2f}x {r['peak_rss_mb']:6.0f}MB "
                         f"{r['load_s']:6.1f} {r['warmup_s']:6.1f}")
        if repeat > 1:
            for r in rows:
                lines.append(f"  {r['task']} {r['variant']}: frames/s of each run "
                             + ", ".join(f"{v:.3f}" for v in r.get("runs_fps", [])))
        lines.append("")
        head = (f"{'task':<4} {'variant':<13} {'qIoU mean':>9} {'qIoU min':>9} {'top1':>6} {'dlogit':>7} "
                f"{'objIoU mean':>11} {'objIoU min':>10} {'dscore':>7} {'objects':>7} {'unmatched':>9}  bound")
        lines.append(f"accuracy vs {REFERENCE} (query masks at stride 4, objects at frame size; "
                     f"bound: mean IoU >= {IOU_BOUND})")
        lines += [head, "-" * len(head)]
        for r in rows:
            a = r.get("accuracy")
            if not a or r["variant"] == REFERENCE:
                continue
            lines.append(f"{r['task']:<4} {r['variant']:<13} {a['query_iou_mean']:9.4f} {a['query_iou_min']:9.4f} "
                         f"{a['top1_agree']:6.3f} {a['logit_max_diff']:7.3f} {a['object_iou_mean']:11.4f} "
                         f"{a['object_iou_min']:10.4f} {a['score_max_diff']:7.4f} {a['objects']:7d} "
                         f"{a['objects_unmatched']:9d}  {'ok' if a['within_bound'] else 'FAIL'}")
        lines.append("")
    failed = [r for r in results if "error" in r]
    for r in failed:
        lines.append(f"FAILED {r['weights']} {r['task']} {r['variant']}: {r['error']}")
    return "\n".join(lines)


def worker_main(argv: list[str]) -> int:
    """`python -m segcli.bench SPEC RESULT`: one run, spawned by `run` (the user-facing command
    is `segcli bench`, segcli/commands/bench.py)."""
    from .runtime import keep_freed_memory

    keep_freed_memory()  # as the CLI does, for every variant alike
    spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text())
    Path(result_path).write_text(json.dumps(run_worker(spec)))
    return 0


if __name__ == "__main__":
    from .runtime import exit_now

    exit_now(worker_main(sys.argv[1:]))  # the result file is written: skip the interpreter's teardown
