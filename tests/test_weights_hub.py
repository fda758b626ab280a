"""`segcli weights pull` against a local imitation of the Hugging Face Hub (never the internet).

The imitation answers `HEAD/GET /{org}/{repo}/resolve/{revision}/{filename}` the way
huggingface_hub's `hf_hub_download` needs: `X-Repo-Commit` (commit of the revision), `ETag`
(here the sha256, as the Hub does for LFS files), `Content-Length`, and `Range: bytes=N-` on GET
(206 + `Content-Range`). It can drop the connection half-way through the first GET of a file,
publish a wrong sha256 (`etag`), or answer with an error status (`status`).

An unreachable hub is imitated on loopback too: a closed port (connection refused), a listening
socket whose accept queue is full (the connection never opens: connect timeout), and one that
accepts but never answers (read timeout).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segcli import weights as W
from segcli.commands.weights import app as weights_app
from segcli.errors import DownloadError, WeightsError
from segcli.weights import hub as H

REPO = Path(__file__).resolve().parents[1]

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PATH_RE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>[^?]+)")


class FakeHub:
    def __init__(self):
        self.files: dict[tuple[str, str], bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.drop_first_get: set[tuple[str, str]] = set()
        self._dropped: set[tuple[str, str]] = set()
        self.etag: dict[tuple[str, str], str] = {}  # a published sha256 other than the bytes' own
        self.status: dict[tuple[str, str], int] = {}  # answer this status instead
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _lookup(self):
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                match = PATH_RE.match(self.path)
                key = (match["repo"], match["file"]) if match else None
                if key in hub.status:
                    self.send_response(hub.status[key])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None, None
                if key not in hub.files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None, None
                return key, hub.files[key]

            def _common_headers(self, data):
                self.send_header("X-Repo-Commit", COMMIT)
                key = PATH_RE.match(self.path)
                etag = hub.etag.get((key["repo"], key["file"])) or hashlib.sha256(data).hexdigest()
                self.send_header("ETag", '"%s"' % etag)
                self.send_header("Accept-Ranges", "bytes")

            def do_HEAD(self):
                key, data = self._lookup()
                if key is None:
                    return
                self.send_response(200)
                self._common_headers(data)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()

            def do_GET(self):
                key, data = self._lookup()
                if key is None:
                    return
                start = 0
                ranged = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
                if ranged:
                    start = int(ranged[1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self._common_headers(data)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if key in hub.drop_first_get and key not in hub._dropped:
                    hub._dropped.add(key)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return  # connection closes with the body incomplete
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def count(self, method: str | None = None) -> int:
        return sum(1 for m, _, _ in self.requests if method in (None, m))


HEAD_BYTES = bytes(range(256)) * 600  # 153.6 kB
CLIP_BYTES = b"clip weights " * 20000  # 260 kB


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    server = FakeHub()
    server.files[("test-org/omg", "head.pth")] = HEAD_BYTES
    server.files[("test-org/clip", "open_clip_pytorch_model.bin")] = CLIP_BYTES
    server.thread.start()

    registry = {
        "files": {
            "test-head": {"repo": "test-org/omg", "filename": "head.pth", "license": "MIT", "size": "154 kB",
                          "sha256": hashlib.sha256(HEAD_BYTES).hexdigest(), "size_bytes": len(HEAD_BYTES)},
            "test-clip": {"repo": "test-org/clip", "filename": "open_clip_pytorch_model.bin",
                          "license": "MIT", "sha256": None, "size_bytes": None,
                          "open_clip_model": "convnext_large_d_320"},
            "test-bad": {"repo": "test-org/omg", "filename": "head.pth", "license": "MIT",
                         "sha256": "0" * 64},
        },
        "models": {"test-model": {"files": {"head": "test-head", "clip": "test-clip"}}},
    }
    registry_path = tmp_path / "registry.json"
    registry_path.write_text(json.dumps(registry))

    monkeypatch.setenv("SEGCLI_REGISTRY", str(registry_path))
    monkeypatch.setenv("SEGCLI_HOME", str(tmp_path / "segcli"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "SEGCLI_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub read these at import time; segcli passes endpoint/cache explicitly, but the
    # library's own offline switch must also be off for the online tests.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    close_session()
    yield server
    close_session()
    server.server.shutdown()
    server.server.server_close()


def _blobs(tmp_path):
    return [p for p in (tmp_path / "hf" / "hub").rglob("*") if p.is_file() and "blobs" in p.parts]


def test_pull_downloads_and_verifies(hub, tmp_path):
    started = []
    paths = W.pull("test-model", progress=False, on_download=lambda f: started.append(f.id))
    assert started == ["test-head", "test-clip"]
    assert set(paths) == {"head", "clip"}
    assert paths["head"].read_bytes() == HEAD_BYTES
    assert paths["clip"].read_bytes() == CLIP_BYTES
    assert str(paths["head"]).startswith(str(tmp_path / "hf" / "hub"))
    # unknown sha256 of the CLIP file: recorded on first download...
    recorded = json.loads((tmp_path / "segcli" / "checksums.json").read_text())
    assert recorded["test-clip"]["sha256"] == hashlib.sha256(CLIP_BYTES).hexdigest()
    assert "test-head" not in recorded  # known in the registry: nothing to record
    # ...and the files are found locally afterwards, with no further request
    before = hub.count()
    assert W.resolve("test-model") == paths
    assert W.pull("test-model", progress=False) == paths
    assert hub.count() == before
    # ...and checked on every later load
    paths["clip"].resolve().write_bytes(b"tampered")
    with pytest.raises(WeightsError, match="checksum mismatch .* expected sha256"):
        W.resolve("test-model")


def test_pull_resumes_after_interrupted_transfer(hub, monkeypatch):
    from huggingface_hub import constants

    # huggingface_hub keeps what it has received in chunks of DOWNLOAD_CHUNK_SIZE (10 MB); make
    # chunks small so that part of the interrupted body is kept and the retry asks for the rest.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    # and it waits a fixed second before resuming (file_download's only use of its `time`)
    from types import SimpleNamespace

    from huggingface_hub import file_download

    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=lambda seconds: None))
    key = ("test-org/omg", "head.pth")
    hub.drop_first_get.add(key)
    path = W.pull("test-head", progress=False)["test-head"]
    assert path.read_bytes() == HEAD_BYTES
    gets = [(p, r) for m, p, r in hub.requests if m == "GET" and p.endswith("/head.pth")]
    assert len(gets) == 2
    assert gets[0][1] is None
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", gets[1][1])[1])  # resumed, not restarted
    assert 0 < resumed_at <= len(HEAD_BYTES) // 2


def test_published_sha256_that_differs_from_the_registry_stops_before_downloading(hub, tmp_path):
    with pytest.raises(DownloadError) as info:
        W.pull("test-bad", progress=False)
    message = str(info.value)
    assert info.value.exit_code == 9 and "\n" not in message
    assert f"has sha256 {hashlib.sha256(HEAD_BYTES).hexdigest()} on the hub" in message
    assert "pinned in segcli's registry is " + "0" * 64 in message
    assert "nothing was downloaded" in message
    assert hub.count("GET") == 0
    assert _blobs(tmp_path) == []
    with pytest.raises(WeightsError, match="missing weights file head.pth"):
        W.resolve("test-bad")


def test_downloaded_bytes_that_differ_are_rejected_and_removed(hub, tmp_path):
    # the hub publishes the right sha256 but serves other bytes (a corrupting proxy, say)
    hub.files[("test-org/omg", "head.pth")] = HEAD_BYTES[:-1] + b"!"
    hub.etag[("test-org/omg", "head.pth")] = hashlib.sha256(HEAD_BYTES).hexdigest()
    with pytest.raises(DownloadError) as info:
        W.pull("test-head", progress=False)
    message = str(info.value)
    assert "expected sha256 " + hashlib.sha256(HEAD_BYTES).hexdigest() in message
    assert "got " + hashlib.sha256(HEAD_BYTES[:-1] + b"!").hexdigest() in message
    assert "removed" in message and "\n" not in message
    assert _blobs(tmp_path) == []
    assert not [p for p in (tmp_path / "hf").rglob("*") if p.is_symlink() or p.name.endswith(".incomplete")]
    # unpinned file: the hub's published sha256 is what the bytes must have
    hub.etag[("test-org/clip", "open_clip_pytorch_model.bin")] = "1" * 64
    with pytest.raises(DownloadError, match="the hub publishes sha256 1{64}, the downloaded bytes have"):
        W.pull("test-clip", progress=False)
    assert _blobs(tmp_path) == []
    assert not (tmp_path / "segcli" / "checksums.json").exists()  # nothing recorded for a bad download


def test_offline_mode_never_contacts_server(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        W.pull("test-model", progress=False)
    assert "segcli weights pull test-model" in str(info.value)
    assert "offline" in str(info.value)
    with pytest.raises(WeightsError, match="missing weights file head.pth .*segcli weights pull test-model"):
        W.resolve("test-model")
    assert hub.count() == 0
    # once the files are cached, offline pull/resolve work without any request
    monkeypatch.delenv("HF_HUB_OFFLINE")
    W.pull("test-model", progress=False)
    requests = hub.count()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert set(W.pull("test-model", progress=False)) == {"head", "clip"}
    assert hub.count() == requests


def test_missing_remote_file_is_a_download_error(hub):
    del hub.files[("test-org/clip", "open_clip_pytorch_model.bin")]
    with pytest.raises(DownloadError, match="open_clip_pytorch_model.bin"):
        W.pull("test-clip", progress=False)


def test_cli_list_pull_path(hub, tmp_path):
    runner = CliRunner()
    result = runner.invoke(weights_app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["test-model"]["kind"] == "model" and rows["test-model"]["present"] == "no"
    assert rows["test-head"]["files"] == ["head.pth"] and rows["test-head"]["license"] == "MIT"
    assert rows["test-clip"]["source"] == ["hf://test-org/clip/open_clip_pytorch_model.bin"]

    result = runner.invoke(weights_app, ["list"])
    assert result.exit_code == 0 and "test-model" in result.stdout and "licence" in result.stdout

    result = runner.invoke(weights_app, ["pull", "test-head", "-q"])
    assert result.exit_code == 0, result.output
    assert "fetched: test-head" in result.stderr and result.stdout == ""
    rows = {r["name"]: r for r in json.loads(runner.invoke(weights_app, ["list", "--json"]).stdout)}
    assert rows["test-head"]["present"] == "yes" and rows["test-model"]["present"] == "partial"

    result = runner.invoke(weights_app, ["path", "test-head"])
    assert result.exit_code == 0 and result.stdout.strip().endswith("head.pth")
    result = runner.invoke(weights_app, ["path", "test-model"])
    assert isinstance(result.exception, WeightsError)
    assert "segcli weights pull test-model" in str(result.exception)

    result = runner.invoke(weights_app, ["verify", "test-head"])
    assert result.exit_code == 0 and "ok" in result.stdout


def test_recorded_checksum_guards_later_downloads(hub, tmp_path):
    import shutil

    first = W.pull("test-clip", progress=False)["test-clip"]
    assert first.read_bytes() == CLIP_BYTES
    shutil.rmtree(tmp_path / "hf")  # the cache is gone, and upstream now serves different bytes
    hub.files[("test-org/clip", "open_clip_pytorch_model.bin")] = b"changed upstream"
    with pytest.raises(DownloadError) as info:
        W.pull("test-clip", progress=False)
    message = str(info.value)
    assert hashlib.sha256(CLIP_BYTES).hexdigest() in message and "checksums.json" in message
    assert _blobs(tmp_path) == []


def test_fallback_file_is_downloaded_when_the_hub_lacks_the_preferred_one(hub, tmp_path, monkeypatch):
    registry = json.loads(Path(os.environ["SEGCLI_REGISTRY"]).read_text())
    registry["files"]["test-st"] = {"repo": "test-org/clip", "filename": "open_clip_pytorch_model.safetensors",
                                    "fallback": "test-clip"}
    registry["models"]["test-model"]["files"]["clip"] = "test-st"
    Path(os.environ["SEGCLI_REGISTRY"]).write_text(json.dumps(registry))
    paths = W.pull("test-model", progress=False)
    assert paths["clip"].name == "open_clip_pytorch_model.bin" and paths["clip"].read_bytes() == CLIP_BYTES
    assert W.resolve("test-model") == paths
    assert W.is_present("test-st") == {"test-st": True}
    # once the hub has it, a forced pull takes the preferred file
    hub.files[("test-org/clip", "open_clip_pytorch_model.safetensors")] = b"safetensors bytes"
    assert W.pull("test-st", progress=False, force=True)["test-st"].name == "open_clip_pytorch_model.safetensors"
    assert W.resolve("test-model")["clip"].name == "open_clip_pytorch_model.safetensors"


# ---- an unreachable hub -------------------------------------------------------------------------

ALTERNATIVES = ("segcli weights import FILE", "--weights DIR", "HF_HUB_OFFLINE=1")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def unreachable(hub, monkeypatch):
    """The hub fixture's registry and cache, with HF_ENDPOINT pointing at a closed loopback port."""
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    return hub


