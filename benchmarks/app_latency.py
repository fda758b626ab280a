#!/usr/bin/env python
"""`segcli app` latency: click -> mask through the HTTP API, for a click on a frame whose features
are cached (only the prompt decoder runs) and for the first click on a new frame (backbone + pixel
decoder + prompt decoder), plus the memory one cached frame takes.

    .venv/bin/python benchmarks/app_latency.py                         # ConvNeXt-L random weights + tiny
    .venv/bin/python benchmarks/app_latency.py --weights convl --clicks 10
    .venv/bin/python benchmarks/app_latency.py --weights ../shared/golden/tiny_v1 --size 320x192

Each click is one POST /api/sources/1/prompts (decode + JSON) and one GET of its mask PNG, timed
from the client (FastAPI's TestClient, in process: no network, no browser). The video is a
generated 1280x720 clip (as `segcli bench`); "convl" is the released ConvNeXt-L / 300-query
architecture with seeded random weights (segcli.bench.random_convl), precision as the CLI picks it
(bf16 on CPU; fp32 for model folders). The very first click of a process also pays one-time
warm-up (kernel selection, allocator growth), so it is shown on its own line.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TINY = ROOT.parent / "shared" / "golden" / "tiny_v1"


def build(weights: str, device: str, precision: str | None):
    import torch

    from segcli.pipeline.engine import Segmenter, default_precision

    dev = torch.device(device)
    if weights == "convl":
        from segcli.bench import random_convl

        model, vocab = random_convl()
        return Segmenter(model, vocab, dev, precision or ("bf16" if dev.type == "cpu" else "fp16"))
    return Segmenter.load(weights, device=device, precision=precision or default_precision(weights, dev))


def measure(weights: str, args, video: Path) -> dict:
    from fastapi.testclient import TestClient

    from segcli.webapp import AppConfig, AppState
    from segcli.webapp.server import create_app

    t0 = time.perf_counter()
    seg = build(weights, args.device, args.precision)
    load_s = time.perf_counter() - t0
    size = tuple(int(v) for v in args.size.split("x"))
    state = AppState(seg, AppConfig(weights="convl" if weights == "convl" else weights, input=str(video),
                                    scale=size, cache_mb=args.cache_mb))
    client = TestClient(create_app(state), base_url="http://127.0.0.1")
    src = state.sources[1]
    w, h = src.width, src.height

    def click(frame: int, obj: int, point=None, box=None) -> tuple[float, dict]:
        body = {"frame": frame, "object": obj}
        body.update({"point": point} if point is not None else {"box": box})
        t = time.perf_counter()
        r = client.post("/api/sources/1/prompts", json=body)
        r.raise_for_status()
        view = r.json()
        client.get(view["mask"]).raise_for_status()
        return time.perf_counter() - t, view["timing"]

    for k in range(args.frames):  # decode the frames first: frame decoding is not what is measured
        client.get(f"/api/sources/1/frames/{k}").raise_for_status()
    warm_s, warm_t = click(0, 1, point=[w * 0.3, h * 0.4])
    cached, cached_dec = [], []
    for i in range(args.clicks):
        x, y = (0.1 + 0.8 * ((i * 0.37) % 1)) * w, (0.1 + 0.8 * ((i * 0.61) % 1)) * h
        if i % 3 == 2:
            s, t = click(0, 2 + i % 5, box=[x * 0.5, y * 0.5, min(w, x * 0.5 + w / 5), min(h, y * 0.5 + h / 5)])
        else:
            s, t = click(0, 2 + i % 5, point=[x, y])
        assert t["cached"], t
        cached.append(s)
        cached_dec.append(t["decode_ms"])
    new, new_feat = [], []
    for k in range(1, args.frames):
        s, t = click(k, 1, point=[w * 0.5, h * 0.5])
        assert not t["cached"], t
        new.append(s)
        new_feat.append(t["features_ms"])
    stats = state.cache.stats()
    state.close()
    return {"model": "ConvNeXt-L (random)" if weights == "convl" else Path(weights).name,
            "precision": seg.precision, "size": args.size, "frame": f"{w}x{h}", "load_s": load_s,
            "warm_s": warm_s, "warm_feat_ms": warm_t["features_ms"], "cached": cached, "cached_dec": cached_dec,
            "new": new, "new_feat": new_feat, "mb_per_frame": stats["used_mb"] / max(1, stats["frames"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", action="append", help="convl (random ConvNeXt-L) or a model folder; repeatable "
                   "(default: convl and the tiny reference model when present)")
    p.add_argument("--size", default="1280x736", help="resize limits WxH (default 1280x736, the official)")
    p.add_argument("--frames", type=int, default=3, help="frames of the generated clip (first clicks: frames - 1)")
    p.add_argument("--clicks", type=int, default=8, help="cached clicks on frame 0")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache-mb", type=float, default=1024.0)
    args = p.parse_args(argv)
    import torch

    from segcli.bench import source_frame_size, write_video
    from segcli.runtime import keep_freed_memory

    keep_freed_memory()  # as the CLI does
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = args.weights or (["convl"] + ([str(TINY)] if (TINY / "config.json").is_file() else []))
    os.environ.setdefault("SEGCLI_HOME", tempfile.mkdtemp(prefix="segcli-bench-home-"))
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="segcli-app-latency-") as tmp:
        video = Path(tmp) / "clip.mp4"
        write_video(video, args.frames, *source_frame_size(size))
        rows = [measure(w, args, video) for w in weights]
    print(f"segcli app click -> mask latency, {args.device}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; POST prompt + GET mask PNG, in-process client\n")
    head = ("| model | precision | resize limits | frame | cached click: median (min-max) ms | of which prompt "
            "decoder ms | first click on a new frame: median ms | of which features ms | very first click ms | "
            "cache MB / frame |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        c = [v * 1000 for v in r["cached"]]
        n = [v * 1000 for v in r["new"]]
        print(f"| {r['model']} | {r['precision']} | {r['size']} | {r['frame']} | {statistics.median(c):.0f} "
              f"({min(c):.0f}-{max(c):.0f}) | {statistics.median(r['cached_dec']):.0f} | "
              f"{statistics.median(n):.0f} | {statistics.median(r['new_feat']):.0f} | {r['warm_s'] * 1000:.0f} | "
              f"{r['mb_per_frame']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
