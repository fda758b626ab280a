"""`segcli` command line: parse, validate, call the Python API (segcli.api), report.

Every command checks all of its options before loading weights, embedding text or touching the
network. Results go to stdout or files; messages and progress go to stderr. A SegcliError
becomes one line `segcli: error: ...` and its own exit code (SEGCLI_DEBUG=1 shows the traceback
instead); parser errors exit 2, SIGINT 130, SIGTERM 143, a closed stdout pipe 141.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core

from .commands import app as app_cmd
from .commands import batch as batch_cmd
from .commands import bench as bench_cmd
from .commands import vocab as vocab_cmd
from .commands import weights as weights_cmd
from .errors import InputNotFoundError, Interrupted, OutputError, PromptError, SegcliError, UsageError

EXAMPLES = ("Examples:\n\n"
            '  segcli vis video.mp4 --vocab "dog,car"\n\n'
            "  segcli vps street.mp4 --dataset coco -o out/\n\n"
            "  segcli vos clip.mp4 --point 120,80 -o out/\n\n"
            '  segcli image photo.jpg --vocab "cat,sofa"')


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"segcli {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="segcli",
    help="Video segmentation from the command line: OMG-Seg in pure PyTorch.\n\n" + EXAMPLES,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(weights_cmd.app, name="weights")
app.add_typer(vocab_cmd.app, name="vocab")
app.command("bench")(bench_cmd.bench)
app.command("batch")(batch_cmd.batch)
app.command("app")(app_cmd.app)


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context, version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="print the version and exit")] = False) -> None:
    if ctx.invoked_subcommand is None:
        raise UsageError("missing command (segcli --help lists them)")


DEFAULT_WEIGHTS = "omg-seg-convl"
SIZE_PRESETS = {"official": (1280, 736), "hd": (1280, 736), "fast": (960, 544), "small": (640, 384),
                "tiny": (320, 192)}


class PromptOrderCommand(typer.core.TyperCommand):
    """Keeps the arguments as given, so `vos` can read the order of --object/--frame/--point/--box/--mask
    (click groups each option's values, losing their interleaving)."""

    def parse_args(self, ctx, args):
        ctx.meta["segcli.args"] = list(args)
        return super().parse_args(ctx, args)


# ---- shared options -------------------------------------------------------------------------
Video = Annotated[str, typer.Argument(metavar="VIDEO", help="video file, image folder, URL (rtsp://, http://, "
                                      "udp://, tcp://, .m3u8), /dev/videoN, or - for stdin")]
Weights = Annotated[str, typer.Option("--weights", "-w", metavar="NAME|FILE|DIR",
                                      help="registry name (segcli weights list), a checkpoint file, or a model "
                                      "folder (config.json + weights.safetensors)")]
Device = Annotated[str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps")]
Precision = Annotated[Optional[str], typer.Option(metavar="P", help="fp32, bf16 or fp16 (default: bf16 on CPU, "
                                                  "fp16 on GPU for the released model; fp32 for model folders)")]
Size = Annotated[Optional[str], typer.Option(metavar="WxH", help="resize limits WxH (long x short side) or a "
                                             "preset: " + ", ".join(f"{k} ({v[0]}x{v[1]})"
                                                                     for k, v in SIZE_PRESETS.items()))]
ClipSize = Annotated[Optional[int], typer.Option(metavar="N", help="frames decoded together (default: the model's)")]
Score = Annotated[float, typer.Option("--score-threshold", metavar="S",
                                      help="drop objects whose class probability (class_score in the output) is "
                                      "lower; the reported score is class probability x mask quality, as "
                                      "official")]
MaxObjects = Annotated[int, typer.Option(metavar="N", help="at most this many objects (tracks) per video or image")]
Start = Annotated[int, typer.Option(metavar="K", help="first source frame to read (0-based)")]
End = Annotated[Optional[int], typer.Option(metavar="K", help="stop before this source frame")]
Output = Annotated[Optional[str], typer.Option("--output", "-o", metavar="PATH",
                                               help="file, folder (ends with /) or - for stdout (default: jsonl "
                                               "on stdout)")]
Formats = Annotated[Optional[list[str]], typer.Option("--format", "-f", metavar="FORMAT",
                                                      help="jsonl, ytvis, coco-rle, davis, panoptic, mask-video, "
                                                      "overlay, summary (repeatable)")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress and no notices on stderr")]
Mode = Annotated[str, typer.Option(metavar="MODE", help="exact (official video-level decisions), online "
                                   "(streaming, flat memory) or auto (exact while it fits the memory budget; "
                                   "online from the start for live sources)")]
Reader = Annotated[str, typer.Option(metavar="NAME", help="pyav, decord or auto")]
Vocab = Annotated[Optional[str], typer.Option(metavar="CLASSES",
                                              help='classes, comma separated, synonyms with | : "dog|puppy,car"')]
Stuff = Annotated[Optional[str], typer.Option(metavar="CLASSES", help="background (stuff) classes added after --vocab")]
VocabFile = Annotated[Optional[Path], typer.Option(metavar="FILE", help="one class per line, synonyms with |")]
Dataset = Annotated[Optional[str], typer.Option(metavar="NAME", help="built-in vocabulary (segcli vocab list): "
                                                "coco, ade, vipseg, cityscapes, ytvis19, ytvis21, demo")]
VocabEmbeddings = Annotated[Optional[Path], typer.Option(metavar="FILE", help="class embeddings written by "
                                                         "segcli vocab embed (no text tower needed)")]
OpenVocab = Annotated[bool, typer.Option("--open-vocab", help="re-score classes with CLIP mask pooling "
                                         "(FC-CLIP style ensemble; seen = in the training vocabulary)")]
Budget = Annotated[float, typer.Option(metavar="MB", help="exact mode keeps mask logits up to this many MB, "
                                       "then goes online")]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the backbone (pays a warm-up of tens of "
                                       "seconds per input size; measured no gain on 2-core CPUs)")]
Threads = Annotated[Optional[int], typer.Option(metavar="N", help="torch CPU threads (default: torch's choice)")]
SourceFormat = Annotated[Optional[str], typer.Option(metavar="FMT", help="FFmpeg input format (demuxer or device), "
                                                     "e.g. mpegts, v4l2, lavfi")]
SourceOption = Annotated[Optional[list[str]], typer.Option(metavar="KEY=VALUE", help="FFmpeg demuxer/protocol "
                                                           "option (repeatable), e.g. analyzeduration=200000")]
MaxFrames = Annotated[Optional[int], typer.Option(metavar="N", help="stop after N processed frames (live sources)")]
Duration = Annotated[Optional[float], typer.Option(metavar="S", help="stop after S seconds of source time")]
Every = Annotated[int, typer.Option(metavar="N", help="process every Nth source frame (outputs keep source frame "
                                    "numbers)")]
Fps = Annotated[Optional[float], typer.Option("--fps", metavar="F", help="process at most F frames per second of "
                                              "source time")]
Timeout = Annotated[Optional[float], typer.Option(metavar="S", help="network/device sources: seconds to open and "
                                                  "of silence before the stream counts as dropped (default 5 / 15)")]
DatasetJson = Annotated[Optional[Path], typer.Option(metavar="FILE", help="ground-truth/dataset JSON (COCO, "
                                                     "COCO-panoptic or YouTube-VIS): image ids, video ids and "
                                                     "category ids are taken from it")]
VideoId = Annotated[Optional[int], typer.Option(metavar="N", help="YouTube-VIS video_id of this video (default: "
                                                "from --dataset-json, else 1)")]
DavisMax = Annotated[Optional[int], typer.Option(metavar="N", help="davis output: at most N objects (the DAVIS "
                                                 "unsupervised evaluator takes 20), indices 1..N by first "
                                                 "appearance")]


# ---- stderr: notices, progress, the closing line ------------------------------------------
class Console:
    """Messages and progress on stderr: silent with -q; the bar whenever stderr is a terminal,
    whatever stdout is (it never writes to stdout)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.show_progress = not quiet and sys.stderr is not None and sys.stderr.isatty()
        self._progress = None

    def notice(self, message: str) -> None:
        if self.quiet:
            return
        if self._progress is not None:
            self._progress.console.print(f"segcli: {message}", markup=False, highlight=False)
        else:
            print(f"segcli: {message}", file=sys.stderr, flush=True)

    # the api.Progress protocol
    def start(self, total: int | None, label: str) -> None:
        if not self.show_progress:
            return
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[fps]:.2f} fps"), TimeRemainingColumn()]
        self._progress = Progress(*columns, console=RichConsole(file=sys.stderr), transient=True,
                                  redirect_stdout=False, redirect_stderr=False)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total, fps=0.0)
        self._t0 = time.perf_counter()
        self._done = 0

    def advance(self, n: int = 1) -> None:
        if self._progress is None:
            return
        self._done += n
        self._progress.update(self._task, advance=n, fps=self._done / max(time.perf_counter() - self._t0, 1e-9))

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def written(self, report, unit: str = "frame") -> None:
        outputs = [o for o in report.outputs if o != "-"]
        where = ", ".join(outputs) if outputs else ""
        if "-" in report.outputs:
            where = (where + " and " if where else "") + "stdout"
        n = report.frames
        self.notice(f"{n} {unit}{'' if n == 1 else 's'} in {report.seconds:.1f} s: wrote {where or 'nothing'}")


# ---- parsing helpers ------------------------------------------------------------------------
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
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise PromptError(f"{option} {text!r}: expected {count} comma-separated numbers")
    return values


def _point(text: str) -> tuple[float, ...]:
    if text.lower().endswith(":neg"):
        raise PromptError(f"--point {text}: negative points are not supported by OMG-Seg "
                          "(it takes positive clicks and boxes only)")
    return _numbers(text.removesuffix(":pos"), 2, "--point")


def _box(text: str) -> tuple[float, ...]:
    x1, y1, x2, y2 = _numbers(text, 4, "--box")
    if x2 <= x1 or y2 <= y1:
        raise PromptError(f"--box {text}: expected X1,Y1,X2,Y2 with X2 > X1 and Y2 > Y1")
    return (x1, y1, x2, y2)


def select_vocabulary(vocab, stuff, vocab_file, dataset, embeddings_file=None, embed_dim=None):
    """(vocabulary or None, embeddings or None) from the vocabulary options."""
    if embeddings_file is not None:
        if any(v is not None for v in (vocab, stuff, vocab_file, dataset)):
            raise UsageError("--vocab-embeddings replaces --vocab/--vocab-file/--dataset: give one")
        if not Path(embeddings_file).is_file():
            raise InputNotFoundError(f"no such embeddings file: {embeddings_file}")
        from .vocab import load_embeddings

        return load_embeddings(embeddings_file, embed_dim=embed_dim)
    if vocab is None and vocab_file is None and dataset is None:
        if stuff is not None:
            raise UsageError("--stuff goes with --vocab")
        return None, None
    return vocab_cmd.select_vocabulary(vocab, stuff, vocab_file, dataset), None


def _embed_dim(weights: str, embeddings_file) -> int | None:
    if embeddings_file is None:
        return None
    from .pipeline.engine import model_config_for

    return model_config_for(weights).backbone.embed_dim


def check_common(*, weights: str, device: str, precision: str | None, threads: int | None) -> None:
    """Options that need no input, no model and no torch, checked first (a bad value fails at once)."""
    from .pipeline.options import check_device_name, check_precision

    check_precision(precision)
    check_device_name(device)
    if precision == "fp16" and device == "cpu":
        raise UsageError("--precision fp16 needs a GPU; use bf16 on CPU")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads}: must be at least 1")
    from .model.folder import check_weights_source

    check_weights_source(weights)


def check_device(device: str, precision: str | None) -> None:
    """Whether the device is there (needs torch: after every other check)."""
    from .pipeline.engine import resolve_device

    dev = resolve_device(device)
    if precision == "fp16" and dev.type == "cpu":
        raise UsageError("--precision fp16 needs a GPU; use bf16 on CPU")


def _check_stdout(output: str | None, names: list[str]) -> None:
    if output in (None, "-"):
        import io

        ok = sys.stdout is not None
        try:
            if ok:
                os.fstat(sys.stdout.fileno())
        except io.UnsupportedOperation:  # an in-memory stdout (tests, notebooks)
            pass
        except (OSError, ValueError):
            ok = False
        if not ok:
            raise OutputError("stdout is closed: give -o FILE or -o DIR/")


def _open_options(reader, start, end, source_format, source_option, max_frames, duration, every, fps, timeout,
                  console) -> dict:
    options = {}
    for item in source_option or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"--source-option {item!r}: expected KEY=VALUE")
        options[key] = value
    if max_frames is not None and max_frames < 1:
        raise UsageError(f"--max-frames {max_frames}: must be at least 1")
    if duration is not None and not (duration > 0 and math.isfinite(duration)):
        raise UsageError(f"--duration {duration}: must be a positive number of seconds")
    if every < 1:
        raise UsageError(f"--every {every}: must be at least 1")
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise UsageError(f"--fps {fps}: must be a positive number")
    if every > 1 and fps is not None:
        raise UsageError("--every and --fps: give one of them")
    if timeout is not None and not timeout > 0:
        raise UsageError(f"--timeout {timeout}: must be a positive number of seconds")
    out = dict(reader=reader, start=start, end=end, every=every, fps=fps, max_frames=max_frames, duration=duration,
               notice=console.notice)
    if source_format is not None:
        out["source_format"] = source_format
    if options:
        out["source_options"] = options
    if timeout is not None:
        out["timeout"] = timeout
    return out


def _writer_options(dataset_json, video_id, davis_max_objects) -> dict:
    if dataset_json is not None and not Path(dataset_json).is_file():
        raise InputNotFoundError(f"no such dataset JSON: {dataset_json}")
    if davis_max_objects is not None and not 1 <= davis_max_objects <= 255:
        raise UsageError(f"--davis-max-objects {davis_max_objects}: must be from 1 to 255")
    out = {}
    if dataset_json is not None:
        out["dataset"] = str(dataset_json)
    if video_id is not None:
        out["video_id"] = video_id
    if davis_max_objects is not None:
        out["davis_max_objects"] = davis_max_objects
    return out


def load_model(weights, device, precision, vocabulary, embeddings, console, *, class_agnostic=False,
               open_vocab=False, compile=False, threads=None):
    from .pipeline.engine import Segmenter

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return Segmenter.load(weights, device=device, precision=precision, vocabulary=vocabulary, embeddings=embeddings,
                          compile=compile, class_agnostic=class_agnostic, open_vocab=open_vocab,
                          notice=console.notice)


# ---- video commands -------------------------------------------------------------------------
def run_video(task: str, video: str, *, weights, device, precision, size, clip_size, score_threshold,
              max_objects, start, end, output, format, quiet, mode, reader, vocab, stuff, vocab_file, dataset,
              open_vocab, exact_budget, compile=False, threads=None, vocab_embeddings=None, objects=(),
              label_objects=False, dataset_json=None, video_id=None, davis_max_objects=None,
              mask_files=(), source_format=None, source_option=None, max_frames=None, duration=None, every=1,
              fps=None, timeout=None) -> None:
    from .io import default_formats
    from .pipeline.options import VideoOptions, validate_options

    console = Console(quiet)
    check_common(weights=weights, device=device, precision=precision, threads=threads)
    if start < 0:
        raise UsageError(f"--start {start}: must be >= 0")
    if end is not None and end <= start:
        raise UsageError(f"--end {end}: must be greater than --start {start}")
    opts = validate_options(VideoOptions(task=task, mode=mode, scale=parse_size(size), clip_size=clip_size,
                                         score_threshold=score_threshold, max_objects=max_objects,
                                         open_vocab=open_vocab, exact_budget_mb=exact_budget,
                                         label_objects=label_objects))
    open_options = _open_options(reader, start, end, source_format, source_option, max_frames, duration, every, fps,
                                 timeout, console)
    writer_options = _writer_options(dataset_json, video_id, davis_max_objects)
    names = default_formats(task, output, format)
    _check_stdout(output, names)
    vocabulary, embeddings = select_vocabulary(vocab, stuff, vocab_file, dataset, vocab_embeddings,
                                               _embed_dim(weights, vocab_embeddings))
    agnostic = task == "vos" and vocabulary is None
    if agnostic and open_vocab:
        raise UsageError("--open-vocab needs a vocabulary")
    from . import api

    planned = api.planned_vocabulary(weights, vocabulary, agnostic)
    job = api.VideoJob(video, opts, vocabulary=planned, output=output, formats=names, prompts=objects,
                       open_options=open_options, writer_options=writer_options,
                       inputs=[str(m) for m in mask_files], notice=console.notice)
    try:
        check_device(device, precision)  # torch from here on
        seg = load_model(weights, device, precision, planned if not agnostic else None, embeddings, console,
                         class_agnostic=agnostic, open_vocab=open_vocab, compile=compile, threads=threads)
    except BaseException:
        from .io import abort_writers

        abort_writers(job.writers)
        job.close()
        raise
    try:
        report = job.run(seg, notice=console.notice, progress=console)
    except SegcliError:
        report = getattr(job, "report", None)
        if report is not None and report.stopped:
            console.written(report)
        raise
    console.written(report)


@app.command(no_args_is_help=False)
def vis(
    video: Video,
    vocab: Vocab = None, stuff: Stuff = None, vocab_file: VocabFile = None, dataset: Dataset = None,
    vocab_embeddings: VocabEmbeddings = None,
    weights: Weights = DEFAULT_WEIGHTS, device: Device = "auto", precision: Precision = None, size: Size = None,
    clip_size: ClipSize = None, score_threshold: Score = 0.3, max_objects: MaxObjects = 100, start: Start = 0,
    end: End = None, output: Output = None, format: Formats = None, quiet: Quiet = False, mode: Mode = "auto",
    reader: Reader = "pyav", open_vocab: OpenVocab = False, exact_budget: Budget = 2048.0, compile: Compile = False,
    threads: Threads = None, dataset_json: DatasetJson = None, video_id: VideoId = None,
    davis_max_objects: DavisMax = None,
    source_format: SourceFormat = None, source_option: SourceOption = None, max_frames: MaxFrames = None,
    duration: Duration = None, every: Every = 1, fps: Fps = None, timeout: Timeout = None,
) -> None:
    """Video instance segmentation: tracked objects of the vocabulary.

    Examples:

      segcli vis video.mp4 --vocab "dog,car"

      segcli vis cam.mp4 --vocab person -f jsonl -o - | jq '.objects | length'

      segcli vis clip.mp4 --dataset ytvis21 -f ytvis -f overlay -o out/

      segcli vis rtsp://camera/stream --vocab person --max-frames 300 -o out/
    """
    params = dict(locals())
    run_video("vis", params.pop("video"), **params)


@app.command()
def vps(
    video: Video,
    semantic: Annotated[bool, typer.Option("--semantic", help="video semantic segmentation (one region per "
                                           "class; Mask2Former rule, an extension of OMG-Seg)")] = False,
    vocab: Vocab = None, stuff: Stuff = None, vocab_file: VocabFile = None, dataset: Dataset = None,
    vocab_embeddings: VocabEmbeddings = None,
    weights: Weights = DEFAULT_WEIGHTS, device: Device = "auto", precision: Precision = None, size: Size = None,
    clip_size: ClipSize = None, score_threshold: Score = 0.0, max_objects: MaxObjects = 100, start: Start = 0,
    end: End = None, output: Output = None, format: Formats = None, quiet: Quiet = False, mode: Mode = "auto",
    reader: Reader = "pyav", open_vocab: OpenVocab = False, exact_budget: Budget = 2048.0, compile: Compile = False,
    threads: Threads = None, dataset_json: DatasetJson = None, davis_max_objects: DavisMax = None,
    source_format: SourceFormat = None, source_option: SourceOption = None, max_frames: MaxFrames = None,
    duration: Duration = None, every: Every = 1, fps: Fps = None, timeout: Timeout = None,
) -> None:
    """Video panoptic segmentation (things with track ids + stuff), or semantic with --semantic.

    Examples:

      segcli vps street.mp4 --dataset coco -o out/

      segcli vps street.mp4 --dataset vipseg --semantic -f panoptic -o out/
    """
    params = dict(locals())
    task = "vss" if params.pop("semantic") else "vps"
    run_video(task, params.pop("video"), **params)


@app.command(cls=PromptOrderCommand)
def vos(
    ctx: typer.Context,
    video: Video,
    point: Annotated[Optional[list[str]], typer.Option(metavar="X,Y", help="click on the object (repeatable). "
                     "Negative points (X,Y:neg) are not supported: OMG-Seg has no negative-click input")] = None,
    box: Annotated[Optional[list[str]], typer.Option(metavar="X1,Y1,X2,Y2",
                                                     help="box around the object (repeatable)")] = None,
    mask: Annotated[Optional[list[Path]], typer.Option(metavar="PNG", help="indexed (palette) or grayscale PNG, "
                                                       "DAVIS style: one object per index")] = None,
    object: Annotated[Optional[list[int]], typer.Option("--object", metavar="N", help="the prompts after it belong "
                      "to object N (default 1)")] = None,
    frame: Annotated[Optional[list[int]], typer.Option("--frame", metavar="K", help="the prompts after it are on "
                     "source frame K (default: --start); prompts on a later frame re-match that object from there "
                     "on")] = None,
    vocab: Vocab = None, stuff: Stuff = None, vocab_file: VocabFile = None, dataset: Dataset = None,
    vocab_embeddings: VocabEmbeddings = None,
    weights: Weights = DEFAULT_WEIGHTS, device: Device = "auto", precision: Precision = None, size: Size = None,
    clip_size: ClipSize = None, start: Start = 0, end: End = None, output: Output = None, format: Formats = None,
    quiet: Quiet = False, mode: Mode = "auto", reader: Reader = "pyav", exact_budget: Budget = 2048.0,
    compile: Compile = False, threads: Threads = None, dataset_json: DatasetJson = None,
    source_format: SourceFormat = None, source_option: SourceOption = None, max_frames: MaxFrames = None,
    duration: Duration = None, every: Every = 1, fps: Fps = None, timeout: Timeout = None,
) -> None:
    """Video object segmentation from prompts on a frame: clicks, boxes or a first-frame mask.

    Examples:

      segcli vos clip.mp4 --point 120,80 -o out/

      segcli vos clip.mp4 --object 1 --box 40,30,200,180 --object 2 --point 300,90 -o out/

      segcli vos clip.mp4 --mask first_frame.png -o out/

      segcli vos clip.mp4 --point 120,80 --frame 40 --point 150,95 -o out/   # correction on frame 40
    """
    objects = parse_vos_prompts(ctx.meta.get("segcli.args", []), default_frame=start)
    labelled = any(v is not None for v in (vocab, vocab_file, dataset, vocab_embeddings))
    params = dict(locals())
    for name in ("ctx", "point", "box", "mask", "object", "frame", "objects", "labelled"):
        params.pop(name)
    run_video("vos", params.pop("video"), score_threshold=0.0, max_objects=255, open_vocab=False, objects=objects,
              label_objects=labelled, mask_files=mask or [], **params)


PROMPT_OPTIONS = ("--object", "--frame", "--point", "--box", "--mask")


def parse_vos_prompts(args: list[str], default_frame: int = 0) -> list:
    """Walk the arguments in order: --object N and --frame K apply to the prompts after them."""
    from .pipeline.options import ObjectPrompt, objects_from_mask_png

    current_obj, current_frame = 1, default_frame
    prompts: dict[tuple[int, int], ObjectPrompt] = {}
    mask_files: list[tuple[str, int]] = []
    tokens = iter(args)
    dangling = None  # a --object/--frame that no prompt follows yet
    for tok in tokens:
        if tok == "--":
            break
        name, eq, inline = tok.partition("=")
        if name not in PROMPT_OPTIONS:
            continue
        value = inline if eq else next(tokens, "")
        dangling = f"{name} {value}" if name in ("--object", "--frame") else None
        if name == "--object":
            current_obj = _int(value, "--object", minimum=1, maximum=255)
        elif name == "--frame":
            current_frame = _int(value, "--frame", minimum=0)
        elif name == "--mask":
            mask_files.append((value, current_frame))
        else:
            key = (current_obj, current_frame)
            target = prompts.setdefault(key, ObjectPrompt(current_obj, current_frame))
            if name == "--point":
                target.points.append(_point(value))
            else:
                target.boxes.append(_box(value))
    if dangling:
        raise UsageError(f"{dangling} applies to the prompts after it, and none follows")
    out = list(prompts.values())
    for path, frame_index in mask_files:
        out.extend(objects_from_mask_png(path, frame_index))
    if not out:
        raise PromptError("vos needs a prompt: --point X,Y, --box X1,Y1,X2,Y2 or --mask FILE")
    return out


def _int(value: str, option: str, minimum: int, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{option} {value!r}: expected an integer") from None
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        raise UsageError(f"{option} {value}: must be {bound}")
    return number


# ---- images ---------------------------------------------------------------------------------
@app.command()
def image(
    paths: Annotated[list[str], typer.Argument(metavar="PATH...", help="image files or folders of images")],
    task: Annotated[str, typer.Option(metavar="TASK", help="panoptic, instance or semantic")] = "panoptic",
    point: Annotated[Optional[list[str]], typer.Option(metavar="X,Y", help="click: SAM-like mask of the object "
                                                       "under it (repeatable; one object per prompt)")] = None,
    box: Annotated[Optional[list[str]], typer.Option(metavar="X1,Y1,X2,Y2", help="box prompt (repeatable)")] = None,
    vocab: Vocab = None, stuff: Stuff = None, vocab_file: VocabFile = None, dataset: Dataset = None,
    vocab_embeddings: VocabEmbeddings = None,
    weights: Weights = DEFAULT_WEIGHTS, device: Device = "auto", precision: Precision = None, size: Size = None,
    score_threshold: Annotated[Optional[float], typer.Option(
        "--score-threshold", metavar="S", help="drop objects whose class probability is lower (default: 0.3 for "
        "instance, 0 for panoptic)")] = None,
    max_objects: MaxObjects = 100, output: Output = None, format: Formats = None,
    quiet: Quiet = False, open_vocab: OpenVocab = False, threads: Threads = None, dataset_json: DatasetJson = None,
) -> None:
    """Single images with the same model: panoptic/instance/semantic, or masks for point/box prompts.

    Examples:

      segcli image photo.jpg --vocab "cat,sofa"

      segcli image photo.jpg --point 320,240 -f coco-rle -o masks.json

      segcli image photos/ --dataset coco -f panoptic -o out/
    """
    from .io import default_formats
    from .pipeline.options import ImageOptions, validate_image_options

    console = Console(quiet)
    check_common(weights=weights, device=device, precision=precision, threads=threads)
    objects = {}
    for i, p in enumerate(point or [], 1):
        objects[i] = ([_point(p)], [])
    for j, b in enumerate(box or [], len(objects) + 1):
        objects[j] = ([], [_box(b)])
    if score_threshold is None:
        score_threshold = 0.3 if task == "instance" else 0.0
    vocabulary, embeddings = select_vocabulary(vocab, stuff, vocab_file, dataset, vocab_embeddings,
                                               _embed_dim(weights, vocab_embeddings))
    agnostic = bool(objects) and vocabulary is None
    if agnostic and open_vocab:
        raise UsageError("--open-vocab needs a vocabulary")
    opts = validate_image_options(ImageOptions(task=task, scale=parse_size(size), score_threshold=score_threshold,
                                               max_objects=max_objects, open_vocab=open_vocab, objects=objects,
                                               label_objects=bool(objects) and not agnostic))
    names = default_formats("image", output, format)
    _check_stdout(output, names)
    writer_options = _writer_options(dataset_json, None, None)
    from . import api

    planned = api.planned_vocabulary(weights, vocabulary, agnostic)
    job = api.ImageJob(paths, opts, vocabulary=planned, output=output, formats=names,
                       writer_options=writer_options, notice=console.notice)
    try:
        check_device(device, precision)  # torch from here on
        seg = load_model(weights, device, precision, planned if not agnostic else None, embeddings, console,
                         class_agnostic=agnostic, open_vocab=open_vocab, threads=threads)
    except BaseException:
        from .io import abort_writers

        abort_writers(job.writers)
        job.close()
        raise
    report = job.run(seg, notice=console.notice, progress=console)
    console.written(report, unit="image")


# ---- info -----------------------------------------------------------------------------------
@app.command()
def info() -> None:
    """Versions, devices and which weights are on this machine.

    Example:

      segcli info
    """
    import importlib.metadata as md

    import torch

    from . import __version__
    from . import weights as registry

    print(f"segcli {__version__}")
    for pkg in ("torch", "torchvision", "open_clip_torch", "av", "decord", "opencv-python-headless", "numpy",
                "pycocotools", "safetensors", "huggingface_hub", "typer", "click", "rich"):
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
def _parser_error(exc: BaseException) -> tuple[str, int] | None:
    """click's exceptions, whichever click raised them (the Typer 0.29 series bundles its own click):
    matched by name."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "Abort" in names:
        return "interrupted", 130
    if "ClickException" in names:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        message = " ".join(str(message).split())
        ctx = getattr(exc, "ctx", None)
        command = getattr(ctx, "command_path", "") if ctx is not None else ""
        hint = f" (segcli {command.partition(' ')[2]} --help)".replace("  ", " ") if command else ""
        return f"{message}{hint if command and command != 'segcli' else ''}", int(getattr(exc, "exit_code", 2) or 2)
    return None


def _invoke(args: list[str]) -> int:
    """Run the click command ourselves: Typer's own main loop turns Ctrl-C into a silent exit code
    and a closed stdout pipe into exit 1, before we could report them."""
    command = typer.main.get_command(app)
    try:
        with command.make_context("segcli", list(args)) as ctx:
            command.invoke(ctx)
    except Exception as exc:  # click's Exit (--help, --version) carries its code
        if "Exit" in {cls.__name__ for cls in type(exc).__mro__} and hasattr(exc, "exit_code"):
            return int(exc.exit_code or 0)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a command group given no subcommand: its help
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                print(ctx.get_help(), file=sys.stderr)
            return 2
        raise
    return 0


def _quiet_stdout() -> None:
    """After a broken pipe: no more writes (and no 'Exception ignored' at exit)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _on_sigterm(signum, frame):
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # freed tensors stay in the heap: no page faults for the next buffer of that size (segcli/runtime.py)
    from .runtime import keep_freed_memory

    keep_freed_memory()
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (embedded use)
        pass
    debug = bool(os.environ.get("SEGCLI_DEBUG"))
    try:
        code = _invoke(args)
    except SegcliError as exc:
        if debug:
            raise
        print(f"segcli: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("segcli: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # the reader of stdout went away (`segcli vis ... | head`): stop quietly, as `yes | head` does
        _quiet_stdout()
        sys.exit(141)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - everything ends as one line and an exit code
        if isinstance(exc, Interrupted):
            print("segcli: terminated", file=sys.stderr)
            sys.exit(128 + exc.signal_number)
        parsed = _parser_error(exc)
        if parsed is not None:
            message, code = parsed
            print(f"segcli: error: {message}" if code != 130 else "segcli: interrupted", file=sys.stderr)
            sys.exit(code)
        if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC anywhere is an output problem
            print(f"segcli: error: no space left on device{': ' + exc.filename if exc.filename else ''}",
                  file=sys.stderr)
            sys.exit(5)
        if debug:
            raise
        print(f"segcli: internal error: {type(exc).__name__}: {exc} (SEGCLI_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        sys.exit(70)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        sys.exit(141)
    except (AttributeError, ValueError):
        pass
    sys.exit(code)


def entry() -> None:
    """The `segcli` console script and `python -m segcli`: main(), then the process ends without
    the interpreter's teardown (segcli.runtime.exit_now: 0.6-1 s of every command)."""
    from .runtime import exit_code_of, exit_now

    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exit_code_of(exc)
    exit_now(code)
