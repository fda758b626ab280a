"""Throughput of `segcli batch`: videos/hour and frames/s with 1 and 2 local workers (torch threads
split between them) and the overhead of the Ray engine against the local one.

    python benchmarks/batch.py                                   # tiny model, 8 videos x 12 frames
    python benchmarks/batch.py --convl --videos 2 --frames 3     # + ConvNeXt-L, seeded random weights

Every configuration runs the same generated videos (moving shapes, H.264, --video-size) into a
fresh output folder through segcli.batch.run_batch, in this process, so the driver's imports are
paid once; each run still starts its own workers (spawned processes / Ray actors) and loads the
model in each, which is the real cost of a batch run. Printed per configuration: wall time,
videos/hour and frames/s over the wall time, the steady rate (frames / (wall - start-up), start-up
= time to the first finished video minus that video's own seconds), and the Ray engine's cost over
local with the same workers. The Ray cluster (ray.init, num_cpus = this machine's cores) is
started once before the Ray runs; its start-up is printed separately.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = REPO.parent / "shared" / "golden" / "tiny_v1"


def make_videos(folder: Path, count: int, frames: int, size: tuple[int, int]) -> list[Path]:
    import av
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    out = []
    for k in range(count):
        path = folder / f"clip{k:02d}.mp4"
        rng = np.random.default_rng(k)
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=24)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            x0, y0 = int(rng.integers(0, w // 3)), int(rng.integers(0, h // 3))
            for i in range(frames):
                a = np.full((h, w, 3), 60, np.uint8)
                a[y0:y0 + h // 3, x0 + 3 * i:x0 + 3 * i + w // 4] = (220, 40, 30)
                a[h // 2:h // 2 + h // 4, w // 2:w // 2 + w // 3] = (30, 190, 40)
                for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        out.append(path)
    return out


def random_convl_files(folder: Path) -> tuple[str, str]:
    """ConvNeXt-L with seeded random weights (segcli.bench.random_convl) as a checkpoint file and
    its 133 random class embeddings as an embeddings file: what --weights / --vocab-embeddings take."""
    from safetensors.torch import save_file

    from segcli.bench import random_convl
    from segcli.vocab.cache import save_embeddings

    model, vocab = random_convl()
    weights = folder / "convl_random.safetensors"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    emb = model.panoptic_head.cls_embed.permute(1, 2, 0)[:-1]  # (D, K+1, P) -> (K, P, D), no background
    embeddings = folder / "convl_random_embeddings.safetensors"
    save_embeddings(embeddings, emb.float().contiguous(), vocab)
    return str(weights), str(embeddings)


def run_config(videos: Path, out: Path, *, engine: str, workers: int, weights: str, size, embeddings=None,
               task: str = "vis") -> dict:
    from segcli.batch import BatchOptions, run_batch
    from segcli.vocab import load_embeddings

    vocab = emb = None
    if embeddings:
        vocab, emb = load_embeddings(embeddings)
    if out.exists():
        shutil.rmtree(out)
    opts = BatchOptions(task, [str(videos)], str(out), engine=engine, workers=workers, weights=weights,
                        device="cpu", vocabulary=vocab, embeddings=emb, video_options=dict(scale=size),
                        formats=["ytvis"], quiet=True)
    started = time.time()
    t0 = time.perf_counter()
    result = run_batch(opts)
    wall = time.perf_counter() - t0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert result.ok == len(records), records
    frames = sum(r["frames"] for r in records)
    from datetime import datetime

    first = min(records, key=lambda r: r["finished"])  # start-up: until the first video began
    startup = max(0.0, datetime.fromisoformat(first["finished"]).timestamp() - started - first["seconds"])
    busy = sum(r["seconds"] for r in records)
    return {"engine": engine, "workers": workers, "threads": max(1, (os.cpu_count() or 1) // workers),
            "videos": len(records), "frames": frames, "wall": wall, "startup": startup,
            "videos_per_hour": len(records) / wall * 3600, "fps": frames / wall,
            "steady_fps": frames / max(wall - startup, 1e-9), "busy": busy}


def table(rows: list[dict], title: str) -> str:
    lines = [f"\n{title}", "| engine | workers x threads | videos | frames | wall s | start-up s | videos/hour | "
             "frames/s | steady frames/s | per-video s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['workers']} x {r['threads']} | {r['videos']} | {r['frames']} | "
                     f"{r['wall']:.1f} | {r['startup']:.1f} | {r['videos_per_hour']:.0f} | {r['fps']:.2f} | "
                     f"{r['steady_fps']:.2f} | {r['busy'] / r['videos']:.2f} |")
    local = {r["workers"]: r for r in rows if r["engine"] == "local"}
    for r in rows:
        if r["engine"] == "ray" and r["workers"] in local:
            base = local[r["workers"]]
            lines.append(f"\nray vs local ({r['workers']} workers): wall {r['wall'] - base['wall']:+.1f} s "
                         f"({r['wall'] / base['wall']:.2f}x), start-up {r['startup'] - base['startup']:+.1f} s, "
                         f"per video {(r['busy'] - base['busy']) / r['videos']:+.3f} s")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--video-size", default="320x192", help="WxH of the generated videos")
    ap.add_argument("--weights", default=str(TINY), help="tiny model folder (default ../shared/golden/tiny_v1)")
    ap.add_argument("--workers", default="1,2", help="local worker counts to compare")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--convl", action="store_true", help="also ConvNeXt-L with random weights (bf16)")
    ap.add_argument("--convl-size", default="320x192")
    ap.add_argument("--convl-videos", type=int, default=2)
    ap.add_argument("--convl-frames", type=int, default=3)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    w, h = (int(v) for v in args.video_size.split("x"))
    counts = [int(v) for v in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="segcli-bench-batch-"))
    os.environ.setdefault("SEGCLI_HOME", str(work / "home"))
    print(f"machine: {os.cpu_count()} cores; videos: {args.videos} x {args.frames} frames at {w}x{h}", flush=True)
    ray_started = None
    try:
        videos = work / "videos"
        make_videos(videos, args.videos, args.frames, (w, h))
        models = [("tiny", args.weights, None, None, videos)]
        if args.convl:
            cw, ch = (int(v) for v in args.convl_size.split("x"))
            cvideos = work / "convl_videos"
            make_videos(cvideos, args.convl_videos, args.convl_frames, (cw, ch))
            weights, emb = random_convl_files(work)
            models.append(("ConvNeXt-L (random, bf16)", weights, emb, (cw, ch), cvideos))
        for label, weights, emb, size, folder in models:
            rows = []
            for n in counts:
                rows.append(run_config(folder, work / f"out-local-{n}", engine="local", workers=n, weights=weights,
                                       size=size, embeddings=emb))
                print(f"  {label}: local x{n}: {rows[-1]['wall']:.1f} s", flush=True)
            if not args.no_ray:
                try:
                    import ray
                except ImportError:
                    print("  (ray not installed: no Ray rows)")
                else:
                    if ray_started is None:
                        t = time.perf_counter()
                        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                                 logging_level="ERROR")
                        ray_started = time.perf_counter() - t
                        print(f"  Ray cluster start-up: {ray_started:.1f} s", flush=True)
                    n = max(counts)
                    rows.append(run_config(folder, work / f"out-ray-{n}", engine="ray", workers=n, weights=weights,
                                           size=size, embeddings=emb))
                    print(f"  {label}: ray x{n}: {rows[-1]['wall']:.1f} s", flush=True)
            print(table(rows, f"{label}, vis, {rows[0]['frames'] // rows[0]['videos']} frames per video"),
                  flush=True)
        if ray_started is not None:
            print(f"\nRay cluster start-up (ray.init, not in the rows): {ray_started:.1f} s")
    finally:
        if ray_started is not None:
            import ray

            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
