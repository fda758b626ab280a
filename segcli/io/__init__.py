"""Output writers: one module per format, all streaming per frame and finalised atomically.

    writers = open_writers(["jsonl", "davis"], "out/", info)   # checks the output up front
    try:
        for frame in frames:
            for w in writers:
                w.write(frame)
    except BaseException:
        abort_writers(writers)
        raise
    close_writers(writers)

``-o`` resolution (``output``):

- ``None`` or ``"-"``: stdout; exactly one format, and one that can go there
  (``STDOUT_FORMATS``: jsonl streams line by line; ytvis, coco-rle and summary (its text table)
  are printed whole at close). With no formats given, ``jsonl`` is used.
- an existing folder, a path ending in ``/``, a path without a file extension, or several
  formats: a folder (created if needed); each format writes its default name inside it
  (``Writer.default_name``, e.g. ``<dir>/<name>.jsonl``, ``<dir>/<name>/00000.png`` for davis).
- otherwise a file: only with exactly one single-file format (not davis / panoptic).

Safety (checked by ``open_writers`` before any model work): no output may be, contain or
replace one of ``inputs``; a davis / panoptic folder that already exists is replaced only if
it holds nothing but what segcli wrote there; temp files that dead segcli processes left
beside the targets are removed; a failure to write (disk full...) is an OutputError naming the
path. Two inputs with the same file stem are refused by the per-frame formats (davis,
panoptic, image overlays) instead of one overwriting the other.

Frame numbering, the one rule of every format
---------------------------------------------

Frame numbers are the source's frame numbers everywhere. ``FrameResult.index`` is the frame's
index in the source: with ``--start 5`` the first result is frame 5, and frames that are not
processed (before ``--start``, or skipped, e.g. a future ``--every 5``: 0, 5, 10...) leave gaps.
``FrameResult.pts`` is the frame's source presentation time in seconds.

- ``jsonl``: ``frame`` = the index, ``pts`` = the source pts.
- ``davis`` and ``panoptic``: PNG names = the index zero-padded to 5 digits (``00005.png``)
  for video frames, the source file stem for images and image folders.
- ``coco-rle``: ``image_id`` of a video frame = the index (unless a dataset JSON lists the
  frame's file with another id); images: the dataset JSON's id, else a numeric stem
  (``000000000139.jpg`` -> 139), else the position in the run.
- ``ytvis``: ``segmentations[k]`` is source frame ``k``, ``null`` for frames not processed,
  so the list has last index + 1 items (or the dataset JSON's video length when it gives one).
- ``mask-video`` and ``overlay``: each frame's timestamp is its source pts, so it agrees with
  jsonl's ``pts`` (frames without pts, from image folders, are placed at index / fps).
- ``summary``: ``first_frame`` / ``last_frame`` are indices; ``frames`` counts processed frames.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from segcli.errors import OutputError, UsageError
from segcli.io.base import Writer, WriterOptions, check_not_input, check_replaceable, remove_stale_temps
from segcli.io.coco_rle import CocoRleWriter
from segcli.io.dataset import Dataset
from segcli.io.davis import DavisWriter
from segcli.io.jsonl import JsonlWriter
from segcli.io.mask_video import MaskVideoWriter
from segcli.io.overlay import OverlayWriter
from segcli.io.panoptic import PanopticWriter
from segcli.io.summary import SummaryWriter
from segcli.io.ytvis import YtvisWriter
from segcli.results import VideoInfo

WRITERS: dict[str, type[Writer]] = {
    cls.format_name: cls
    for cls in (JsonlWriter, YtvisWriter, CocoRleWriter, DavisWriter, PanopticWriter, MaskVideoWriter,
                OverlayWriter, SummaryWriter)
}
FORMATS: tuple[str, ...] = tuple(WRITERS)
STDOUT_FORMATS: tuple[str, ...] = tuple(name for name, cls in WRITERS.items() if cls.stdout)
DEFAULT_FORMAT = "jsonl"

__all__ = ["FORMATS", "STDOUT_FORMATS", "DEFAULT_FORMAT", "WRITERS", "Writer", "WriterOptions", "Dataset",
           "parse_formats", "open_writers", "close_writers", "abort_writers"]


DEFAULT_DIR_FORMAT = {"vis": "ytvis", "vps": "panoptic", "vss": "panoptic", "vos": "davis", "image": "jsonl"}


def default_formats(task: str, output: str | None, formats: Iterable[str] | str | None) -> list[str]:
    """-f as given, else by output: stdout -> jsonl; a folder -> the task's format; a file -> its suffix."""
    names = parse_formats(formats)
    if names:
        return names
    if output is None or output == "-":
        return ["jsonl"]
    if output.endswith(("/", os.sep)) or Path(output).is_dir() or not Path(output).suffix:
        return [DEFAULT_DIR_FORMAT[task]]
    suffix = Path(output).suffix.lower()
    if suffix == ".json":
        return ["ytvis" if task == "vis" else "coco-rle"]
    by_suffix = {".jsonl": "jsonl", ".mkv": "mask-video", ".mp4": "overlay", ".txt": "summary", ".png": "overlay"}
    return [by_suffix.get(suffix, "jsonl")]


