"""Released weight files: registry, download, verification, local lookup.

The registry (`registry.json` beside this file, or the file named by `SEGCLI_REGISTRY`) lists
*files* (one file of one Hugging Face repository each, with licence, size and sha256 when known)
and *models* (named sets of files with a role each, e.g. `omg-seg-convl` = `head` + `clip`).
Every function taking a `name` accepts a model name or a file id.

Integrity: a file's sha256 comes from the registry when known (the sha256 the hub publishes);
otherwise it is recorded in `$SEGCLI_HOME/checksums.json` on first download (or import, or first
load) and checked on every later load. Exit codes of a disagreement, always one line naming both
hashes:

* while downloading (`pull`), DownloadError (exit 9): the hub's published sha256 differs from the
  expected one (nothing is downloaded), or the downloaded bytes differ from the expected / published
  sha256 (the download is deleted);
* for a file on this machine (load, `verify`, `import`), WeightsError (exit 6): the file is left
  alone (an import copies nothing) and can be fetched again with `segcli weights pull NAME --force`.

`import` also refuses a file that does not load safely or lacks the keys and shapes of the part it
claims to be (`segcli.weights.contents`), unless its sha256 is the pinned one; `verify` runs the
same check on files without a pinned sha256.

Lookup order for a file: imported copy (`$SEGCLI_HOME/weights/<file-id>/<filename>`), then the
Hugging Face cache (see `segcli.weights.hub` for the locations and offline mode); then the same for
its `fallback` file, if the registry names one (the CLIP ConvNeXt-L `.safetensors` falls back to
the `.bin` with the same weights).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from segcli.errors import DownloadError, InputNotFoundError, UsageError, WeightsError
from segcli.weights import hub

REGISTRY_PATH = Path(__file__).with_name("registry.json")
log = logging.getLogger("segcli.weights")


@dataclass(frozen=True)
class WeightFile:
    id: str
    repo: str
    filename: str
    revision: str = "main"
    sha256: str | None = None
    size_bytes: int | None = None
    size: str | None = None
    license: str | None = None
    description: str = ""
    format: str = ""
    open_clip_model: str | None = None
    open_clip_pretrained: str | None = None
    part: str | None = None  # "head" | "clip": what `import` checks the file's keys and shapes against
    architecture: str | None = None  # head files: the model it belongs to ("convl", "convxxl")
    fallback: str | None = None  # id of the file used instead when this one is not available

    @property
    def url(self) -> str:
        return hub.file_url(self.repo, self.filename, self.revision)

    @property
    def source(self) -> str:
        return f"hf://{self.repo}/{self.filename}"


@dataclass(frozen=True)
class WeightModel:
    name: str
    files: dict[str, str]  # role -> file id
    description: str = ""


@dataclass(frozen=True)
class Registry:
    files: dict[str, WeightFile]
    models: dict[str, WeightModel] = field(default_factory=dict)
    path: Path | None = None

    def names(self) -> list[str]:
        return [*self.models, *self.files]

    def files_of(self, name: str) -> dict[str, WeightFile]:
        """Role -> file of a model, or {file id: file} for a file id."""
        if name in self.models:
            return {role: self.files[fid] for role, fid in self.models[name].files.items()}
        if name in self.files:
            return {name: self.files[name]}
        raise WeightsError(unknown_name_message(name, self.names()))

    def alternatives(self, file: WeightFile) -> list[WeightFile]:
        """`file`, then its fallback files in order."""
        out = [file]
        while out[-1].fallback and out[-1].fallback in self.files and self.files[out[-1].fallback] not in out:
            out.append(self.files[out[-1].fallback])
        return out

    def pull_command(self, name: str) -> str:
        return f"segcli weights pull {name}"


def unknown_name_message(name: str, known: list[str]) -> str:
    return (f"unknown weights name '{name}' (known: {', '.join(known)}; or give a checkpoint file or a model "
            "folder); see: segcli weights list")


def check_name(name: str, registry: Registry | None = None) -> None:
    """WeightsError (exit 6) unless `name` is a model or file of the registry. No network, no files."""
    reg = _registry(registry)
    if name not in reg.models and name not in reg.files:
        raise WeightsError(unknown_name_message(name, reg.names()))


def load_registry(path: str | Path | None = None) -> Registry:
    """Read the registry (`path`, else `$SEGCLI_REGISTRY`, else the packaged registry.json)."""
    path = Path(path or os.environ.get("SEGCLI_REGISTRY") or REGISTRY_PATH)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read weights registry {path}: {exc}") from exc
    known = set(WeightFile.__dataclass_fields__) - {"id"}
    files = {fid: WeightFile(id=fid, **{k: v for k, v in entry.items() if k in known})
             for fid, entry in data.get("files", {}).items()}
    models = {}
    for name, entry in data.get("models", {}).items():
        missing = [fid for fid in entry["files"].values() if fid not in files]
        if missing:
            raise WeightsError(f"weights registry {path}: model {name} names unknown files {missing}")
        models[name] = WeightModel(name=name, files=dict(entry["files"]),
                                   description=entry.get("description", ""))
    for fid, file in files.items():
        if file.fallback is not None and file.fallback not in files:
            raise WeightsError(f"weights registry {path}: file {fid} falls back to unknown file {file.fallback}")
    clash = set(files) & set(models)
    if clash:
        raise WeightsError(f"weights registry {path}: names used for both a model and a file: "
                           f"{sorted(clash)}")
    return Registry(files=files, models=models, path=path)


def _registry(registry: Registry | None) -> Registry:
    return registry if registry is not None else load_registry()


# ---- recorded checksums ------------------------------------------------------------------------

def checksums_path() -> Path:
    return hub.segcli_home() / "checksums.json"


def _read_checksums() -> dict:
    path = checksums_path()
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise WeightsError(f"{path} is not valid JSON; fix or delete it") from None


def _origin(file: WeightFile) -> str:
    """Where the expected sha256 of `file` comes from, for messages."""
    if file.sha256:
        return "the sha256 pinned in segcli's registry"
    return f"the sha256 recorded in {checksums_path()} when it was first downloaded, imported or loaded"


def _record_checksum(file: WeightFile, sha256: str, size: int, source: str) -> None:
    data = _read_checksums()
    data[file.id] = {"sha256": sha256, "size": size, "repo": file.repo, "filename": file.filename,
                     "source": source, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        hub.atomic_write_bytes(checksums_path(), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    except OSError as exc:  # a read-only home must not stop a run; the file is simply not pinned
        log.warning("could not record the sha256 of %s in %s: %s", file.id, checksums_path(), exc)


def expected_sha256(file: WeightFile) -> str | None:
    """The registry's sha256, else the one recorded on first download, else None."""
    if file.sha256:
        return file.sha256.lower()
    recorded = _read_checksums().get(file.id)
    if recorded and recorded.get("repo") == file.repo and recorded.get("filename") == file.filename:
        return recorded["sha256"]
    return None


