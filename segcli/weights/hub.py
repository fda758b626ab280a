"""Download plumbing: where segcli keeps its files, Hugging Face Hub downloads, sha256.

Locations (all read from the environment at call time, never cached at import):

* `SEGCLI_HOME` (default `~/.cache/segcli`): `checksums.json`, imported weight files
  (`weights/<file-id>/<filename>`), the class-embedding cache (`cache/embeddings/`).
* Hugging Face cache for pulled files: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
  `$SEGCLI_HOME/hub` when `SEGCLI_HOME` is set, else huggingface_hub's default
  (`~/.cache/huggingface/hub`, shared with every other Hugging Face tool).
* Endpoint: `HF_ENDPOINT` (default https://huggingface.co).
* Offline: `HF_HUB_OFFLINE=1` (or `SEGCLI_OFFLINE=1`): no request is ever made; only files already
  in the cache are found.

huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE / HF_HOME once, when it is imported; passing
`endpoint=`, `cache_dir=` and `local_files_only=` explicitly on every call makes segcli follow the
environment of the moment instead.

Resuming: huggingface_hub (2.x) resumes a transfer that breaks mid-way inside one download call
(HTTP Range, up to 5 retries); a download interrupted by killing the process starts again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from segcli.errors import DownloadError, WeightsError

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "true", "yes", "on"}


def segcli_home() -> Path:
    return Path(os.environ.get("SEGCLI_HOME") or "~/.cache/segcli").expanduser()


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    if os.environ.get("SEGCLI_HOME"):
        return segcli_home() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_offline() -> bool:
    if any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "SEGCLI_OFFLINE")):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def new_file_mode() -> int:
    """Permission bits of a newly created regular file under the current umask (mkstemp uses 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask



def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a small file through a temp file + rename, so readers never see half of it."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

def file_url(repo: str, filename: str, revision: str = "main") -> str:
    return f"{hf_endpoint()}/{repo}/resolve/{revision}/{filename}"


def sha256_file(path: str | Path, chunk_size: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def cached_file(repo: str, filename: str, revision: str = "main") -> Path | None:
    """The file in the Hugging Face cache, or None. Never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=str(hf_cache_dir()), revision=revision)
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    return None


def _quiet_tqdm():
    from huggingface_hub.utils import tqdm as hf_tqdm

    class QuietTqdm(hf_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietTqdm


def download(repo: str, filename: str, revision: str = "main", *, progress: bool = True,
             force: bool = False, pull_hint: str | None = None) -> Path:
    """Fetch one file into the Hugging Face cache (a no-op when it is already there) and return
    its local path. Offline: returns the cached file or raises WeightsError without any request."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    url = file_url(repo, filename, revision)
    offline = is_offline()
    hint = f"; fetch it with: {pull_hint}" if pull_hint else ""
    try:
        path = hf_hub_download(
            repo, filename, revision=revision, cache_dir=str(hf_cache_dir()), endpoint=hf_endpoint(),
            local_files_only=offline, force_download=force and not offline,
            tqdm_class=None if progress else _quiet_tqdm(),
        )
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as exc:
        if offline or isinstance(exc, OfflineModeIsEnabled):
            raise WeightsError(f"missing weights file {filename} and offline mode is on (HF_HUB_OFFLINE=1)"
                               f"{hint} once online") from exc
        raise DownloadError(f"cannot download {url}: the server could not be reached "
                            f"({_reason(exc)})") from exc
    except RepositoryNotFoundError as exc:
        raise DownloadError(f"cannot download {url}: repository {repo} not found or not accessible") from exc
    except RevisionNotFoundError as exc:
        raise DownloadError(f"cannot download {url}: revision {revision} not found") from exc
    except EntryNotFoundError as exc:
        raise DownloadError(f"cannot download {url}: no such file in {repo}") from exc
    except HfHubHTTPError as exc:
        raise DownloadError(f"cannot download {url}: {_reason(exc)}") from exc
    except (OSError, ValueError) as exc:  # connection drops past the retries, size mismatch, disk full
        raise DownloadError(f"cannot download {url}: {_reason(exc)}") from exc
    return Path(path)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def remove_cached(path: str | Path) -> None:
    """Delete a file fetched into the Hugging Face cache: the snapshot entry and its blob."""
    path = Path(path)
    target = path.resolve()
    for item in (path, target):
        try:
            if item.is_symlink() or item.exists():
                item.unlink()
        except FileNotFoundError:
            pass