def parse_formats(formats: Iterable[str] | str | None) -> list[str]:
    """Normalise ``-f`` values: comma-separated or repeated, case-insensitive, duplicates dropped.

    Raises UsageError naming the valid formats for an unknown name.
    """
    if formats is None:
        return []
    if isinstance(formats, str):
        formats = [formats]
    names: list[str] = []
    for item in formats:
        for name in str(item).split(","):
            name = name.strip().lower().replace("_", "-")
            if not name:
                continue
            if name not in WRITERS:
                raise UsageError(f"unknown output format {name!r}; valid formats: {', '.join(FORMATS)}")
            if name not in names:
                names.append(name)
    return names


def _check_writable(writer: Writer) -> None:
    for target in writer.targets:
        parent = target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise OutputError(f"cannot create folder {parent}: a file is in the way") from None
        except OSError as exc:
            raise OutputError(f"cannot create folder {parent}: {exc.strerror or exc}") from exc
        if writer.is_dir and target.exists() and not target.is_dir():
            raise OutputError(f"{target} exists and is not a folder")
        if not writer.is_dir and target.is_dir():
            raise OutputError(f"{target} is a folder; {writer.format_name} writes a file there")
        try:
            fd, probe = tempfile.mkstemp(dir=parent, prefix=".segcli-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OutputError(f"cannot write to {parent}: {exc.strerror or exc}") from exc


def _stdout_writers(names: list[str], output: str | None, info: VideoInfo, options: WriterOptions):
    if len(names) > 1:
        if output is None:
            raise UsageError(f"several formats ({', '.join(names)}) need an output folder: give -o DIR")
        raise UsageError(f"-o - (stdout) takes exactly one format, got: {', '.join(names)}")
    cls = WRITERS[names[0]]
    if cls.stdout is None:
        if output is None:
            raise UsageError(f"format {cls.format_name!r} writes files: give an output folder with -o DIR")
        raise UsageError(f"format {cls.format_name!r} cannot go to stdout; "
                         f"stdout takes one of: {', '.join(STDOUT_FORMATS)}")
    return [cls(None, info, options)]


def open_writers(formats: list[str], output: str | None, info: VideoInfo, *,
                 category_ids: Sequence[int] | Mapping[int, int] | None = None,
                 video_id: int | None = None,
                 dataset: Dataset | str | os.PathLike | None = None,
                 davis_max_objects: int | None = None,
                 inputs: Sequence[str | os.PathLike] = (),
                 notice: Callable[[str], None] | None = None) -> list[Writer]:
    """Create the writers for ``formats`` at ``output`` (see the module docstring).

    Checks up front (before any model work) that every output location can be written,
    creating missing folders; nothing is written at a final path before ``close()``.

    - ``category_ids``: dataset category ids of the vocabulary (default: the dataset JSON's ids
      of the class names when a dataset is given, else the 1-based index);
    - ``video_id``: the YouTube-VIS video id (default: the dataset JSON's, else 1);
    - ``dataset``: a Dataset or the path of a COCO / COCO-panoptic / YouTube-VIS JSON whose
      image, video and category ids the results use (segcli.io.dataset);
    - ``davis_max_objects``: at most this many objects in davis PNGs (the first to appear);
    - ``inputs``: the run's input paths (videos, image files or folders, prompt masks): an
      output that is, contains or would replace one of them is refused;
    - ``notice``: callable for one-line notices (default: stderr).

    Raises UsageError (unknown format, format/output mismatch, classes or video not in the
    dataset JSON) or OutputError (unwritable, an input in the way, a folder segcli did not
    write in the way); InputNotFoundError / UnreadableInputError for a bad dataset JSON.
    """
    names = parse_formats(formats) or [DEFAULT_FORMAT]
    if dataset is not None and not isinstance(dataset, Dataset):
        dataset = Dataset.load(dataset)
    if category_ids is None and dataset is not None and dataset.categories and info.classes:
        category_ids = dataset.category_ids_for(info.classes)
    options = WriterOptions(category_ids=category_ids, video_id=video_id, dataset=dataset,
                            davis_max_objects=davis_max_objects, inputs=tuple(inputs), notice=notice)
    if output is None or output == "-":
        return _stdout_writers(names, output, info, options)

    path = Path(output).expanduser()
    single_file = len(names) == 1 and not WRITERS[names[0]].is_dir
    if path.is_dir() or output.endswith(("/", os.sep)):
        as_dir = True
    elif path.exists():
        if not single_file:
            raise OutputError(f"{path} exists and is not a folder; formats {', '.join(names)} need a folder")
        as_dir = False
    elif path.suffix:
        if not single_file:
            raise UsageError(f"-o {output} names a file, but {', '.join(names)} need a folder "
                             "(-o FILE takes exactly one single-file format; end a folder name with /)")
        as_dir = False
    else:
        as_dir = True

    if as_dir:
        writers = [WRITERS[name].for_directory(path, info, options) for name in names]
    else:
        writers = [WRITERS[names[0]](path, info, options)]
    for writer in writers:
        for target in writer.targets:
            check_not_input(target, options.inputs)
    swept: set[Path] = set()
    for writer in writers:
        _check_writable(writer)
        for target in writer.targets:
            if target.parent not in swept:
                swept.add(target.parent)
                remove_stale_temps(target.parent)
            if writer.is_dir:
                check_replaceable(target)
    return writers


def close_writers(writers: Sequence[Writer]) -> None:
    """Close every writer; if one fails, abort the ones not yet closed and re-raise."""
    for i, writer in enumerate(writers):
        try:
            writer.close()
        except BaseException:
            abort_writers(writers[i + 1:])
            raise


def abort_writers(writers: Sequence[Writer]) -> None:
    for writer in writers:
        try:
            writer.abort()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