# ---- local lookup ---------------------------------------------------------------------------

def imported_path(file: WeightFile) -> Path:
    return hub.segcli_home() / "weights" / file.id / file.filename


def local_path(file: WeightFile) -> Path | None:
    """Where the file is on this machine (imported copy first, then the HF cache), or None.
    No network, no hashing."""
    imported = imported_path(file)
    if imported.is_file():
        return imported
    return hub.cached_file(file.repo, file.filename, file.revision)


def find_local(file: WeightFile, registry: Registry | None = None) -> tuple[WeightFile, Path] | None:
    """The first of `file` and its fallbacks that is on this machine, with its path, or None."""
    for candidate in _registry(registry).alternatives(file):
        found = local_path(candidate)
        if found is not None:
            return candidate, found
    return None


# Files verified by this process, by (real path, size, mtime_ns): a second load in the same run
# (e.g. the model, then the text tower from the same CLIP file) does not hash 1.4 GB again.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def _stat_key(path: Path) -> tuple[str, int, int]:
    real = path.resolve()
    stat = real.stat()
    return str(real), stat.st_size, stat.st_mtime_ns


def _check(file: WeightFile, path: Path, name: str) -> str:
    """Hash a present file and compare with the expected sha256 (recording it when unknown)."""
    key = _stat_key(path)
    expected = expected_sha256(file)
    if expected is not None and _VERIFIED.get(key) == expected:
        return expected
    actual = hub.sha256_file(path)
    if expected is None:
        _record_checksum(file, actual, path.stat().st_size, "first load")
    elif actual != expected:
        raise WeightsError(f"checksum mismatch for {file.filename} at {path}: expected sha256 {expected} "
                           f"({_origin(file)}), got {actual}; fetch it again with: segcli weights pull {name} --force")
    _VERIFIED[key] = actual
    return actual


def resolve(name: str, *, check: bool = True, registry: Registry | None = None) -> dict[str, Path]:
    """Local paths of the files of `name` (role -> path for a model, {file id: path} for a file).

    Raises WeightsError("missing weights file X; fetch it with: segcli weights pull NAME") when a
    file is not on this machine. With `check`, every file's sha256 is verified.
    """
    reg = _registry(registry)
    out = {}
    for role, file in reg.files_of(name).items():
        found = find_local(file, reg)
        if found is None:
            raise WeightsError(f"missing weights file {file.filename} ({file.id}); fetch it with: "
                               f"{reg.pull_command(name)}")
        if check:
            _check(*found, name)
        out[role] = found[1]
    return out


