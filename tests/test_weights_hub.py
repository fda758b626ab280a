"""`segcli weights pull` against a local imitation of the Hugging Face Hub (never the internet).

The imitation answers `HEAD/GET /{org}/{repo}/resolve/{revision}/{filename}` the way
huggingface_hub's `hf_hub_download` needs: `X-Repo-Commit` (commit of the revision), `ETag`
(here the sha256, as the Hub does for LFS files), `Content-Length`, and `Range: bytes=N-` on GET
(206 + `Content-Range`). It can drop the connection half-way through the first GET of a file.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from segcli import weights as W
from segcli.commands.weights import app as weights_app
from segcli.errors import DownloadError, WeightsError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PATH_RE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>[^?]+)")


class FakeHub:
    def __init__(self):
        self.files: dict[tuple[str, str], bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.drop_first_get: set[tuple[str, str]] = set()
        self._dropped: set[tuple[str, str]] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _lookup(self):
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                match = PATH_RE.match(self.path)
                key = (match["repo"], match["file"]) if match else None
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
                self.send_header("ETag", '"%s"' % hashlib.sha256(data).hexdigest())
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
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

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
    paths = W.pull("test-model", progress=False)
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
    key = ("test-org/omg", "head.pth")
    hub.drop_first_get.add(key)
    path = W.pull("test-head", progress=False)["test-head"]
    assert path.read_bytes() == HEAD_BYTES
    gets = [(p, r) for m, p, r in hub.requests if m == "GET" and p.endswith("/head.pth")]
    assert len(gets) == 2
    assert gets[0][1] is None
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", gets[1][1])[1])  # resumed, not restarted
    assert 0 < resumed_at <= len(HEAD_BYTES) // 2


def test_checksum_mismatch_rejects_and_removes(hub, tmp_path):
    with pytest.raises(DownloadError) as info:
        W.pull("test-bad", progress=False)
    message = str(info.value)
    assert "expected sha256 " + "0" * 64 in message
    assert "got " + hashlib.sha256(HEAD_BYTES).hexdigest() in message
    assert "removed" in message
    assert _blobs(tmp_path) == []
    assert not [p for p in (tmp_path / "hf").rglob("*") if p.is_symlink() or p.name.endswith(".incomplete")]
    with pytest.raises(WeightsError, match="missing weights file head.pth"):
        W.resolve("test-bad")


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
