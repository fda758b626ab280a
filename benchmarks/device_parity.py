#!/usr/bin/env python
"""The whole pipeline on a GPU against the same pipeline on the CPU, in one process (fp32).

    python benchmarks/device_parity.py --device cuda            # on a machine with a GPU

CI has no GPU, so this is the check that the CUDA path (batched deformable attention, tracker
and post-processing on the device) computes what the CPU path computes; the CPU path itself is
held to the golden bundles by the test suite. Both models are the released ConvNeXt-L
architecture with the same seeded random weights (segcli.bench.random_convl); TF32 is switched
off so that the GPU runs true fp32. For vps the panoptic thresholds are lowered to 0 so that
random weights still yield segments to compare. Every object of every frame is matched by id;
prints IoU and score differences per task and exits 1 if a task is off (mean IoU < 0.99 or an
unmatched object).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def results(device: str, task: str, frames: list, size: tuple[int, int]) -> dict:
    import torch

    from segcli.bench import _video_options, random_convl
    from segcli.pipeline.engine import Segmenter, resolve_device
    from segcli.pipeline.reader import Frame
    from segcli.pipeline.session import VideoSession

    model, vocab = random_convl()
    # vis-ov: vis with the CLIP mask-pooling ensemble, every other class "seen"
    seen = [i % 2 == 0 for i in range(len(vocab))]
    seg = Segmenter(model, vocab, resolve_device(device), "fp32", seen=seen)
    if task == "vps":
        seg.cfg.test.object_mask_thr = 0.0
        seg.cfg.test.iou_thr = 0.0
    h, w = frames[0].shape[:2]

    class Info:
        width, height = w, h

    opts = _video_options(task.split("-")[0], size, Info)
    opts.open_vocab = task.endswith("-ov")
    out = {}
    with torch.no_grad():
        stream = (Frame(i, i / 24, rgb.copy(), f"{i:05d}") for i, rgb in enumerate(frames))
        for fr in VideoSession(seg, opts).run(stream):
            for s in fr.segments:
                out[(fr.index, s.id)] = (s.category, s.score, s.mask)
    return out


def compare(ref: dict, run: dict) -> dict:
    ious, dscore, labels = [], 0.0, 0
    for key, (cat, score, mask) in ref.items():
        if key not in run:
            continue
        c2, s2, m2 = run[key]
        union = np.logical_or(mask, m2).sum()
        ious.append(1.0 if union == 0 else np.logical_and(mask, m2).sum() / union)
        dscore = max(dscore, abs(score - s2))
        labels += int(cat != c2)
    unmatched = len(set(ref) ^ set(run))
    return {"objects": len(ref), "unmatched": unmatched, "iou_mean": float(np.mean(ious)) if ious else float("nan"),
            "iou_min": float(np.min(ious)) if ious else float("nan"), "score_diff": dscore, "label_diff": labels}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--reference", default="cpu")
    p.add_argument("--size", default="640x384", help="resize limits WxH")
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--tasks", default="vis,vps,vos,vis-ov", help="vis-ov: vis with --open-vocab")
    args = p.parse_args()

    import torch

    from segcli.bench import source_frame_size, synthetic_frames

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    size = tuple(int(v) for v in args.size.split("x"))
    frames = list(synthetic_frames(args.frames, *source_frame_size(size)))
    ok = True
    print(f"{args.device} vs {args.reference}, fp32, ConvNeXt-L random weights, {args.frames} frames, "
          f"--size {args.size}")
    print(f"{'task':<5} {'objects':>7} {'unmatched':>9} {'IoU mean':>9} {'IoU min':>8} {'dscore':>8} {'labels':>6}")
    for task in args.tasks.split(","):
        ref = results(args.reference, task, frames, size)
        run = results(args.device, task, frames, size)
        c = compare(ref, run)
        good = c["unmatched"] == 0 and c["objects"] > 0 and c["iou_mean"] >= 0.99
        ok &= good
        print(f"{task:<5} {c['objects']:7d} {c['unmatched']:9d} {c['iou_mean']:9.4f} {c['iou_min']:8.4f} "
              f"{c['score_diff']:8.5f} {c['label_diff']:6d}  {'ok' if good else 'OFF'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