def path(name: str, *, check: bool = False, registry: Registry | None = None) -> Path:
    """Local path of a single-file entry (a file id, or a model with one file)."""
    reg = _registry(registry)
    files = reg.files_of(name)
    if len(files) != 1:
        raise UsageError(f"'{name}' is a model of {len(files)} files ({', '.join(files)}); "
                         "use resolve() or name one file")
    return next(iter(resolve(name, check=check, registry=reg).values()))


def is_present(name: str, registry: Registry | None = None) -> dict[str, bool]:
    reg = _registry(registry)
    return {role: find_local(f, reg) is not None for role, f in reg.files_of(name).items()}


# ---- download ---------------------------------------------------------------------------------

def pull(name: str, *, progress: bool = True, force: bool = False, registry: Registry | None = None,
         on_download: Callable[[WeightFile], None] | None = None) -> dict[str, Path]:
    """Fetch the files of `name` into the Hugging Face cache and verify them.

    A file already present (or its fallback) is only verified. Before a download, the hub is asked
    for the file's metadata (short timeout, no retry: an unreachable hub is one DownloadError line
    naming the offline alternatives); a published sha256 that differs from the expected one stops
    there. A downloaded file whose sha256 (or size) differs is deleted; DownloadError names both
    digests. A file the hub does not have is replaced by its registry fallback. Offline mode never
    makes a request: files not cached give WeightsError with the pull command.

    `on_download(file)` is called when a transfer is about to start (the hub has answered), e.g.
    for a "downloading ..." notice that an unreachable hub then never shows.
    """
    reg = _registry(registry)
    out = {}
    for role, file in reg.files_of(name).items():
        present = None if force else find_local(file, reg)
        if present is not None:
            _check(*present, name)
            out[role] = present[1]
            continue
        candidates = reg.alternatives(file)
        for index, candidate in enumerate(candidates):
            try:
                out[role] = _download(candidate, name, reg, progress=progress, force=force,
                                      on_download=on_download)
                break
            except hub.RemoteFileMissing:
                if index == len(candidates) - 1:
                    raise
                log.info("%s is not on the hub: trying %s", candidate.url, candidates[index + 1].url)
    return out


def _download(file: WeightFile, name: str, reg: Registry, *, progress: bool, force: bool,
              on_download: Callable[[WeightFile], None] | None = None) -> Path:
    expected = expected_sha256(file)
    note = ""
    if expected is not None and not file.sha256:
        note = f" (remove its '{file.id}' entry from {checksums_path()} if the upstream file changed on purpose)"
    remote = None
    if not hub.is_offline():
        remote = hub.remote_file(file.repo, file.filename, file.revision, pull_hint=reg.pull_command(name))
        if expected is not None and remote.sha256 is not None and remote.sha256 != expected:
            raise DownloadError(f"{file.url} has sha256 {remote.sha256} on the hub, but {_origin(file)} is "
                                f"{expected}; nothing was downloaded{note}")
        if on_download is not None:
            on_download(file)
    fetched = hub.download(file.repo, file.filename, file.revision, progress=progress, force=force,
                           pull_hint=reg.pull_command(name), checked=remote is not None)
    actual = hub.sha256_file(fetched)
    size = fetched.stat().st_size
    problem = None
    if expected is not None and actual != expected:
        problem = f"checksum mismatch: expected sha256 {expected} ({_origin(file)}), got {actual}"
    elif remote is not None and remote.sha256 is not None and actual != remote.sha256:
        problem = f"checksum mismatch: the hub publishes sha256 {remote.sha256}, the downloaded bytes have {actual}"
    elif file.size_bytes is not None and size != file.size_bytes:
        problem = f"size mismatch: expected {file.size_bytes} bytes, got {size}"
    if problem:
        hub.remove_cached(fetched)
        raise DownloadError(f"{problem} for {file.url}; the downloaded file was removed{note}")
    if expected is None:
        _record_checksum(file, actual, size, "download")
    if force:  # the hub's copy replaces an imported one
        imported_path(file).unlink(missing_ok=True)
    return fetched


# ---- verification -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verification:
    file_id: str
    status: str  # "ok", "recorded" (no checksum known before: recorded now), "missing", "mismatch", "invalid"
    path: Path | None
    sha256: str | None
    expected: str | None
    problem: str | None = None  # one line: why the file is "mismatch" or "invalid"


