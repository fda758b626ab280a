"""`segcli batch TASK INPUTS... -o OUT/`: many videos (or images) with one model per worker, on
this machine (`--engine local`, N processes) or a Ray cluster (`--engine ray`); resumable.

Exit codes: 0 every video ok; 11 some failed (the others are done; their errors are in
OUT/manifest.jsonl); 130/143 stopped by Ctrl-C/SIGTERM (a rerun resumes); the usual codes
(2 usage, 3 missing input, 4 unreadable input, 5 output, 6 weights, 7 prompt, 8 vocabulary)
for problems found before any video runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DEFAULT_WEIGHTS = "omg-seg-convl"

Opt = typer.Option


def batch(
    task: Annotated[str, typer.Argument(metavar="TASK", help="vis, vps, vss (video semantic), vos or image")],
    inputs: Annotated[list[str], typer.Argument(metavar="INPUTS...", help="videos, frame folders, folders of "
                      "them, globs, a .txt/.csv list (- reads one from stdin), or a YouTube-VIS / COCO dataset "
                      "JSON")],
    output: Annotated[str, Opt("--output", "-o", metavar="DIR", help="output folder: OUT/<video>/ per video, "
                      "OUT/manifest.jsonl, dataset-level results (results.json, panoptic/, davis/...)")],
    engine: Annotated[str, Opt(metavar="ENGINE", help="local (worker processes on this machine) or ray (actors "
                      'on a Ray cluster; pip install "segcli[ray]")')] = "local",
    workers: Annotated[Optional[int], Opt(metavar="N", help="workers (default: one per GPU; on CPUs, slots of "
                       "up to 4 threads: cores / --threads; ray: the same over the cluster)")] = None,
    address: Annotated[Optional[str], Opt(metavar="ADDR", help="Ray cluster: auto, ray://host:10001 or "
                       "host:6379 (default: start a local one)")] = None,
    threads: Annotated[Optional[int], Opt(metavar="N", help="torch CPU threads per worker (default: the "
                       "machine's cores split between the workers)")] = None,
    retry_failed: Annotated[bool, Opt("--retry-failed", help="redo the videos an earlier run recorded as "
                            "failed (by default a rerun skips them, as it skips the done ones)")] = False,
    no_merge: Annotated[bool, Opt("--no-merge", help="keep the per-video outputs only (no results.json, "
                        "panoptic/, davis/ at the top)")] = False,
    chunk: Annotated[int, Opt(metavar="N", help="image: images per unit of work")] = 100,
    prompts: Annotated[Optional[Path], Opt("--prompts", metavar="DIR", help="vos: DIR/<video>.json per video "
                       '({"objects": [{"id": 1, "frame": 0, "points": [[x, y]], "boxes": [[x1, y1, x2, y2]]}]})'
                       )] = None,
    masks: Annotated[Optional[Path], Opt("--masks", metavar="DIR", help="vos: DAVIS-style first-frame masks, "
                     "DIR/<video>/00000.png (indexed PNG, one object per index)")] = None,
    dataset_json: Annotated[Optional[Path], Opt("--dataset-json", metavar="FILE", help="COCO / YouTube-VIS "
                            "JSON whose ids (video_id, image_id, category_id) the results use, when INPUTS are "
                            "folders")] = None,
    images_root: Annotated[Optional[Path], Opt("--images-root", metavar="DIR", help="where a dataset JSON's "
                           "file_names are (default: found next to the JSON: JPEGImages/, val2017/...)")] = None,
    semantic: Annotated[bool, Opt("--semantic", help="vps: video semantic segmentation (= TASK vss)")] = False,
    image_task: Annotated[Optional[str], Opt("--task", "--image-task", metavar="KIND",
                          help="image: panoptic, instance or semantic (default panoptic)")] = None,
    point: Annotated[Optional[list[str]], Opt(metavar="X,Y", help="image: a click prompt on every image "
                     "(repeatable; one object per prompt)")] = None,
    box: Annotated[Optional[list[str]], Opt(metavar="X1,Y1,X2,Y2", help="image: a box prompt on every image "
                   "(repeatable)")] = None,
    vocab: Annotated[Optional[str], Opt(metavar="CLASSES", help='classes, comma separated, synonyms with | : '
                     '"dog|puppy,car" (default: a dataset JSON\'s categories, else the model\'s own or COCO)')
                     ] = None,
    stuff: Annotated[Optional[str], Opt(metavar="CLASSES", help="background (stuff) classes added after "
                     "--vocab")] = None,
    vocab_file: Annotated[Optional[Path], Opt(metavar="FILE", help="one class per line, synonyms with |")] = None,
    dataset: Annotated[Optional[str], Opt(metavar="NAME", help="built-in vocabulary (segcli vocab list)")] = None,
    vocab_embeddings: Annotated[Optional[Path], Opt(metavar="FILE", help="class embeddings written by segcli "
                                "vocab embed")] = None,
    open_vocab: Annotated[bool, Opt("--open-vocab", help="re-score classes with CLIP mask pooling")] = False,
    weights: Annotated[str, Opt("--weights", "-w", metavar="NAME|FILE|DIR", help="registry name, checkpoint "
                       "file or model folder")] = DEFAULT_WEIGHTS,
    device: Annotated[str, Opt(metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps (auto/cuda: worker k "
                      "on GPU k)")] = "auto",
    precision: Annotated[Optional[str], Opt(metavar="P", help="fp32, bf16 or fp16")] = None,
    size: Annotated[Optional[str], Opt(metavar="WxH", help="resize limits WxH or a preset (official, fast, small, "
                    "tiny)")] = None,
    clip_size: Annotated[Optional[int], Opt(metavar="N", help="frames decoded together")] = None,
    score_threshold: Annotated[Optional[float], Opt("--score-threshold", metavar="S", help="drop objects whose "
                               "class probability is lower (default: as the single command: vis 0.3, vps 0, "
                               "image instance 0.3)")] = None,
    max_objects: Annotated[Optional[int], Opt(metavar="N", help="at most this many objects per video or image "
                           "(default 100; vos 255)")] = None,
    start: Annotated[int, Opt(metavar="K", help="first source frame of every video")] = 0,
    end: Annotated[Optional[int], Opt(metavar="K", help="stop every video before this frame")] = None,
    format: Annotated[Optional[list[str]], Opt("--format", "-f", metavar="FORMAT", help="per-video formats "
                      "(repeatable; default: ytvis for vis, panoptic for vps/vss, davis for vos, panoptic or "
                      "coco-rle (instance) for image)")] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="no progress and no notices on stderr")] = False,
    mode: Annotated[str, Opt(metavar="MODE", help="exact, online or auto")] = "auto",
    reader: Annotated[str, Opt(metavar="NAME", help="pyav or decord")] = "pyav",
    exact_budget: Annotated[float, Opt(metavar="MB", help="exact mode keeps mask logits up to this many MB")
                            ] = 2048.0,
    compile: Annotated[bool, Opt("--compile", help="torch.compile the backbone in every worker")] = False,
) -> None:
    """Many videos (or images) in one run: resumable, one model per worker, dataset-level results.

    Examples:

      segcli batch vis videos/ --dataset ytvis19 -o out/

      segcli batch vis ytvis/valid.json --workers 4 -o out/

      segcli batch vos DAVIS/JPEGImages/480p/ --masks DAVIS/Annotations/480p/ -o out/

      segcli batch vps list.csv --engine ray --address auto -o /shared/out/

      segcli batch image val2017/ --dataset-json instances_val2017.json --task instance -o out/
    """
    from .. import cli
    from ..batch import BatchFailedError, BatchOptions, run_batch
    from ..errors import UsageError

    console = cli.Console(quiet)
    if semantic:
        if task != "vps":
            raise UsageError("--semantic goes with vps")
        task = "vss"
    cli.check_common(weights=weights, device=device, precision=precision, threads=threads)
    if task != "image" and (image_task is not None or point or box):
        raise UsageError("--task, --point and --box go with segcli batch image (vos: --prompts or --masks)")
    if start < 0:
        raise UsageError(f"--start {start}: must be >= 0")
    if end is not None and end <= start:
        raise UsageError(f"--end {end}: must be greater than --start {start}")
    vocabulary, embeddings = cli.select_vocabulary(vocab, stuff, vocab_file, dataset, vocab_embeddings)
    scale = cli.parse_size(size)
    video_options: dict = {}
    image_options: dict = {}
    if task == "image":
        kind = image_task or "panoptic"
        objects = {}
        for i, p in enumerate(point or [], 1):
            objects[i] = ([cli._point(p)], [])
        for j, b in enumerate(box or [], len(objects) + 1):
            objects[j] = ([], [cli._box(b)])
        threshold = score_threshold if score_threshold is not None else (0.3 if kind == "instance" else 0.0)
        if not 0.0 <= threshold <= 1.0:
            raise UsageError(f"--score-threshold {threshold}: must be between 0 and 1")
        if max_objects is not None and max_objects < 1:
            raise UsageError(f"--max-objects {max_objects}: must be at least 1")
        image_options = dict(task=kind, scale=scale, score_threshold=threshold, max_objects=max_objects or 100,
                             open_vocab=open_vocab, objects=objects)
    else:
        defaults = {"vis": 0.3, "vps": 0.0, "vss": 0.0, "vos": 0.0}
        threshold = score_threshold if score_threshold is not None else defaults.get(task, 0.3)
        video_options = dict(mode=mode, scale=scale, clip_size=clip_size, score_threshold=threshold,
                             max_objects=max_objects or (255 if task == "vos" else 100),
                             open_vocab=open_vocab and task != "vos", exact_budget_mb=exact_budget)
        if task == "vos" and open_vocab:
            raise UsageError("--open-vocab does not go with vos")
    opts = BatchOptions(task=task, inputs=list(inputs), output=output, engine=engine, workers=workers,
                        address=address, threads=threads, retry_failed=retry_failed, weights=weights, device=device,
                        precision=precision, vocabulary=vocabulary, embeddings=embeddings,
                        vocab_given=vocabulary is not None, open_vocab=open_vocab, compile=compile,
                        video_options=video_options, image_options=image_options,
                        open_options=dict(reader=reader, start=start, end=end), formats=format,
                        prompts_dir=str(prompts) if prompts else None, masks_dir=str(masks) if masks else None,
                        dataset_json=str(dataset_json) if dataset_json else None,
                        images_root=str(images_root) if images_root else None, chunk=chunk, merge=not no_merge,
                        quiet=quiet, notice=console.notice)
    result = run_batch(opts)
    unit = "chunk" if task == "image" else "video"
    frames = "images" if task == "image" else "frames"
    parts = [f"{result.ok} ok"] + ([f"{result.failed} failed"] if result.failed else [])
    if result.failed_inputs:
        parts.append(f"{len(result.failed_inputs)} unreadable image{'s' if len(result.failed_inputs) != 1 else ''}")
    rate = f" ({result.frames / result.seconds:.2f} {frames}/s)" if result.frames and result.seconds else ""
    merged = f"; wrote {', '.join(result.merged)}" if result.merged else ""
    console.notice(f"{result.total} {unit}{'s' if result.total != 1 else ''}: {', '.join(parts)}; "
                   f"{result.frames} {frames} processed in {result.seconds:.1f} s{rate}{merged}")
    if result.exit_code:
        what = []
        if result.failed:
            what.append(f"{result.failed} of {result.total} {unit}s failed")
        if result.failed_inputs:
            n = len(result.failed_inputs)
            what.append(f"{n} image{'s' if n != 1 else ''} could not be read")
        first = result.failures[0] if result.failures else None
        example = (f"; first: {first['name']}: {first.get('error')}" if first else
                   f"; first: {result.failed_inputs[0]['error']}")
        raise BatchFailedError(f"{' and '.join(what)} (errors in {result.manifest}){example}")
