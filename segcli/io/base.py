"""Writer base class and the pieces every writer shares: atomic files and folders, stdout
sinks, category-id mapping and per-track score bookkeeping.

Atomicity: a writer never writes at its final path. Single files go to a hidden temp file
beside the target (``.<name>.segcli-<host>-<pid>-<random>.part``) that is fsync'ed and
``os.replace``d onto the target at ``close()``; per-frame file sets go to a hidden temp folder
beside the target that is moved into place at ``close()``. An earlier folder at that path is
swapped out and then deleted, but only when it holds nothing but what segcli wrote there (the
folder's ``.segcli-manifest.json`` lists it; an empty folder is fine too): a folder with any
other file is never replaced (OutputError), so a results folder can never take an input's or
a user's files with it. ``abort()`` deletes the writer's temp files (always, even when its own
clean-up fails); so does an ``atexit`` hook for writers that were neither closed nor aborted.
Temp files of processes that died (SIGKILL, power loss) are recognised by their host and pid
and removed by the next ``open_writers`` on the same folder (``remove_stale_temps``; an
interrupted folder swap is undone, i.e. the earlier folder is put back). Earlier output at the
path stays untouched until the final rename.

Errors while writing (disk full, permissions, I/O errors) end as OutputError naming the path,
never as a bare OSError (a closed stdout pipe stays BrokenPipeError for the CLI).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, ClassVar

from segcli.errors import OutputError, UsageError
from segcli.results import FrameResult, Segment, VideoInfo

if TYPE_CHECKING:
    from segcli.io.dataset import Dataset

_UMASK = os.umask(0)
os.umask(_UMASK)

_LIVE_TEMPS: set[Path] = set()

MANIFEST = ".segcli-manifest.json"  # in every folder an AtomicDir commits: what segcli wrote there
_HOST = f"{zlib.crc32(socket.gethostname().encode('utf-8', 'replace')) & 0xFFFFFF:06x}"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.segcli-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[A-Za-z0-9_]+\.(?P<kind>part|old)$")


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.segcli-{_HOST}-{os.getpid()}-"


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


from segcli.runtime import pid_alive as _pid_alive  # noqa: E402


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temp files/folders that segcli processes on this host left in ``folder`` when
    they died (their pid is no longer alive). An interrupted folder swap (``.old``) whose target
    is missing is put back in place instead. Returns the paths removed or restored."""
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    done = []
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None or m["host"] != _HOST or _pid_alive(int(m["pid"])):
            continue
        path = Path(entry.path)
        target = folder / m["name"]
        if m["kind"] == "old" and not os.path.lexists(target):
            try:
                os.replace(path, target)  # the earlier output, swapped out by a run that died
                done.append(path)
                continue
            except OSError:
                pass
        _remove(path)
        done.append(path)
    return done


def _resolved(path: str | os.PathLike) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(Path(path).expanduser()))


def check_not_input(target: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> None:
    """OutputError when writing ``target`` would replace or delete an input: ``target`` is an
    input (also through a link), or an input lies inside it (a folder target replaces all of
    it). ``"-"`` (stdin) is not a path."""
    if not inputs:
        return
    t = _resolved(target)
    for item in inputs:
        if item is None or str(item) == "-":
            continue
        i = _resolved(item)
        same = t == i
        if not same and os.path.lexists(target) and os.path.exists(item):
            try:
                same = os.path.samefile(target, item)
            except OSError:
                same = False
        if same:
            raise OutputError(f"output {target} is the input {item}: it would be replaced; choose another output")
        if t in i.parents:
            raise OutputError(f"output {target} would replace the folder holding the input {item}; "
                              "choose another output")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    if exc.strerror:
        return exc.strerror
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


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
                fd, name = tempfile.mkstemp(dir=self.target.parent, prefix=_temp_prefix(self.target),
                                            suffix=".part")
            except OSError as exc:
                raise OutputError(f"cannot write {self.target}: {_reason(exc)}") from exc
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
        try:
            if self._fh is not None:
                fh, self._fh = self._fh, None
                try:
                    fh.flush()
                    os.fsync(fh.fileno())
                finally:
                    fh.close()
            else:
                _fsync(tmp)
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, self.target)
        except OSError as exc:
            _remove(tmp)
            self._tmp = None
            raise OutputError(f"cannot write {self.target}: {_reason(exc)}") from exc
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


