#!/usr/bin/env python
"""Seconds per frame against the vocabulary size: OMG-Seg classifies every class in one pass
(a cosine against the class-embedding matrix), unlike detectors that run once per text prompt,
so 1, 80 and 1,000 classes should cost the same. This checks that nothing of ours grows with the
vocabulary (post-processing loops, the open-vocabulary ensemble, writers).

    .venv/bin/python benchmarks/vocab_size.py                         # tiny model, --size tiny
    .venv/bin/python benchmarks/vocab_size.py --weights convl --size small --frames 3

Class embeddings are seeded random unit vectors (no text tower: the text side is a one-off per
vocabulary, cached on disk). Each run goes through segcli.api.VideoJob (vis, jsonl output); the
open-vocabulary ensemble runs with every other class "seen". One process, runs interleaved,
fastest of --repeat kept.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_WEIGHTS = ROOT.parent / "shared" / "golden" / "tiny_v1"


def segmenter(weights: str, classes: int, precision: str):
    import torch

    from segcli.bench import random_convl
    from segcli.model.checkpoint import load_weights
    from segcli.model.omgseg import build_model
    from segcli.pipeline.engine import Segmenter, resolve_weights
    from segcli.vocab.parse import Vocabulary

    if weights == "convl":
        model, _ = random_convl()
    else:
        source = resolve_weights(weights)
        model = build_model(source.config)
        load_weights(model, source.weights, clip=source.clip)
    dim = model.cfg.backbone.embed_dim
    gen = torch.Generator().manual_seed(classes)
    emb = torch.nn.functional.normalize(torch.randn(classes, 1, dim, generator=gen), dim=-1)
    model.set_class_embeddings(emb)
    things = max(1, classes * 3 // 4)
    vocab = Vocabulary([[f"class {i}"] for i in range(classes)], num_things=min(things, classes))
    return Segmenter(model, vocab, torch.device("cpu"), precision, seen=[i % 2 == 0 for i in range(classes)])


def one_run(seg, video: str, size, open_vocab: bool, out: Path) -> float:
    from segcli.api import VideoJob
    from segcli.pipeline.video import VideoOptions

    opts = VideoOptions(task="vis", scale=size, score_threshold=0.0, max_objects=20, open_vocab=open_vocab)
    job = VideoJob(video, opts, vocabulary=seg.vocabulary, output=str(out), formats=["jsonl"])
    t = time.perf_counter()
    report = job.run(seg)
    return (time.perf_counter() - t) / max(report.frames, 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="model folder, or 'convl' (random ConvNeXt-L)")
    p.add_argument("--classes", default="1,80,1000")
    p.add_argument("--size", default="320x192")
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args(argv)

    from segcli.bench import parse_size, write_video
    from segcli.runtime import keep_freed_memory

    keep_freed_memory()
    size = parse_size(args.size)  # WxH or a preset (official, fast, small, tiny), as `segcli bench --size`
    counts = [int(v) for v in args.classes.split(",")]
    with tempfile.TemporaryDirectory(prefix="segcli-vocab-") as tmp:
        video = Path(tmp) / "v.mp4"
        write_video(video, args.frames, size[0], (size[0] * 9 // 16) // 2 * 2)
        segs = {k: segmenter(args.weights, k, args.precision) for k in counts}
        one_run(segs[counts[0]], str(video), size, True, Path(tmp) / "warmup.jsonl")  # first-run set-up costs
        best: dict[tuple[int, bool], float] = {}
        for rep in range(args.repeat):
            for k in counts:
                for ov in (False, True):
                    s = one_run(segs[k], str(video), size, ov, Path(tmp) / f"o{k}{ov}{rep}.jsonl")
                    best[(k, ov)] = min(best.get((k, ov), s), s)
    name = "ConvNeXt-L (random)" if args.weights == "convl" else Path(args.weights).name
    print(f"vis, {name}, --size {args.size}, {args.frames} frames, {args.precision}, fastest of {args.repeat}")
    print(f"{'classes':>8} {'s/frame':>9} {'s/frame --open-vocab':>21} {'vs 1 class':>11}")
    base = best[(counts[0], False)]
    for k in counts:
        print(f"{k:8d} {best[(k, False)]:9.3f} {best[(k, True)]:21.3f} {100 * (best[(k, False)] / base - 1):+10.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