def verify(name: str | None = None, *, registry: Registry | None = None) -> list[Verification]:
    """Hash every present file of `name` (all registry files when None) against its expected
    sha256; a file whose sha256 is not pinned in the registry must also hold the keys and shapes
    of its part ("invalid" otherwise). For a model, each role's present file is verified (the
    file itself or its fallback). Missing files are reported, not fetched."""
    from segcli.weights import contents

    reg = _registry(registry)
    if name is None:
        files = list(reg.files.values())
    else:
        files = []
        for file in reg.files_of(name).values():
            found = find_local(file, reg)
            files.append(found[0] if found else file)
    results = []
    for file in dict.fromkeys(files):
        found = local_path(file)
        expected = expected_sha256(file)
        if found is None:
            results.append(Verification(file.id, "missing", None, None, expected))
            continue
        actual = hub.sha256_file(found)
        problem = None
        if file.sha256:
            status = "ok" if actual == expected else "mismatch"
        else:
            try:
                contents.check_contents(file, found)
            except WeightsError as exc:
                status, problem = "invalid", str(exc)
            else:
                if expected is None:
                    _record_checksum(file, actual, found.stat().st_size, "verify")
                    status = "recorded"
                else:
                    status = "ok" if actual == expected else "mismatch"
        if status == "mismatch":
            problem = (f"checksum mismatch for {file.id} at {found}: expected sha256 {expected} ({_origin(file)}), "
                       f"got {actual}; fetch it again with: segcli weights pull {file.id} --force")
        results.append(Verification(file.id, status, found, actual, expected, problem))
    return results


# ---- import -------------------------------------------------------------------------------------

def import_file(source: str | Path, name: str | None = None, *,
                registry: Registry | None = None) -> tuple[str, Path]:
    """Copy a user-supplied file into `$SEGCLI_HOME/weights/<file-id>/` after hashing it.

    The registry entry is `name` (a file id, or a model whose files include one with this file
    name) or, when None, the entry whose known sha256 equals the file's, else the only entry with
    the same file name. WeightsError, copying nothing, when the registry pins a different sha256
    (or one was recorded for the entry before), or, for an entry without a pinned sha256, when the
    file does not load safely in its format or lacks the keys and shapes of its part
    (`segcli.weights.contents.check_contents`). Returns (file id, destination).
    """
    from segcli.weights import contents

    reg = _registry(registry)
    source = Path(source)
    if not source.is_file():
        raise InputNotFoundError(f"weights file not found: {source}")
    actual = hub.sha256_file(source)
    file = _match_import(reg, source, actual, name)
    expected = expected_sha256(file)
    if file.sha256 and actual != expected:
        raise WeightsError(f"{source} is not the released {file.filename} ({file.id}): its sha256 is {actual}, "
                           f"the registry pins {expected}; nothing was imported")
    if not file.sha256:  # a pinned sha256 that matches proves the contents already
        try:
            contents.check_contents(file, source)
        except WeightsError as exc:
            raise WeightsError(f"{exc}; nothing was imported") from None
    if expected is not None and expected != actual:
        raise WeightsError(f"checksum mismatch for {source} as {file.id}: expected sha256 {expected} "
                           f"({_origin(file)}), got {actual}; nothing was imported")
    dest = imported_path(file)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        if hub.sha256_file(tmp) != actual:
            raise WeightsError(f"copy of {source} changed while importing; nothing was imported")
        os.chmod(tmp, hub.new_file_mode())
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    if expected is None:
        _record_checksum(file, actual, dest.stat().st_size, f"import of {source}")
    return file.id, dest


def _match_import(reg: Registry, source: Path, sha256: str, name: str | None) -> WeightFile:
    if name is not None:
        named = list(reg.files_of(name).values())
        pool = list(dict.fromkeys(alt for f in named for alt in reg.alternatives(f)))
        by_hash = [f for f in pool if expected_sha256(f) == sha256]
        by_name = [f for f in pool if f.filename == source.name]
        for picked in (by_hash, by_name):
            if len(picked) == 1:
                return picked[0]
        if len(named) == 1:
            return named[0]
        raise UsageError(f"'{name}' has several files; name the file id instead "
                         f"({', '.join(f.id for f in pool)})")
    by_hash = [f for f in reg.files.values() if expected_sha256(f) == sha256]
    if len(by_hash) == 1:
        return by_hash[0]
    by_name = [f for f in reg.files.values() if f.filename == source.name]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        raise UsageError(f"several registry files are called {source.name} "
                         f"({', '.join(f.id for f in by_name)}); say which with --name")
    raise UsageError(f"{source.name} matches no registry file by name or checksum; say which with --name "
                     f"(one of: {', '.join(reg.files)})")


__all__ = [
    "Registry", "Verification", "WeightFile", "WeightModel", "check_name", "expected_sha256", "find_local",
    "import_file", "is_present", "load_registry", "local_path", "path", "pull", "resolve", "verify",
]
