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

Unreachable hub: before any download, one HEAD request (`remote_file`) with a short connect timeout
(`CONNECT_TIMEOUT`) and no retry asks the hub for the file's metadata (its sha256 for LFS files).
When it cannot be answered, the download stops at once with one DownloadError line naming what
to do without network (`OFFLINE_HELP`); huggingface_hub's own retry warnings are silenced
(`quiet_hub_logging`; SEGCLI_DEBUG=1 shows them).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from segcli.errors import DownloadError, WeightsError

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "true", "yes", "on"}

CONNECT_TIMEOUT = 3.0  # seconds to open a connection to the hub (then: unreachable)
READ_TIMEOUT = 10.0  # seconds to wait for the hub's answer to the metadata request
OFFLINE_HELP = ("without network: `segcli weights import FILE` stores a copy you already have, "
                "`--weights DIR` runs a local model folder or checkpoint, and HF_HUB_OFFLINE=1 uses only "
                "files already downloaded")
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


@contextmanager
def quiet_hub_logging():
    """Silence huggingface_hub's own warnings (retries, "Retrying in 1s"...) for the duration: segcli
    reports a failure itself, in one line. SEGCLI_DEBUG=1 keeps them."""
    import huggingface_hub  # noqa: F401 - its loggers are configured on import

    logger = logging.getLogger("huggingface_hub")
    if os.environ.get("SEGCLI_DEBUG"):
        yield
        return
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _httpx():
    try:
        import httpx2 as httpx  # what huggingface_hub 2.x uses
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx
    return httpx


def _timeout():
    return _httpx().Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)


def _resolve_quickly(url: str) -> None:
    """Look the hub's host name up within CONNECT_TIMEOUT (the system resolver has no timeout of its
    own: a network that drops DNS queries would hold the request for the resolver's 10+ seconds).
    Skipped for IP addresses and when a proxy resolves the name instead."""
    import socket
    import threading
    import urllib.request
    from ipaddress import ip_address
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return
    try:
        ip_address(host)
        return
    except ValueError:
        pass
    proxies = urllib.request.getproxies()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return
    outcome: dict = {}

    def lookup():
        try:
            socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
        except OSError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=lookup, name="segcli-dns", daemon=True)
    worker.start()
    worker.join(CONNECT_TIMEOUT)
    if worker.is_alive():
        raise unreachable(url, f"could not resolve {host} within {CONNECT_TIMEOUT:g} s")
    if "error" in outcome:
        raise unreachable(url, _reason(outcome["error"]))


def unreachable(url: str, reason: str) -> DownloadError:
    """The one-line error of a hub that cannot be reached, with the ways to go on without it."""
    return DownloadError(f"cannot reach the Hugging Face Hub to download {url} ({reason}); {OFFLINE_HELP}")


def _offline_error(filename: str, hint: str) -> WeightsError:
    return WeightsError(f"missing weights file {filename} and offline mode is on (HF_HUB_OFFLINE=1){hint} once online")


class RemoteFileMissing(DownloadError):
    """The hub has no such file (a registry file may then fall back to another one)."""


@dataclass(frozen=True)
class RemoteFile:
    """What the hub says about a file before it is downloaded."""

    url: str
    sha256: str | None  # the sha256 the hub publishes (the etag of an LFS file); None for small git files
    size: int | None
    commit: str | None


