"""The output folder of a batch: what is done, what failed, and the guarantees behind a rerun.

    OUT/batch.json            the settings the results were made with (a rerun must match them)
    OUT/manifest.jsonl        one line per finished video, appended by the driver only:
                              {"input", "name", "status": "ok"|"failed", "frames", "seconds",
                               "outputs", "error", "video_id", ...}; the last line of a name wins
    OUT/<name>/               a finished video's files, and .segcli-batch.json (its record)
    OUT/.<name>.segcli-batch-<host>-<pid>-<random>.part/   a video being written

A worker writes a video into its hidden temp folder and renames it to OUT/<name>/ when the
video is done (rename(2) is atomic, and fails when OUT/<name>/ exists: two workers can never
both commit a video). The record inside the folder makes the folder self-describing: a driver
killed between the rename and the manifest line finds it at the next start and appends the line
then (`reconcile`). Temp folders of dead runs are removed at start, under the lock that keeps a
second batch off the same folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import zlib
from pathlib import Path

from ..errors import OutputError, UsageError

MANIFEST = "manifest.jsonl"
SETTINGS = "batch.json"
LOCK = ".segcli-batch.lock"
MARKER = ".segcli-batch.json"
HOST = f"{zlib.crc32(socket.gethostname().encode('utf-8', 'replace')) & 0xFFFFFF:06x}"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.segcli-(?:batch|merge)-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-\w+\.(part|old)$")


def temp_prefix(name: str, kind: str = "batch") -> str:
    return f".{name}.segcli-{kind}-{HOST}-{os.getpid()}-"


def is_temp(name: str) -> bool:
    return _TEMP_RE.match(name) is not None


def temp_pid(name: str) -> int | None:
    m = _TEMP_RE.match(name)
    return int(m["pid"]) if m else None


from ..runtime import pid_alive  # noqa: E402,F401  (used here and re-exported)


def remove_dead_temps(root: Path) -> list[str]:
    """Temp folders of this host's processes that died (a killed worker's video in progress)."""
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None or m["host"] != HOST or pid_alive(int(m["pid"])):
            continue
        shutil.rmtree(entry.path, ignore_errors=True) if entry.is_dir() else _unlink(entry.path)
        removed.append(entry.name)
    return removed


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def read_marker(folder: Path) -> dict | None:
    try:
        doc = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("status") == "ok" else None


class OutputFolder:
    """OUT/ of one batch run: lock, manifest, settings and clean-up (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        self._lock_fh = None
        self.records: dict[str, dict] = {}  # name -> its last manifest record
        self.names_by_input: dict[str, str] = {}

    # -- lock -------------------------------------------------------------------------------
    def open(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise OutputError(f"-o {self.root}: a file is in the way (batch writes a folder)") from None
        except OSError as exc:
            raise OutputError(f"cannot create {self.root}: {exc.strerror or exc}") from None
        if not self.root.is_dir():
            raise OutputError(f"-o {self.root}: not a folder")
        try:
            fh = open(self.root / LOCK, "a+")
        except OSError as exc:
            raise OutputError(f"cannot write to {self.root}: {exc.strerror or exc}") from None
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock on this platform: one run at a time is up to the user
            pass
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise OutputError(f"another segcli batch ({holder}) is writing to {self.root}; wait for it or choose "
                              "another -o") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        self._lock_fh = fh

    def close(self) -> None:
        if self._lock_fh is not None:
            try:
                self._lock_fh.close()
            finally:
                self._lock_fh = None

    # -- settings ---------------------------------------------------------------------------
    def check_settings(self, settings: dict) -> None:
        """The first run records its result-relevant settings; later runs must match them, so
        that one folder never mixes results of two vocabularies, models or formats."""
        path = self.root / SETTINGS
        doc = None
        if path.is_file():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                doc = None
        if doc is not None and isinstance(doc.get("settings"), dict):
            old = doc["settings"]
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            if diff:
                shown = "; ".join(f"{k}: {old.get(k)!r} then, {settings.get(k)!r} now" for k in diff[:3])
                raise UsageError(f"{self.root} holds results made with other settings ({shown}); rerun with the same "
                                 "options to resume, or choose another -o")
            return
        from .. import __version__

        write_json_atomic(path, {"segcli": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                 "settings": settings})

    # -- manifest ---------------------------------------------------------------------------
    def load_manifest(self) -> None:
        path = self.root / MANIFEST
        self.records.clear()
        if not path.is_file():
            return
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:  # a line cut by a killed driver
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("name"), str):
                    self.records[rec["name"]] = rec
                    if isinstance(rec.get("input"), str):
                        self.names_by_input[rec["input"]] = rec["name"]

    def append(self, record: dict) -> None:
        """One line per finished video, flushed to disk before the next is accepted."""
        path = self.root / MANIFEST
        line = json.dumps(record, ensure_ascii=True, separators=(",", ":"), allow_nan=False) + "\n"
        try:
            with open(path, "ab+") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() > 0:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":  # the previous driver died mid-line
                        fh.write(b"\n")
                fh.write(line.encode("ascii"))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        self.records[record["name"]] = record
        self.names_by_input[record["input"]] = record["name"]

    def done(self, name: str) -> bool:
        rec = self.records.get(name)
        return rec is not None and rec.get("status") == "ok" and read_marker(self.root / name) is not None

    def failed(self, name: str) -> bool:
        rec = self.records.get(name)
        return rec is not None and rec.get("status") == "failed"

    # -- start-up clean-up ------------------------------------------------------------------
    def remove_stale_temps(self) -> list[str]:
        """Every batch temp folder: under the lock no other run is writing here, so they are all
        left by runs that died (local or on other machines)."""
        removed = []
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return removed
        for entry in entries:
            if is_temp(entry.name):
                shutil.rmtree(entry.path, ignore_errors=True) if entry.is_dir() else _unlink(entry.path)
                removed.append(entry.name)
        return removed

    def reconcile(self, names: list[str]) -> list[dict]:
        """Finished folders whose manifest line is missing (the driver died right after the
        rename): append their record now. Returns the records appended."""
        added = []
        for name in names:
            rec = self.records.get(name)
            if rec is not None and rec.get("status") == "ok":
                continue
            marker = read_marker(self.root / name)
            if marker is None:
                continue
            if rec is not None and rec.get("status") == "failed" and rec.get("finished", "") > marker.get(
                    "finished", ""):
                continue
            marker = dict(marker, recovered=True)
            self.append(marker)
            added.append(marker)
        return added


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_json_atomic(path: Path, doc, indent: int | None = None) -> None:
    """A JSON file written beside its target and renamed onto it."""
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name, "merge"), suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            if indent is None:
                json.dump(doc, fh, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
            else:
                json.dump(doc, fh, ensure_ascii=True, indent=indent, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def replace_dir(tmp: Path, target: Path) -> None:
    """Move a fully built folder onto `target`, replacing an earlier one (swapped out first)."""
    import tempfile

    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=temp_prefix(target.name, "merge"), suffix=".old"))
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
