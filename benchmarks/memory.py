#!/usr/bin/env python
"""Peak RSS of ONLINE-mode video segmentation against video length (issue #3): it must be flat.

    .venv/bin/python benchmarks/memory.py                      # 100, 1000, 3000 frames, tiny bundle
    .venv/bin/python benchmarks/memory.py --lengths 100,300 --size 320x192 --task vps

Each length runs in its own process (ru_maxrss is per process) on frames generated in memory
(moving shapes, no video file), through the whole pipeline: preprocessing, model, MinVIS
association, per-frame post-processing and the streaming jsonl writer (to a temporary file).
The table shows the peak RSS of every run, its current RSS after 10% / 50% / 100% of the frames,
and the growth of the peak over the shortest run; flat means within 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from segcli.pipeline.reader import Frame, FrameSource, SourceInfo  # noqa: E402

DEFAULT_WEIGHTS = ROOT.parent / "shared" / "golden" / "tiny_v1"


def current_rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


class GeneratedSource(FrameSource):
    """`segcli.bench.synthetic_frames` as a frame source: a job fed from memory, no video file."""

    def __init__(self, n: int, width: int, height: int, fps: float = 24.0):
        self.n, self.fps = n, fps
        self.info = SourceInfo("synthetic", width, height, fps, n, "video", "")

    def __iter__(self):
        from segcli.bench import synthetic_frames

        w, h = self.info.width, self.info.height
        for i, rgb in enumerate(synthetic_frames(self.n, w, h)):
            yield Frame(i, i / self.fps, rgb, f"{i:05d}")


def worker(args) -> dict:
    import torch

    from segcli.api import VideoJob
    from segcli.bench import VARIANTS, build_segmenter, peak_rss_mb
    from segcli.pipeline.video import VideoOptions
    from segcli.runtime import keep_freed_memory

    keep_freed_memory()  # as the CLI does: freed memory stays in the heap, so flat must hold with it
    if args.threads:
        torch.set_num_threads(args.threads)
    variant = VARIANTS["fp32-eager" if args.precision == "fp32" else "bf16-sync"]
    seg = build_segmenter(args.weights, torch.device("cpu"), variant)
    w, h = (int(v) for v in args.size.split("x"))
    n = args.worker
    source = GeneratedSource(n, w, (w * 9 // 16) // 2 * 2)
    out = Path(args.out)
    opts = VideoOptions(task=args.task, mode=args.mode, scale=(w, h), score_threshold=0.0, max_objects=20)
    job = VideoJob(source, opts, vocabulary=seg.vocabulary, output=str(out), formats=["jsonl"])
    marks = {max(1, n // 10): None, max(1, n // 2): None, n: None}
    count = 0

    def mark(result) -> None:
        nonlocal count
        count += 1
        if count in marks:
            marks[count] = current_rss_mb()

    report = job.run(seg, on_result=mark)
    return {"frames": report.frames, "seconds": report.seconds, "peak_rss_mb": peak_rss_mb(),
            "rss_at": {str(k): v for k, v in marks.items()}, "output_bytes": out.stat().st_size}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="model folder (default: the tiny golden bundle)")
    p.add_argument("--lengths", default="100,1000,3000", help="video lengths in frames")
    p.add_argument("--size", default="192x112", help="resize limits WxH (source frames are 16:9 at that width)")
    p.add_argument("--task", default="vis", help="vis, vps or vos-free tasks (vis, vps, vss)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--mode", default="online", choices=("online", "auto"),
                   help="online (flat by construction) or auto, the CLI's default: exact while the kept "
                        "logits fit the exact-mode budget, then online")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return 0

    lengths = [int(v) for v in args.lengths.split(",")]
    print(f"{args.mode}-mode memory: {Path(args.weights).name}, --size {args.size}, task {args.task}, "
          f"{args.precision}, frames generated in memory, jsonl written to a temp file", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="segcli-mem-") as tmp:
        for n in lengths:
            cmd = [sys.executable, __file__, "--worker", str(n), "--out", str(Path(tmp) / f"run{n}.jsonl"),
                   "--weights", args.weights, "--size", args.size, "--task", args.task,
                   "--precision", args.precision, "--mode", args.mode]
            cmd += ["--threads", str(args.threads)] if args.threads else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"  {n} frames: FAILED: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
                return 1
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(res)
            print(f"  {n:5d} frames: peak RSS {res['peak_rss_mb']:.0f} MB ({res['seconds']:.0f} s)", flush=True)
    base = rows[0]["peak_rss_mb"]
    print()
    print(f"{'frames':>6} {'seconds':>8} {'frames/s':>8} {'RSS@10%':>8} {'RSS@50%':>8} {'RSS@end':>8} "
          f"{'peak RSS':>9} {'vs first':>8}")
    for r in rows:
        at = list(r["rss_at"].values())
        print(f"{r['frames']:6d} {r['seconds']:8.1f} {r['frames'] / r['seconds']:8.1f} {at[0]:7.0f}M {at[1]:7.0f}M "
              f"{at[-1]:7.0f}M {r['peak_rss_mb']:8.0f}M {100 * (r['peak_rss_mb'] / base - 1):+7.1f}%")
    growth = max(r["peak_rss_mb"] for r in rows) / base - 1
    verdict = "flat" if growth <= 0.10 else "NOT flat"
    print(f"\npeak RSS grows {100 * growth:.1f}% from {rows[0]['frames']} to {rows[-1]['frames']} frames: "
          f"{verdict} (bound 10%)")
    return 0 if growth <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
