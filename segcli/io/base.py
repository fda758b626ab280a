"""Writer base class and the pieces every writer shares: atomic files and folders, stdout
sinks, category-id mapping and per-track score bookkeeping.

Atomicity: a writer never writes at its final path. Single files go to a hidden temp file
beside the target (``.<name>.<random>.part``) that is fsync'ed and ``os.replace``d onto the
target at ``close()``; per-frame file sets go to a hidden temp folder beside the target that
is moved into place at ``close()`` (an earlier folder at that path is swapped out and then
deleted). ``abort()`` deletes the temp files; so does an ``atexit`` hook for writers that were
neither closed nor aborted. Earlier output at the path stays untouched until the final rename.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, ClassVar

from segcli.errors import OutputError, UsageError
from segcli.results import FrameResult, Segment, VideoInfo

_UMASK = os.umask(0)
os.umask(_UMASK)

_LIVE_TEMPS: set[Path] = set()


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except OSError:
        pass
    _LIVE_TEMPS.discard(path)


@atexit.register
def _remove_leftover_temps() -> None:
    for path in list(_LIVE_TEMPS):
        _remove(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A file written under a hidden temp name beside ``target`` and renamed onto it at commit.

    The temp file is created lazily (first ``open()`` or ``temp_path()``).
    """

    def __init__(self, target: Path):
        self.target = Path(target)
        self._tmp: Path | None = None
        self._fh: IO[bytes] | None = None

    def temp_path(self) -> Path:
        """Create (once) and return the temp path, for libraries that open files themselves."""
        if self._tmp is None:
            try:
                fd, name = tempfile.mkstemp(dir=self.target.parent, prefix=f".{self.target.name}.",
                                            suffix=".part")
            except OSError as exc:
                raise OutputError(f"cannot write {self.target}: {exc.strerror or exc}") from exc
            os.close(fd)
            self._tmp = Path(name)
            _LIVE_TEMPS.add(self._tmp)
        return self._tmp

    def open(self) -> IO[bytes]:
        if self._fh is None:
            self._fh = open(self.temp_path(), "wb")
        return self._fh

    def commit(self) -> None:
        tmp = self.temp_path()  # an untouched file commits as an empty file
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
        else:
            _fsync(tmp)
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, self.target)
        except OSError as exc:
            _remove(tmp)
            raise OutputError(f"cannot write {self.target}: {exc.strerror or exc}") from exc
        _LIVE_TEMPS.discard(tmp)
        self._tmp = None

    def discard(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
        if self._tmp is not None:
            _remove(self._tmp)
            self._tmp = None


class AtomicDir:
    """A folder filled under a hidden temp name beside ``target`` and moved onto it at commit."""

    def __init__(self, target: Path):
        self.target = Path(target)
        self._tmp: Path | None = None

    def path(self) -> Path:
        if self._tmp is None:
            try:
                self._tmp = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name}.",
                                                  suffix=".part"))
            except OSError as exc:
                raise OutputError(f"cannot write {self.target}: {exc.strerror or exc}") from exc
            _LIVE_TEMPS.add(self._tmp)
        return self._tmp

    def commit(self) -> None:
        tmp = self.path()
        backup: Path | None = None
        try:
            os.chmod(tmp, 0o777 & ~_UMASK)
            if self.target.is_dir() and not self.target.is_symlink():
                # rename(2) cannot replace a non-empty folder: swap the old one out first.
                backup = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=f".{self.target.name}.",
                                               suffix=".old"))
                _LIVE_TEMPS.add(backup)
                os.replace(self.target, backup)
            try:
                os.replace(tmp, self.target)
            except OSError:
                if backup is not None:
                    os.replace(backup, self.target)
                    _LIVE_TEMPS.discard(backup)
                    backup = None
                raise
        except OSError as exc:
            _remove(tmp)
            self._tmp = None
            raise OutputError(f"cannot write {self.target}: {exc.strerror or exc}") from exc
        _LIVE_TEMPS.discard(tmp)
        self._tmp = None
        if backup is not None:
            _remove(backup)

    def discard(self) -> None:
        if self._tmp is not None:
            _remove(self._tmp)
            self._tmp = None


# ---------------------------------------------------------------------------------------------
# Text sinks: a file (atomic) or stdout


class TextSink:
    """Where a text writer's output goes. ``write`` takes str; ``commit``/``discard`` finish."""

    def write(self, text: str) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError


class FileSink(TextSink):
    def __init__(self, target: Path):
        self._file = AtomicFile(target)

    def write(self, text: str) -> None:
        self._file.open().write(text.encode("utf-8"))

    def commit(self) -> None:
        self._file.commit()

    def discard(self) -> None:
        self._file.discard()


class StdoutSink(TextSink):
    """Streams straight to stdout, flushing after every write (one JSON line per write)."""

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def commit(self) -> None:
        sys.stdout.flush()

    def discard(self) -> None:
        pass  # what was printed stays printed: complete lines only


class BufferedStdoutSink(TextSink):
    """Collects a whole document (spilling to a temp file when large) and prints it at commit,
    so stdout gets a complete JSON document or nothing."""

    def __init__(self):
        self._buf = tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+", encoding="utf-8")

    def write(self, text: str) -> None:
        self._buf.write(text)

    def commit(self) -> None:
        self._buf.seek(0)
        shutil.copyfileobj(self._buf, sys.stdout)
        sys.stdout.flush()
        self._buf.close()

    def discard(self) -> None:
        self._buf.close()


