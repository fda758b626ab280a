"""`segcli` command line: thin Typer commands over the Python API (segcli.pipeline).

Every command parses its options, calls the API and hands results to the writers. Results go
to stdout or files; messages and progress go to stderr. A SegcliError becomes one line
`segcli: error: ...` and its own exit code (SEGCLI_DEBUG=1 shows the traceback instead).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Iterable, Iterator, Optional

import typer

from .commands import bench as bench_cmd
from .commands import vocab as vocab_cmd
from .commands import weights as weights_cmd
from .errors import InputNotFoundError, PromptError, SegcliError, UsageError

app = typer.Typer(
    name="segcli",
    help="Video segmentation from the command line: OMG-Seg in pure PyTorch.\n\n"
    "Examples:\n\n"
    '  segcli vis video.mp4 --vocab "dog,car"\n\n'
    "  segcli vps street.mp4 --dataset coco -o out/\n\n"
    "  segcli vos clip.mp4 --point 120,80 -o out/\n\n"
    '  segcli image photo.jpg --vocab "cat,sofa"',
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(weights_cmd.app, name="weights")
app.add_typer(vocab_cmd.app, name="vocab")
app.command("bench")(bench_cmd.bench)

DEFAULT_WEIGHTS = "omg-seg-convl"
SIZE_PRESETS = {"official": (1280, 736), "hd": (1280, 736), "fast": (960, 544), "small": (640, 384),
                "tiny": (320, 192)}
DEFAULT_DIR_FORMAT = {"vis": "ytvis", "vps": "panoptic", "vss": "panoptic", "vos": "davis", "image": "jsonl"}
_ARGV: list[str] = []  # raw arguments: `vos` reads the order of --object/--frame/--point/--box/--mask


# ---- shared options -------------------------------------------------------------------------
Weights = Annotated[str, typer.Option("--weights", "-w", help="registry name (segcli weights list), a checkpoint "
                                      "file, or a model folder (config.json + weights.safetensors)")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps")]
Precision = Annotated[Optional[str], typer.Option(help="fp32, bf16 or fp16 (default: bf16 on CPU, fp16 on GPU "
                                                       "for the released model; fp32 for model folders)")]
Size = Annotated[Optional[str], typer.Option(help="resize limits WxH (long x short side) or a preset: "
                                                  + ", ".join(f"{k} ({v[0]}x{v[1]})" for k, v in SIZE_PRESETS.items()))]
ClipSize = Annotated[Optional[int], typer.Option(help="frames decoded together (default: the model's)")]
Score = Annotated[float, typer.Option("--score-threshold", help="drop objects whose class probability is lower")]
MaxObjects = Annotated[int, typer.Option(help="at most this many objects (tracks) per video or image")]
Start = Annotated[int, typer.Option(help="first frame to read (0-based)")]
End = Annotated[Optional[int], typer.Option(help="stop before this frame")]
Output = Annotated[Optional[str], typer.Option("--output", "-o", help="file, folder (ends with /) or - for stdout "
                                               "(default: jsonl on stdout)")]
Formats = Annotated[Optional[list[str]], typer.Option("--format", "-f", help="jsonl, ytvis, coco-rle, davis, "
                                                      "panoptic, mask-video, overlay, summary (repeatable)")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress and no notices on stderr")]
Mode = Annotated[str, typer.Option(help="exact (official video-level decisions), online (streaming, flat "
                                   "memory) or auto (exact while it fits the memory budget)")]
Reader = Annotated[str, typer.Option(help="pyav or decord")]
Vocab = Annotated[Optional[str], typer.Option(help='classes, comma separated, synonyms with | : "dog|puppy,car"')]
Stuff = Annotated[Optional[str], typer.Option(help="background (stuff) classes added after --vocab")]
VocabFile = Annotated[Optional[Path], typer.Option(help="one class per line, synonyms with |")]
Dataset = Annotated[Optional[str], typer.Option(help="built-in vocabulary (segcli vocab list): coco, ade, "
                                                "vipseg, cityscapes, ytvis19, ytvis21, demo")]
OpenVocab = Annotated[bool, typer.Option("--open-vocab", help="re-score classes with CLIP mask pooling "
                                         "(FC-CLIP style ensemble; seen = in the training vocabulary)")]
Budget = Annotated[float, typer.Option(help="exact mode keeps mask logits up to this many MB, then goes online")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the backbone (pays a warm-up of tens of "
                                       "seconds per input size; measured no gain on 2-core CPUs)")]
Threads = Annotated[Optional[int], typer.Option(help="torch CPU threads (default: torch's choice)")]


# ---- helpers --------------------------------------------------------------------------------
class Console:
    """stderr messages and progress; silent with -q, progress only on a terminal."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.progress = not quiet and sys.stderr.isatty()

    def notice(self, message: str) -> None:
        if not self.quiet:
            print(f"segcli: {message}", file=sys.stderr, flush=True)

    def track(self, frames: Iterable, total: int | None, label: str) -> Iterator:
        if not self.progress:
            yield from frames
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[fps]:.2f} fps"), TimeRemainingColumn()]
        with Progress(*columns, transient=True) as progress:
            task = progress.add_task(label, total=total, fps=0.0)
            start = time.perf_counter()
            for n, item in enumerate(frames, 1):
                progress.update(task, advance=1, fps=n / max(time.perf_counter() - start, 1e-9))
                yield item


