"""Weights registry, local lookup, import and verification (no network)."""

from __future__ import annotations

import hashlib
import json

import pytest

from segcli import weights as W
from segcli.errors import InputNotFoundError, UsageError, WeightsError


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGCLI_HOME", str(tmp_path / "segcli"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing here may touch the network
    monkeypatch.delenv("SEGCLI_REGISTRY", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


def test_packaged_registry():
    reg = W.load_registry()
    assert set(reg.models) == {"omg-seg-convl", "omg-seg-convxxl"}
    convl = reg.files_of("omg-seg-convl")
    assert convl["head"].repo == "LXT/OMG_Seg" and convl["head"].filename == "omg_seg_convl.pth"
    assert convl["head"].size == "84.2 MB" and convl["head"].license == "MIT"
    assert convl["clip"].repo == "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup"
    assert convl["clip"].filename == "open_clip_pytorch_model.bin"
    assert convl["clip"].open_clip_model == "convnext_large_d_320"
    xxl = reg.files_of("omg-seg-convxxl")
    assert xxl["head"].filename == "omg_seg_convxxl.pth" and xxl["clip"].open_clip_model == "convnext_xxlarge"
    for f in reg.files.values():
        assert f.sha256 is None or len(f.sha256) == 64
        assert f.url.endswith(f"/{f.repo}/resolve/{f.revision}/{f.filename}")
    with pytest.raises(WeightsError, match="unknown weights name 'x'"):
        reg.files_of("x")


def test_registry_validation(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"files": {}, "models": {"m": {"files": {"head": "nope"}}}}))
    with pytest.raises(WeightsError, match="unknown files"):
        W.load_registry(bad)
    with pytest.raises(WeightsError, match="cannot read"):
        W.load_registry(tmp_path / "missing.json")


def test_resolve_missing_names_pull_command(env):
    with pytest.raises(WeightsError) as info:
        W.resolve("omg-seg-convl")
    assert str(info.value) == ("missing weights file omg_seg_convl.pth (omg-seg-convl-head); "
                               "fetch it with: segcli weights pull omg-seg-convl")
    assert W.is_present("omg-seg-convl") == {"head": False, "clip": False}


def test_import_verify_resolve(env, tmp_path):
    src = tmp_path / "omg_seg_convl.pth"
    src.write_bytes(b"head bytes")
    file_id, dest = W.import_file(src)
    assert file_id == "omg-seg-convl-head"
    assert dest == tmp_path / "segcli" / "weights" / "omg-seg-convl-head" / "omg_seg_convl.pth"
    assert dest.read_bytes() == b"head bytes"
    sha = hashlib.sha256(b"head bytes").hexdigest()
    assert W.expected_sha256(W.load_registry().files["omg-seg-convl-head"]) == sha
    assert W.path("omg-seg-convl-head") == dest
    with pytest.raises(UsageError, match="model of 2 files"):
        W.path("omg-seg-convl")

    results = {r.file_id: r for r in W.verify()}
    assert results["omg-seg-convl-head"].status == "ok"
    assert results["clip-convnext-large-d-320"].status == "missing"

    # a different file claiming to be the same entry is refused, nothing is overwritten
    other = tmp_path / "other" / "omg_seg_convl.pth"
    other.parent.mkdir()
    other.write_bytes(b"something else")
    with pytest.raises(WeightsError, match=f"expected sha256 {sha}"):
        W.import_file(other)
    assert dest.read_bytes() == b"head bytes"

    # corruption after import is caught on load and by verify
    dest.write_bytes(b"bit rot")
    with pytest.raises(WeightsError, match="mismatch .*segcli weights pull omg-seg-convl-head --force"):
        W.resolve("omg-seg-convl-head")
    assert {r.file_id: r.status for r in W.verify("omg-seg-convl")}["omg-seg-convl-head"] == "mismatch"


def test_import_needs_a_name_when_ambiguous(env, tmp_path):
    src = tmp_path / "open_clip_pytorch_model.bin"
    src.write_bytes(b"clip")
    with pytest.raises(UsageError, match="several registry files are called open_clip_pytorch_model.bin"):
        W.import_file(src)
    file_id, dest = W.import_file(src, "omg-seg-convxxl")  # the model's file with this name
    assert file_id == "clip-convnext-xxlarge" and dest.read_bytes() == b"clip"
    with pytest.raises(UsageError, match="matches no registry file"):
        W.import_file(_touch(tmp_path / "random.pth"))
    with pytest.raises(InputNotFoundError):
        W.import_file(tmp_path / "nothing.pth")


def _touch(path):
    path.write_bytes(b"?")
    return path