def assert_unreachable_message(message: str):
    assert "\n" not in message
    assert message.startswith("cannot reach the Hugging Face Hub to download http://127.0.0.1:")
    for alternative in ALTERNATIVES:
        assert alternative in message


def test_closed_port_fails_at_once_with_one_line(unreachable, capfd, caplog):
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        W.pull("test-model", progress=False, on_download=lambda f: pytest.fail("no download may start"))
    elapsed = time.monotonic() - start
    assert elapsed < 2.0, f"took {elapsed:.1f} s"
    assert info.value.exit_code == 9
    assert_unreachable_message(str(info.value))
    assert "(Connection refused)" in str(info.value)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""  # no retry warnings of huggingface_hub
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")]


def test_connect_timeout_is_short(hub, monkeypatch):
    """A hub whose connections never open (accept queue full: the SYN is dropped) fails after
    CONNECT_TIMEOUT, not after huggingface_hub's minute of retries."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(H, "CONNECT_TIMEOUT", 0.2)
    try:
        start = time.monotonic()
        with pytest.raises(DownloadError) as info:
            W.pull("test-head", progress=False)
        elapsed = time.monotonic() - start
    finally:
        for sock in (*fillers, server):
            sock.close()
    assert elapsed < 3.0, f"took {elapsed:.1f} s"
    assert_unreachable_message(str(info.value))
    assert "within 0.2 s" in str(info.value)


def test_dns_that_never_answers_is_cut_short(hub, monkeypatch):
    """The system resolver has no timeout of its own: a lookup that hangs stops after CONNECT_TIMEOUT."""
    real = socket.getaddrinfo
    released = threading.Event()

    def hanging(host, *args, **kwargs):
        if host == "hub.example.invalid":
            released.wait(10)
            raise socket.gaierror(-3, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.example.invalid")
    monkeypatch.setattr(H, "CONNECT_TIMEOUT", 0.2)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    try:
        start = time.monotonic()
        with pytest.raises(DownloadError) as info:
            W.pull("test-head", progress=False)
        elapsed = time.monotonic() - start
    finally:
        released.set()
    assert elapsed < 3.0, f"took {elapsed:.1f} s"
    assert "could not resolve hub.example.invalid within 0.2 s" in str(info.value)
    assert "segcli weights import FILE" in str(info.value) and hub.count() == 0


def test_silent_server_times_out(hub, monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # the kernel completes the handshakes; nobody ever answers
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(H, "READ_TIMEOUT", 0.2)
    try:
        start = time.monotonic()
        with pytest.raises(DownloadError) as info:
            W.pull("test-head", progress=False)
        elapsed = time.monotonic() - start
    finally:
        server.close()
    assert elapsed < 3.0, f"took {elapsed:.1f} s"
    assert_unreachable_message(str(info.value))
    assert "get an answer from" in str(info.value)


def test_server_error_is_not_retried(hub, capfd):
    hub.status[("test-org/omg", "head.pth")] = 503
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        W.pull("test-head", progress=False)
    assert time.monotonic() - start < 2.0
    assert "HTTP 503" in str(info.value) and "segcli weights import FILE" in str(info.value)
    assert hub.count() == 1
    assert capfd.readouterr().err == ""


def test_offline_alternative_gives_the_pull_message(unreachable, monkeypatch):
    """HF_HUB_OFFLINE=1, the third alternative: no request, the missing file is named."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="missing weights file head.pth .*segcli weights pull test-model"):
        W.resolve("test-model")
    with pytest.raises(WeightsError, match="offline mode is on .*segcli weights pull test-model once online"):
        W.pull("test-model", progress=False)


def _segcli(args, env_overrides, tmp_path, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "SEGCLI_"))}
    env.update(env_overrides)
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "segcli", *args], capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=timeout)
    return result, time.monotonic() - start


def test_cli_pull_with_unreachable_hub_is_one_line_exit_9(unreachable, tmp_path):
    env = {k: os.environ[k] for k in ("SEGCLI_REGISTRY", "SEGCLI_HOME", "HF_HOME", "HF_ENDPOINT", "NO_PROXY")}
    result, elapsed = _segcli(["weights", "pull", "test-model"], env, tmp_path)
    assert result.returncode == 9, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("segcli: error: ")
    assert_unreachable_message(lines[0].removeprefix("segcli: error: "))
    assert elapsed < 15, f"took {elapsed:.1f} s"