def remote_file(repo: str, filename: str, revision: str = "main", *, pull_hint: str | None = None) -> RemoteFile:
    """Ask the hub for a file's metadata: one HEAD request, CONNECT_TIMEOUT to connect, no retry.

    Raises DownloadError (one line, naming the offline alternatives) when the hub cannot be reached
    or answers with a server error, DownloadError for a missing repository / revision / file, and
    WeightsError in offline mode (no request is made then)."""
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.errors import (
        EntryNotFoundError,
        FileMetadataError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    url = file_url(repo, filename, revision)
    hint = f"; fetch it with: {pull_hint}" if pull_hint else ""
    if is_offline():
        raise _offline_error(filename, hint)
    httpx = _httpx()
    _resolve_quickly(url)
    try:
        with quiet_hub_logging():
            meta = get_hf_file_metadata(url, timeout=_timeout(), endpoint=hf_endpoint(), retry_on_errors=False)
    except OfflineModeIsEnabled as exc:
        raise _offline_error(filename, hint) from exc
    except httpx.TimeoutException as exc:
        phase = "connect to" if isinstance(exc, httpx.ConnectTimeout) else "get an answer from"
        limit = CONNECT_TIMEOUT if isinstance(exc, httpx.ConnectTimeout) else READ_TIMEOUT
        raise unreachable(url, f"could not {phase} {hf_endpoint()} within {limit:g} s") from None
    except httpx.TransportError as exc:  # refused, DNS failure, proxy, TLS, dropped connection
        raise unreachable(url, _reason(exc)) from None
    except RepositoryNotFoundError:
        raise DownloadError(f"cannot download {url}: repository {repo} not found or not accessible") from None
    except RevisionNotFoundError:
        raise DownloadError(f"cannot download {url}: revision {revision} not found") from None
    except EntryNotFoundError:
        raise RemoteFileMissing(f"cannot download {url}: no such file in {repo}") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and (status >= 500 or status in (408, 429)):
            raise unreachable(url, f"the hub answered HTTP {status}") from None
        raise DownloadError(f"cannot download {url}: {_reason(exc)}") from None
    except FileMetadataError as exc:
        raise DownloadError(f"cannot download {url}: {hf_endpoint()} does not answer like a Hugging Face Hub "
                            f"({_reason(exc)}); {OFFLINE_HELP}") from None
    except OSError as exc:
        raise unreachable(url, _reason(exc)) from None
    etag = (meta.etag or "").lower()
    return RemoteFile(url=url, sha256=etag if _SHA256.fullmatch(etag) else None, size=meta.size,
                      commit=meta.commit_hash)


def download(repo: str, filename: str, revision: str = "main", *, progress: bool = True,
             force: bool = False, pull_hint: str | None = None, checked: bool = False) -> Path:
    """Fetch one file into the Hugging Face cache (a no-op when it is already there) and return
    its local path. Offline: returns the cached file or raises WeightsError without any request.

    Online, the hub is first asked for the file's metadata (`remote_file`: short timeout, no retry)
    unless the caller did that already (`checked=True`), so an unreachable hub fails at once."""
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
    if not offline and not checked:
        remote_file(repo, filename, revision, pull_hint=pull_hint)
    try:
        with quiet_hub_logging():
            path = hf_hub_download(
                repo, filename, revision=revision, cache_dir=str(hf_cache_dir()), endpoint=hf_endpoint(),
                local_files_only=offline, force_download=force and not offline, etag_timeout=_timeout(),
                tqdm_class=None if progress else _quiet_tqdm(),
            )
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as exc:
        if offline or isinstance(exc, OfflineModeIsEnabled):
            raise _offline_error(filename, hint) from exc
        raise unreachable(url, _reason(exc)) from None
    except RepositoryNotFoundError as exc:
        raise DownloadError(f"cannot download {url}: repository {repo} not found or not accessible") from exc
    except RevisionNotFoundError as exc:
        raise DownloadError(f"cannot download {url}: revision {revision} not found") from exc
    except EntryNotFoundError as exc:
        raise RemoteFileMissing(f"cannot download {url}: no such file in {repo}") from exc
    except HfHubHTTPError as exc:
        raise DownloadError(f"cannot download {url}: {_reason(exc)}") from exc
    except (OSError, ValueError) as exc:  # connection drops past the retries, size mismatch, disk full
        raise DownloadError(f"cannot download {url}: {_reason(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - transport errors of the HTTP client past its retries
        if isinstance(exc, _httpx().TransportError):
            raise unreachable(url, _reason(exc)) from None
        raise
    return Path(path)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    return re.sub(r"^\[Errno -?\d+\] ", "", text[0]).strip("'\" ")


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