def _listing(folder: Path) -> tuple[list[str], list[str]]:
    """(files and links, folders) under ``folder``, as sorted relative POSIX paths."""
    files, dirs = [], []
    for root, dirnames, filenames in os.walk(folder):
        rel = Path(root).relative_to(folder)
        for d in list(dirnames):
            p = Path(root) / d
            if p.is_symlink():  # os.walk does not follow it: a link is an entry of its own
                files.append((rel / d).as_posix())
                dirnames.remove(d)
            else:
                dirs.append((rel / d).as_posix())
        files.extend((rel / f).as_posix() for f in filenames)
    return sorted(files), sorted(dirs)


def foreign_files(folder: str | os.PathLike) -> list[str]:
    """Files under an existing ``folder`` that segcli did not write there (not in the folder's
    manifest); [] for a folder segcli wrote, an empty folder, or a path that is not a folder."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return []
    files, _ = _listing(folder)
    if not files:
        return []
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        written = set(doc["files"]) if doc.get("writer") == "segcli" else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        written = None
    if written is None:
        return [f for f in files if f != MANIFEST] or [MANIFEST]
    return [f for f in files if f != MANIFEST and f not in written]


def check_replaceable(folder: str | os.PathLike) -> None:
    """OutputError when ``folder`` exists and holds files segcli did not write there."""
    foreign = foreign_files(folder)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise OutputError(f"{folder} already exists and holds files segcli did not write ({foreign[0]}{more}); "
                          "it is never replaced: remove it or choose another output")


class AtomicDir:
    """A folder filled under a hidden temp name beside ``target`` and moved onto it at commit.

    At commit the folder gets its manifest (``MANIFEST``: the files written) and an earlier
    folder at ``target`` is replaced only if it holds nothing else (``check_replaceable``).
    """

    def __init__(self, target: Path, fmt: str = ""):
        self.target = Path(target)
        self.format = fmt
        self._tmp: Path | None = None

    def path(self) -> Path:
        if self._tmp is None:
            try:
                self._tmp = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=_temp_prefix(self.target),
                                                  suffix=".part"))
            except OSError as exc:
                raise OutputError(f"cannot write {self.target}: {_reason(exc)}") from exc
            _LIVE_TEMPS.add(self._tmp)
        return self._tmp

    def commit(self) -> None:
        tmp = self.path()
        backup: Path | None = None
        try:
            files, _ = _listing(tmp)
            manifest = {"writer": "segcli", "format": self.format, "files": files}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=0) + "\n", encoding="utf-8")
            os.chmod(tmp, 0o777 & ~_UMASK)
            if self.target.is_dir() and not self.target.is_symlink():
                check_replaceable(self.target)
                # rename(2) cannot replace a non-empty folder: swap the old one out first.
                backup = Path(tempfile.mkdtemp(dir=self.target.parent, prefix=_temp_prefix(self.target),
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
        except (OSError, OutputError) as exc:
            _remove(tmp)
            self._tmp = None
            if backup is not None:
                _LIVE_TEMPS.discard(backup)  # holds the earlier output: never deleted at exit
            if isinstance(exc, OutputError):
                raise
            raise OutputError(f"cannot write {self.target}: {_reason(exc)}") from exc
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


def default_notice(message: str) -> None:
    print(f"segcli: {message}", file=sys.stderr)


@dataclass
class WriterOptions:
    """Options shared by the writers (``open_writers`` builds it from its keyword arguments).

    - ``category_ids``: dataset category ids of the vocabulary (see CategoryMap).
    - ``video_id``: the YouTube-VIS ``video_id``; None: the dataset JSON's id of this video
      (``dataset.video_id_for(info.name)``), else 1. (The panoptic JSON's ``video_id`` is the name.)
    - ``dataset``: a segcli.io.dataset.Dataset whose ids the results use (image ids of coco-rle
      and image panoptic, YouTube-VIS video ids, frame list and length, category ids).
    - ``davis_max_objects``: at most this many objects in davis PNGs (indices 1..N, the first
      objects to appear); later ones are left out with a notice (and recorded in the summary).
    - ``inputs``: the run's input paths; no output may replace, contain or be one of them.
    - ``notice``: where writers send one-line notices (default: stderr).
    """

    category_ids: Sequence[int] | Mapping[int, int] | None = None
    video_id: int | None = None
    dataset: Dataset | None = None
    davis_max_objects: int | None = None
    inputs: Sequence[str | os.PathLike] = ()
    notice: Callable[[str], None] | None = None

    def say(self, message: str) -> None:
        (self.notice or default_notice)(message)


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


class UniqueStems:
    """Refuses a second frame with the same file stem (it would overwrite the first one's file),
    e.g. ``a/x.jpg`` and ``b/x.jpg``. Case-insensitive, as file systems may be."""

    def __init__(self, fmt: str):
        self.format = fmt
        self._seen: dict[str, str] = {}

    def add(self, stem: str) -> None:
        key = stem.casefold()
        if key in self._seen:
            raise UsageError(f"{self.format}: two inputs are named {stem!r} ({self._seen[key]!r} came first); "
                             "their files would overwrite each other: rename one or run them separately")
        self._seen[key] = stem


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

    ``target`` is the final path (file or folder), or None for stdout. Temp files and folders
    are created through ``_atomic_file``/``_atomic_dir``/``text_sink`` so that ``abort()``
    removes them whatever the subclass does.
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
        self._atomics: list[AtomicFile | AtomicDir] = []

    @classmethod
    def for_directory(cls, directory: Path, info: VideoInfo, options: WriterOptions | None = None) -> Writer:
        return cls(directory / cls.default_name.format(name=info.name), info, options)

    @property
    def targets(self) -> list[Path]:
        """Final paths this writer creates (checked for writability by open_writers)."""
        return [] if self.target is None else [self.target]

    def text_sink(self, target: Path | None = None) -> TextSink:
        target = self.target if target is None else target
        if target is not None:
            sink = FileSink(target)
            self._atomics.append(sink._file)
            return sink
        return StdoutSink() if self.stdout == "stream" else BufferedStdoutSink()

    def _atomic_file(self, target: Path) -> AtomicFile:
        file = AtomicFile(target)
        self._atomics.append(file)
        return file

    def _atomic_dir(self, target: Path) -> AtomicDir:
        folder = AtomicDir(target, self.format_name)
        self._atomics.append(folder)
        return folder

    def _where(self) -> str:
        return "stdout" if self.target is None else str(self.target)

    def _output_error(self, exc: OSError) -> OutputError:
        return OutputError(f"cannot write {self._where()}: {_reason(exc)}")

    # -- public API ---------------------------------------------------------------------------

    def write(self, frame: FrameResult) -> None:
        if self._done:
            raise RuntimeError(f"{self.format_name} writer is already closed")
        check_frame(frame)
        try:
            self._write(frame)
        except (OutputError, BrokenPipeError):
            raise
        except OSError as exc:  # disk full, I/O error...: exit 5 with the path, never a raw OSError
            raise self._output_error(exc) from exc
        self.frames_written += 1

    def close(self) -> None:
        """Finalise: flush and move the output into place atomically (no-op when done)."""
        if self._done:
            return
        try:
            self._close()
        except BaseException as exc:
            self._done = True
            self._cleanup()
            if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
                raise self._output_error(exc) from exc
            raise
        self._done = True

    def abort(self) -> None:
        """Drop everything written so far; earlier files at the target stay untouched."""
        if self._done:
            return
        self._done = True
        self._cleanup()

    def _cleanup(self) -> None:
        try:
            self._abort()
        except Exception:  # noqa: BLE001 - the temps below are removed whatever happened
            pass
        finally:
            for atomic in self._atomics:
                atomic.discard()

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
        pass