def parse_size(size: str | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if size in SIZE_PRESETS:
        return SIZE_PRESETS[size]
    try:
        w, h = (int(v) for v in size.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        presets = ", ".join(SIZE_PRESETS)
        raise UsageError(f"--size {size!r}: expected WxH such as 1280x736, or one of {presets}") from None
    return (w, h)


def _numbers(text: str, count: int, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise PromptError(f"{option} {text!r}: expected {count} comma-separated numbers")
    return values


def select_vocabulary(vocab, stuff, vocab_file, dataset):
    if vocab is None and vocab_file is None and dataset is None:
        if stuff is not None:
            raise UsageError("--stuff goes with --vocab")
        return None
    return vocab_cmd.select_vocabulary(vocab, stuff, vocab_file, dataset)


def ensure_weights(weights: str, console: Console) -> None:
    """Registry names are fetched on first use when the network is allowed."""
    from . import weights as registry

    if Path(weights).expanduser().exists() or "/" in weights:
        return
    reg = registry.load_registry()
    if weights not in reg.names():
        raise UsageError(f"unknown weights '{weights}': give a registry name ({', '.join(reg.names())}), "
                         "a checkpoint file or a model folder")
    if all(registry.is_present(weights).values()):
        return
    from .weights import hub

    if hub.is_offline():
        registry.resolve(weights)  # raises the one-line "missing ... fetch it with" error
    console.notice(f"weights '{weights}' not found locally: downloading (segcli weights pull {weights})")
    registry.pull(weights, progress=not console.quiet)


def load_segmenter(weights: str, device: str, precision: str | None, vocabulary, console: Console,
                   class_agnostic: bool = False, open_vocab: bool = False, compile: bool = False,
                   threads: int | None = None):
    from .pipeline.engine import Segmenter, resolve_device, resolve_weights

    if threads is not None:
        import torch

        if threads < 1:
            raise UsageError("--threads must be at least 1")
        torch.set_num_threads(threads)
    ensure_weights(weights, console)
    source = resolve_weights(weights)
    if precision is None:
        dev = resolve_device(device)
        is_bundle = Path(weights).expanduser().is_dir()
        precision = "fp32" if is_bundle else ("bf16" if dev.type == "cpu" else "fp16")
    embeddings = None
    vocab = vocabulary or source.vocabulary
    if vocab is None and class_agnostic:
        import torch

        from .vocab.parse import Vocabulary

        vocab = Vocabulary([["object"]], num_things=1)
        embeddings = torch.zeros(1, 1, source.config.backbone.embed_dim)
    if vocab is None:
        from .vocab import datasets

        vocab = datasets.dataset_vocabulary("coco")
        console.notice("no vocabulary given: using --dataset coco")

    def told(hit: bool) -> None:
        console.notice(f"class embeddings for {len(vocab)} classes: "
                       + ("loaded from cache" if hit else "computed with the CLIP text tower and cached"))

    seg = Segmenter.load(weights, device=device, precision=precision, vocabulary=vocab, embeddings=embeddings,
                         on_embeddings=told, compile=compile)
    if open_vocab:
        from .vocab import datasets

        seg.seen = datasets.overlapping(vocab)
    return seg


def default_formats(task: str, output: str | None, formats: list[str] | None) -> list[str]:
    from .io import parse_formats

    names = parse_formats(formats)
    if names:
        return names
    if output is None or output == "-":
        return ["jsonl"]
    if output.endswith(("/", os.sep)) or Path(output).is_dir() or not Path(output).suffix:
        return [DEFAULT_DIR_FORMAT[task]]
    suffix = Path(output).suffix.lower()
    by_suffix = {".jsonl": "jsonl", ".mkv": "mask-video", ".mp4": "overlay", ".txt": "summary"}
    if suffix == ".json":
        return ["ytvis" if task == "vis" else "coco-rle"]
    return [by_suffix.get(suffix, "jsonl")]


def write_results(results: Iterable, writers: list, console: Console, total: int | None, label: str) -> int:
    """Feed the writers on a worker thread (encoding overlaps the model); commit them at the end,
    or abort them all on any error so that no partial file replaces earlier output."""
    from .pipeline.prefetch import BackgroundWriters

    sink = BackgroundWriters(writers, depth=4)
    count = 0
    try:
        for frame in console.track(results, total, label):
            sink.write(frame)
            count += 1
    except BaseException:
        sink.abort()
        raise
    sink.close()
    return count


# ---- video commands -------------------------------------------------------------------------
def run_video(task: str, video: str, *, weights, device, precision, size, clip_size, score_threshold,
              max_objects, start, end, output, formats, quiet, mode, reader, vocab, stuff, vocab_file, dataset,
              open_vocab, exact_budget, compile=False, threads=None, objects=None, label_objects=False) -> None:
    from .io import open_writers
    from .pipeline.engine import resolve_weights
    from .pipeline.prefetch import prefetch
    from .pipeline.reader import open_source
    from .pipeline.video import VideoOptions, segment_video
    from .results import VideoInfo

    console = Console(quiet)
    names = default_formats("vos" if task == "vos" else task, output, formats)
    scale = parse_size(size)
    vocabulary = select_vocabulary(vocab, stuff, vocab_file, dataset)
    source = open_source(video, reader=reader, start=start, end=end)
    frames = prefetch(source, depth=4)  # decode ahead on a thread, overlapping the model
    try:
        info_src = source.info
        if task == "vos" and objects is not None:
            objects = _validate_objects(objects, info_src, start)
        ensure_weights(weights, console)
        model_vocab = vocabulary or resolve_weights(weights).vocabulary
        agnostic = task == "vos" and vocabulary is None
        classes = [] if agnostic else (model_vocab.names if model_vocab else [])
        info = VideoInfo(info_src.name, info_src.width, info_src.height, info_src.fps, info_src.num_frames,
                         classes, model_vocab.num_things if (model_vocab and not agnostic) else 0, task)
        cat_ids = model_vocab.category_ids if (model_vocab and not agnostic) else None
        writers = open_writers(names, output, info, category_ids=cat_ids)
        needs_image = any(w.needs_image for w in writers)
        seg = load_segmenter(weights, device, precision, model_vocab if not agnostic else None, console,
                             class_agnostic=agnostic, open_vocab=open_vocab, compile=compile, threads=threads)
        opts = VideoOptions(task=task, mode=mode, scale=scale, clip_size=clip_size, score_threshold=score_threshold,
                            max_objects=max_objects, open_vocab=open_vocab, keep_images=needs_image,
                            exact_budget_mb=exact_budget, objects=objects or [], label_objects=label_objects)
        results = segment_video(seg, frames, opts, notice=console.notice)
        if task == "vos":
            results = _check_prompt_frames(results, opts.objects)
        write_results(results, writers, console, info_src.num_frames, task)
    finally:
        frames.close()
        source.close()


def _check_prompt_frames(results, objects):
    frames = {o.frame for o in objects}
    last = -1
    for r in results:
        last = r.index
        yield r
    late = sorted(f for f in frames if f > last)
    if late:
        raise PromptError(f"prompt frame {late[0]} is beyond the end of the video (last frame {last})")


@app.command()
def vis(
    video: Annotated[str, typer.Argument(help="video file, image folder, or - for stdin")],
    vocab: Vocab = None, stuff: Stuff = None, vocab_file: VocabFile = None, dataset: Dataset = None,
    weights: Weights = DEFAULT_WEIGHTS, device: Device = "auto", precision: Precision = None, size: Size = None,
    clip_size: ClipSize = None, score_threshold: Score = 0.3, max_objects: MaxObjects = 100, start: Start = 0,
    end: End = None, output: Output = None, format: Formats = None, quiet: Quiet = False, mode: Mode = "auto",
    reader: Reader = "pyav", open_vocab: OpenVocab = False, exact_budget: Budget = 2048.0, compile: Compile = False,
    threads: Threads = None,
) -> None:
    """Video instance segmentation: tracked objects of the vocabulary.

    Examples:

      segcli vis video.mp4 --vocab "dog,car"

      segcli vis cam.mp4 --vocab person -f jsonl -o - | jq '.objects | length'

      segcli vis clip.mp4 --dataset ytvis21 -f ytvis -f overlay -o out/
    """
    run_video("vis", video, weights=weights, device=device, precision=precision, size=size, clip_size=clip_size,
              score_threshold=score_threshold, max_objects=max_objects, start=start, end=end, output=output,
              formats=format, quiet=quiet, mode=mode, reader=reader, vocab=vocab, stuff=stuff,
              vocab_file=vocab_file, dataset=dataset, open_vocab=open_vocab, exact_budget=exact_budget, compile=compile,
              threads=threads)


@app.command()
def vps(
    video: Annotated[str, typer.Argument(help="video file, image folder, or - for stdin")],
    semantic: Annotated[bool, typer.Option("--semantic", help="video semantic segmentation (one region per "
                                           "class; Mask2Former rule, an extension of OMG-Seg)")] = False,
    vocab: Vocab = None, stuff: Stuff = None, vocab_file: VocabFile = None, dataset: Dataset = None,
    weights: Weights = DEFAULT_WEIGHTS, device: Device = "auto", precision: Precision = None, size: Size = None,
    clip_size: ClipSize = None, score_threshold: Score = 0.0, max_objects: MaxObjects = 100, start: Start = 0,
    end: End = None, output: Output = None, format: Formats = None, quiet: Quiet = False, mode: Mode = "auto",
    reader: Reader = "pyav", open_vocab: OpenVocab = False, exact_budget: Budget = 2048.0, compile: Compile = False,
    threads: Threads = None,
) -> None:
    """Video panoptic segmentation (things with track ids + stuff), or semantic with --semantic.

    Examples:

      segcli vps street.mp4 --dataset coco -o out/

      segcli vps street.mp4 --dataset vipseg --semantic -f panoptic -o out/
    """
    run_video("vss" if semantic else "vps", video, weights=weights, device=device, precision=precision, size=size,
              clip_size=clip_size, score_threshold=score_threshold, max_objects=max_objects, start=start, end=end,
              output=output, formats=format, quiet=quiet, mode=mode, reader=reader, vocab=vocab, stuff=stuff,
              vocab_file=vocab_file, dataset=dataset, open_vocab=open_vocab, exact_budget=exact_budget, compile=compile,
              threads=threads)


@app.command()
def vos(
    video: Annotated[str, typer.Argument(help="video file, image folder, or - for stdin")],
    point: Annotated[Optional[list[str]], typer.Option(help="X,Y click on the object (repeatable). Negative "
                     "points (X,Y:neg) are not supported: OMG-Seg has no negative-click input")] = None,
    box: Annotated[Optional[list[str]], typer.Option(help="X1,Y1,X2,Y2 box around the object (repeatable)")] = None,
    mask: Annotated[Optional[list[Path]], typer.Option(help="indexed PNG (DAVIS style): one object per index")] = None,
    object: Annotated[Optional[list[int]], typer.Option("--object", help="the prompts after it belong to "
                      "object N (default 1)")] = None,
    frame: Annotated[Optional[list[int]], typer.Option("--frame", help="the prompts after it are on frame K "
                     "(default 0); prompts on a later frame re-match that object from there on")] = None,
    vocab: Vocab = None, stuff: Stuff = None, vocab_file: VocabFile = None, dataset: Dataset = None,
    weights: Weights = DEFAULT_WEIGHTS, device: Device = "auto", precision: Precision = None, size: Size = None,
    clip_size: ClipSize = None, start: Start = 0, end: End = None, output: Output = None, format: Formats = None,
    quiet: Quiet = False, mode: Mode = "auto", reader: Reader = "pyav", exact_budget: Budget = 2048.0,
    compile: Compile = False, threads: Threads = None,
) -> None:
    """Video object segmentation from prompts on a frame: clicks, boxes or a first-frame mask.

    Examples:

      segcli vos clip.mp4 --point 120,80 -o out/

      segcli vos clip.mp4 --object 1 --box 40,30,200,180 --object 2 --point 300,90 -o out/

      segcli vos clip.mp4 --mask first_frame.png -o out/

      segcli vos clip.mp4 --point 120,80 --frame 40 --point 150,95 -o out/   # correction on frame 40
    """
    objects = parse_vos_prompts(_ARGV or sys.argv[1:], point, box, mask)
    labelled = any(v is not None for v in (vocab, vocab_file, dataset))
    run_video("vos", video, weights=weights, device=device, precision=precision, size=size, clip_size=clip_size,
              score_threshold=0.0, max_objects=255, start=start, end=end, output=output, formats=format,
              quiet=quiet, mode=mode, reader=reader, vocab=vocab, stuff=stuff, vocab_file=vocab_file,
              dataset=dataset, open_vocab=False, exact_budget=exact_budget, compile=compile, threads=threads,
              objects=objects, label_objects=labelled)


def parse_vos_prompts(argv: list[str], points, boxes, masks) -> list:
    """Walk the raw arguments in order: --object N and --frame K apply to the prompts after them."""
    from .pipeline.video import ObjectPrompt

    current_obj, current_frame = 1, 0
    prompts: dict[tuple[int, int], ObjectPrompt] = {}
    mask_files: list[tuple[str, int]] = []

    def target() -> ObjectPrompt:
        key = (current_obj, current_frame)
        if key not in prompts:
            prompts[key] = ObjectPrompt(current_obj, current_frame)
        return prompts[key]

    it = iter(argv)
    dangling = None  # a --object/--frame that no prompt follows yet
    for tok in it:
        name, _, inline = tok.partition("=")
        if name not in ("--object", "--frame", "--point", "--box", "--mask"):
            continue
        value = inline or next(it, "")
        if name in ("--object", "--frame"):
            dangling = f"{name} {value}"
        else:
            dangling = None
        if name == "--object":
            current_obj = _int(value, "--object", minimum=1)
        elif name == "--frame":
            current_frame = _int(value, "--frame", minimum=0)
        elif name == "--point":
            if value.lower().endswith(":neg"):
                raise PromptError(f"--point {value}: negative points are not supported by OMG-Seg "
                                  "(it takes positive clicks and boxes only)")
            target().points.append(_numbers(value.removesuffix(":pos"), 2, "--point"))
        elif name == "--box":
            x1, y1, x2, y2 = _numbers(value, 4, "--box")
            if x2 <= x1 or y2 <= y1:
                raise PromptError(f"--box {value}: expected X1,Y1,X2,Y2 with X2 > X1 and Y2 > Y1")
            target().boxes.append((x1, y1, x2, y2))
        else:
            mask_files.append((value, current_frame))
    if dangling:
        raise UsageError(f"{dangling} applies to the prompts after it, and none follows")
    # prompts given through the API without argv (e.g. CliRunner) fall back to object 1, frame 0
    if not prompts and not mask_files and (points or boxes or masks):
        obj = ObjectPrompt(1, 0)
        for p in points or []:
            if p.lower().endswith(":neg"):
                raise PromptError(f"--point {p}: negative points are not supported by OMG-Seg")
            obj.points.append(_numbers(p, 2, "--point"))
        for b in boxes or []:
            obj.boxes.append(_numbers(b, 4, "--box"))
        prompts[(1, 0)] = obj
        mask_files = [(str(m), 0) for m in masks or []]
    out = [p for p in prompts.values() if p.points or p.boxes]
    for path, frame_index in mask_files:
        out.extend(_mask_objects(path, frame_index))
    if not out:
        raise PromptError("vos needs a prompt: --point X,Y, --box X1,Y1,X2,Y2 or --mask FILE")
    return out


def _int(value: str, option: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{option} {value!r}: expected an integer") from None
    if number < minimum:
        raise UsageError(f"{option} {value}: must be >= {minimum}")
    return number


def _mask_objects(path: str, frame_index: int) -> list:
    import numpy as np
    from PIL import Image

    from .pipeline.video import ObjectPrompt

    if not Path(path).is_file():
        raise InputNotFoundError(f"no such mask file: {path}")
    try:
        with Image.open(path) as im:
            arr = np.array(im if im.mode in ("P", "L", "I", "I;16", "1") else im.convert("L"))
    except Exception:
        raise PromptError(f"cannot read mask {path}: expected an indexed PNG (DAVIS style)") from None
    ids = [int(v) for v in np.unique(arr) if v != 0]
    if not ids:
        raise PromptError(f"mask {path} holds no object (all pixels are 0)")
    return [ObjectPrompt(oid, frame_index, mask=arr == oid) for oid in ids]


def _validate_objects(objects: list, info, start: int) -> list:
    from .pipeline.prompts import validate_boxes, validate_mask, validate_points

    for o in objects:
        if info.num_frames is not None and o.frame - start >= info.num_frames:
            raise PromptError(f"prompt frame {o.frame} is beyond the end of the video "
                              f"({info.num_frames} frames from frame {start})")
        if o.frame < start:
            raise PromptError(f"prompt frame {o.frame} is before --start {start}")
        if o.points:
            validate_points(o.points, info.width, info.height)
        if o.boxes:
            validate_boxes(o.boxes, info.width, info.height)
        if o.mask is not None:
            validate_mask(o.mask, info.width, info.height)
    return objects


# ---- images ---------------------------------------------------------------------------------
@app.command()
def image(
    paths: Annotated[list[str], typer.Argument(help="image files or folders of images")],
    task: Annotated[str, typer.Option(help="panoptic, instance or semantic")] = "panoptic",
    point: Annotated[Optional[list[str]], typer.Option(help="X,Y click: SAM-like mask of the object under it "
                                                       "(repeatable; one object per prompt)")] = None,
    box: Annotated[Optional[list[str]], typer.Option(help="X1,Y1,X2,Y2 box prompt (repeatable)")] = None,
    vocab: Vocab = None, stuff: Stuff = None, vocab_file: VocabFile = None, dataset: Dataset = None,
    weights: Weights = DEFAULT_WEIGHTS, device: Device = "auto", precision: Precision = None, size: Size = None,
    score_threshold: Annotated[Optional[float], typer.Option(
        "--score-threshold", help="drop objects whose class probability is lower (default: 0.3 for instance, "
        "0 for panoptic)")] = None,
    max_objects: MaxObjects = 100, output: Output = None, format: Formats = None,
    quiet: Quiet = False, open_vocab: OpenVocab = False, threads: Threads = None,
) -> None:
    """Single images with the same model: panoptic/instance/semantic, or masks for point/box prompts.

    Examples:

      segcli image photo.jpg --vocab "cat,sofa"

      segcli image photo.jpg --point 320,240 -f coco-rle -o masks.json

      segcli image photos/ --dataset coco -f panoptic -o out/
    """
    from .io import open_writers
    from .pipeline.engine import resolve_weights
    from .pipeline.image import ImageOptions, segment_image
    from .pipeline.reader import open_source
    from .results import VideoInfo

    console = Console(quiet)
    names = default_formats("image", output, format)
    scale = parse_size(size)
    vocabulary = select_vocabulary(vocab, stuff, vocab_file, dataset)
    objects = {}
    for i, p in enumerate(point or [], 1):
        if p.lower().endswith(":neg"):
            raise PromptError(f"--point {p}: negative points are not supported by OMG-Seg")
        objects[i] = ([_numbers(p, 2, "--point")], [])
    for j, b in enumerate(box or [], len(objects) + 1):
        objects[j] = ([], [_numbers(b, 4, "--box")])
    sources = [open_source(p) for p in paths]
    try:
        first = sources[0].info
        prompted = bool(objects)
        ensure_weights(weights, console)
        model_vocab = vocabulary or resolve_weights(weights).vocabulary
        agnostic = prompted and vocabulary is None
        name = first.name if len(sources) == 1 else "images"
        info = VideoInfo(name, first.width, first.height, None, None,
                         [] if agnostic else (model_vocab.names if model_vocab else []),
                         0 if agnostic or not model_vocab else model_vocab.num_things, "image")
        writers = open_writers(names, output, info,
                               category_ids=None if agnostic or not model_vocab else model_vocab.category_ids)
        seg = load_segmenter(weights, device, precision, None if agnostic else model_vocab, console,
                             class_agnostic=agnostic, open_vocab=open_vocab, threads=threads)
        if score_threshold is None:
            score_threshold = 0.3 if task == "instance" else 0.0
        opts = ImageOptions(task=task, scale=scale, score_threshold=score_threshold, max_objects=max_objects,
                            open_vocab=open_vocab, keep_image=any(w.needs_image for w in writers),
                            objects=objects, label_objects=prompted and not agnostic)

        def results():
            index = 0
            for src in sources:
                for fr in src:
                    if prompted:
                        _check_image_prompts(objects, fr.rgb.shape[1], fr.rgb.shape[0])
                    fr.index = index
                    yield segment_image(seg, fr, opts)
                    index += 1

        write_results(results(), writers, console, None, "image")
    finally:
        for s in sources:
            s.close()


def _check_image_prompts(objects: dict, width: int, height: int) -> None:
    from .pipeline.prompts import validate_boxes, validate_points

    for points, boxes in objects.values():
        if points:
            validate_points(points, width, height)
        if boxes:
            validate_boxes(boxes, width, height)


# ---- info -----------------------------------------------------------------------------------
@app.command()
def info() -> None:
    """Versions, devices and which weights are on this machine."""
    import importlib.metadata as md

    import torch

    from . import __version__
    from . import weights as registry

    print(f"segcli {__version__}")
    for pkg in ("torch", "torchvision", "open_clip_torch", "av", "opencv-python-headless", "numpy",
                "pycocotools", "safetensors", "huggingface_hub"):
        try:
            print(f"  {pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            print(f"  {pkg} (not installed)")
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no"
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    print(f"devices: cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads), cuda: {cuda}, "
          f"mps: {'yes' if mps else 'no'}")
    from .weights import hub

    print(f"SEGCLI_HOME: {hub.segcli_home()}")
    reg = registry.load_registry()
    print("weights:")
    for name in reg.models:
        present = registry.is_present(name)
        state = "found" if all(present.values()) else "missing " + ", ".join(k for k, v in present.items() if not v)
        print(f"  {name}: {state}")


# ---- entry point ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    # freed tensors stay in the heap: no page faults for the next buffer of that size (segcli/runtime.py)
    from .runtime import keep_freed_memory

    keep_freed_memory()
    try:
        app(args=_ARGV, prog_name="segcli", standalone_mode=False)
    except SegcliError as exc:
        if os.environ.get("SEGCLI_DEBUG"):
            raise
        print(f"segcli: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("segcli: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # the reader of stdout went away (`segcli vis ... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        if os.environ.get("SEGCLI_DEBUG"):
            raise
        print(f"segcli: internal error: {type(exc).__name__}: {exc} (SEGCLI_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        sys.exit(70)