def dumps(obj) -> str:
    """Compact, deterministic JSON (ASCII-only, NaN refused)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# Options shared by writers


class CategoryMap:
    """0-based vocabulary index -> dataset category id written to files.

    Default: ``index + 1`` (YouTube-VIS / COCO style 1-based ids). ``category_ids`` may give the
    dataset's ids in vocabulary order (a sequence) or as ``{index: id}``. Class-agnostic segments
    (category -1, e.g. VOS without a vocabulary) get category id 0, which no dataset uses.
    """

    def __init__(self, info: VideoInfo, category_ids: Sequence[int] | Mapping[int, int] | None = None):
        self._map: dict[int, int] | None = None
        if category_ids is not None:
            if isinstance(category_ids, Mapping):
                self._map = {int(k): int(v) for k, v in category_ids.items()}
            else:
                ids = [int(v) for v in category_ids]
                if len(ids) != len(info.classes):
                    raise UsageError(f"{len(ids)} category ids given for {len(info.classes)} classes")
                self._map = dict(enumerate(ids))

    def __call__(self, category: int) -> int:
        if category < 0:
            return 0
        if self._map is None:
            return int(category) + 1
        try:
            return self._map[int(category)]
        except KeyError:
            raise UsageError(f"no category id given for class index {category}") from None


@dataclass
class WriterOptions:
    category_ids: Sequence[int] | Mapping[int, int] | None = None  # see CategoryMap
    video_id: int | str = 1  # YouTube-VIS video_id; "video_id" of the panoptic JSON is the name


class TrackScores:
    """Running mean of per-frame scores per key, with first/last frame and frame count.

    Track score convention (ytvis, summary): the mean of the track's per-frame scores over the
    frames where the track is present (listed in FrameResult.segments).
    """

    def __init__(self):
        self.stats: dict[object, dict] = {}

    def add(self, key, frame_index: int, seg: Segment) -> dict:
        st = self.stats.get(key)
        if st is None:
            st = self.stats[key] = {"sum": 0.0, "frames": 0, "first": frame_index, "last": frame_index,
                                    "area": 0, "categories": {}, "labels": {}}
        st["sum"] += float(seg.score)
        st["frames"] += 1
        st["last"] = frame_index
        st["area"] += seg.area
        st["categories"][seg.category] = st["categories"].get(seg.category, 0) + 1
        st["labels"].setdefault(seg.category, seg.label)
        return st

    @staticmethod
    def mean(st: dict) -> float:
        return st["sum"] / st["frames"]

    @staticmethod
    def majority_category(st: dict) -> int:
        """The category the track has on most frames (ties: the smaller index)."""
        return min(st["categories"].items(), key=lambda kv: (-kv[1], kv[0]))[0]


def frame_stem(frame: FrameResult) -> str:
    """File stem of a frame for per-frame outputs: the source stem or the 5-digit index."""
    return frame.name if frame.name else f"{frame.index:05d}"


def check_frame(frame: FrameResult) -> None:
    for seg in frame.segments:
        if seg.mask.shape != (frame.height, frame.width):
            raise ValueError(f"frame {frame.index}: mask of segment {seg.id} has shape {seg.mask.shape}, "
                             f"expected {(frame.height, frame.width)}")
        if seg.id < 1:
            raise ValueError(f"frame {frame.index}: segment ids start at 1, got {seg.id}")


def check_unique_ids(frame: FrameResult, fmt: str) -> None:
    ids = [s.id for s in frame.segments]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{fmt}: frame {frame.index} lists the same track id twice")


# ---------------------------------------------------------------------------------------------
# Writer


class Writer:
    """Base writer. Subclasses set the class attributes and implement _write/_close/_abort.

    ``target`` is the final path (file or folder), or None for stdout.
    """

    format_name: ClassVar[str] = ""
    default_name: ClassVar[str] = ""  # file/folder name inside an output folder; {name} = video name
    is_dir: ClassVar[bool] = False  # True: writes a folder (cannot take -o FILE)
    stdout: ClassVar[str | None] = None  # "stream" | "buffer" | None (cannot go to stdout)
    needs_image: ClassVar[bool] = False  # True: FrameResult.image must be set

    def __init__(self, target: str | os.PathLike | None, info: VideoInfo,
                 options: WriterOptions | None = None):
        if target is None and self.stdout is None:
            raise UsageError(f"format {self.format_name!r} cannot be written to stdout")
        self.target = None if target is None else Path(target)
        self.info = info
        self.options = options or WriterOptions()
        self.categories = CategoryMap(info, self.options.category_ids)
        self.frames_written = 0
        self._done = False

    @classmethod
    def for_directory(cls, directory: Path, info: VideoInfo, options: WriterOptions | None = None) -> Writer:
        return cls(directory / cls.default_name.format(name=info.name), info, options)

    @property
    def targets(self) -> list[Path]:
        """Final paths this writer creates (checked for writability by open_writers)."""
        return [] if self.target is None else [self.target]

    def text_sink(self) -> TextSink:
        if self.target is not None:
            return FileSink(self.target)
        return StdoutSink() if self.stdout == "stream" else BufferedStdoutSink()

    # -- public API ---------------------------------------------------------------------------

    def write(self, frame: FrameResult) -> None:
        if self._done:
            raise RuntimeError(f"{self.format_name} writer is already closed")
        check_frame(frame)
        self._write(frame)
        self.frames_written += 1

    def close(self) -> None:
        """Finalise: flush and move the output into place atomically (no-op when done)."""
        if self._done:
            return
        try:
            self._close()
        except BaseException:
            self._done = True
            self._abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Drop everything written so far; earlier files at the target stay untouched."""
        if self._done:
            return
        self._done = True
        self._abort()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- subclass hooks -----------------------------------------------------------------------

    def _write(self, frame: FrameResult) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError
