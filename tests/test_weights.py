"""Weights registry, local lookup, import and verification (no network)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from typer.testing import CliRunner

from segcli import weights as W
from segcli.commands.weights import app as weights_app
from segcli.errors import InputNotFoundError, UsageError, WeightsError

CONVL_HEAD_SHA = "8c0cdea9e7ff19566c21645bfe522837d4fe2d9baead13041511ddb09f9968ed"


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGCLI_HOME", str(tmp_path / "segcli"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing here may touch the network
    monkeypatch.delenv("SEGCLI_REGISTRY", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path


def use_registry(tmp_path, monkeypatch, files: dict, models: dict | None = None):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"files": files, "models": models or {}}))
    monkeypatch.setenv("SEGCLI_REGISTRY", str(path))
    return W.load_registry()


def test_packaged_registry():
    reg = W.load_registry()
    assert set(reg.models) == {"omg-seg-convl", "omg-seg-convxxl"}
    convl = reg.files_of("omg-seg-convl")
    assert convl["head"].repo == "LXT/OMG_Seg" and convl["head"].filename == "omg_seg_convl.pth"
    assert convl["head"].size == "84.2 MB" and convl["head"].license == "MIT"
    assert convl["head"].sha256 == CONVL_HEAD_SHA
    assert (convl["head"].part, convl["head"].architecture) == ("head", "convl")
    # the CLIP backbone: the safetensors file (pinned), falling back to the .bin (recorded on first download)
    clip = convl["clip"]
    assert clip.repo == "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup"
    assert clip.filename == "open_clip_pytorch_model.safetensors" and clip.size == "1.41 GB"
    assert clip.sha256 == "1a8e47bdefd6d36202ec66a8975edda9e3c89560bcd1ecefe6f676311637a671"
    assert clip.open_clip_model == "convnext_large_d_320" and clip.part == "clip"
    bin_ = reg.files[clip.fallback]
    assert bin_.filename == "open_clip_pytorch_model.bin" and bin_.repo == clip.repo and bin_.sha256 is None
    assert reg.alternatives(clip) == [clip, bin_]
    xxl = reg.files_of("omg-seg-convxxl")
    assert xxl["head"].filename == "omg_seg_convxxl.pth" and xxl["clip"].open_clip_model == "convnext_xxlarge"
    assert xxl["head"].sha256 == "7faa324305beb19230cbda02d7c63cf22d50f0c082a1341d8524defe4cd40afb"
    assert xxl["head"].architecture == "convxxl" and xxl["clip"].sha256 is None
    for f in reg.files.values():
        assert f.sha256 is None or (len(f.sha256) == 64 and f.sha256 == f.sha256.lower())
        assert f.part in ("head", "clip")
        assert f.url.endswith(f"/{f.repo}/resolve/{f.revision}/{f.filename}")
    with pytest.raises(WeightsError, match="unknown weights name 'x'"):
        reg.files_of("x")


def test_check_name():
    W.check_name("omg-seg-convl")
    W.check_name("clip-convnext-large-d-320-bin")
    with pytest.raises(WeightsError) as info:
        W.check_name("nosuch")
    assert info.value.exit_code == 6
    message = str(info.value)
    assert "unknown weights name 'nosuch'" in message and "omg-seg-convl" in message and "\n" not in message


def test_registry_validation(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"files": {}, "models": {"m": {"files": {"head": "nope"}}}}))
    with pytest.raises(WeightsError, match="unknown files"):
        W.load_registry(bad)
    bad.write_text(json.dumps({"files": {"a": {"repo": "o/r", "filename": "a.bin", "fallback": "b"}}}))
    with pytest.raises(WeightsError, match="falls back to unknown file b"):
        W.load_registry(bad)
    with pytest.raises(WeightsError, match="cannot read"):
        W.load_registry(tmp_path / "missing.json")


def test_resolve_missing_names_pull_command(env):
    with pytest.raises(WeightsError) as info:
        W.resolve("omg-seg-convl")
    assert str(info.value) == ("missing weights file omg_seg_convl.pth (omg-seg-convl-head); "
                               "fetch it with: segcli weights pull omg-seg-convl")
    assert W.is_present("omg-seg-convl") == {"head": False, "clip": False}


def test_import_verify_resolve(env, tmp_path, monkeypatch):
    """The flow for a file whose sha256 is not pinned (and whose part is not said): recorded at import."""
    use_registry(tmp_path, monkeypatch, {
        "h": {"repo": "o/omg", "filename": "omg_seg_convl.pth"},
        "c": {"repo": "o/clip", "filename": "open_clip_pytorch_model.bin"},
    }, {"m": {"files": {"head": "h", "clip": "c"}}})
    src = tmp_path / "omg_seg_convl.pth"
    src.write_bytes(b"head bytes")
    file_id, dest = W.import_file(src)
    assert file_id == "h"
    assert dest == tmp_path / "segcli" / "weights" / "h" / "omg_seg_convl.pth"
    assert dest.read_bytes() == b"head bytes"
    sha = hashlib.sha256(b"head bytes").hexdigest()
    assert W.expected_sha256(W.load_registry().files["h"]) == sha
    assert W.path("h") == dest
    with pytest.raises(UsageError, match="model of 2 files"):
        W.path("m")

    results = {r.file_id: r for r in W.verify()}
    assert results["h"].status == "ok"
    assert results["c"].status == "missing"

    # a different file claiming to be the same entry is refused, nothing is overwritten
    other = tmp_path / "other" / "omg_seg_convl.pth"
    other.parent.mkdir()
    other.write_bytes(b"something else")
    with pytest.raises(WeightsError, match=f"expected sha256 {sha} .*recorded"):
        W.import_file(other)
    assert dest.read_bytes() == b"head bytes"

    # corruption after import is caught on load and by verify
    dest.write_bytes(b"bit rot")
    with pytest.raises(WeightsError, match="mismatch .*segcli weights pull h --force"):
        W.resolve("h")
    assert {r.file_id: r.status for r in W.verify("m")}["h"] == "mismatch"


def test_import_refuses_a_file_that_is_not_the_pinned_one(env, tmp_path):
    """The packaged head's sha256 is pinned: a wrong file named like it is refused, whatever it holds."""
    fake = tmp_path / "omg_seg_convl.pth"
    torch.save({"panoptic_head.query_feat.weight": torch.zeros(3, 4)}, fake)
    actual = hashlib.sha256(fake.read_bytes()).hexdigest()
    with pytest.raises(WeightsError) as info:
        W.import_file(fake)
    message = str(info.value)
    assert message == (f"{fake} is not the released omg_seg_convl.pth (omg-seg-convl-head): its sha256 is {actual}, "
                       f"the registry pins {CONVL_HEAD_SHA}; nothing was imported")
    assert not (tmp_path / "segcli" / "weights").exists()
    assert not (tmp_path / "segcli" / "checksums.json").exists()
    # the case: a small safetensors file stored under the head's name
    from safetensors.torch import save_file

    disguised = tmp_path / "x" / "omg_seg_convl.pth"
    disguised.parent.mkdir()
    save_file({"w": torch.zeros(2)}, str(disguised))
    with pytest.raises(WeightsError, match=f"the registry pins {CONVL_HEAD_SHA}"):
        W.import_file(disguised, "omg-seg-convl")
    with pytest.raises(WeightsError, match="registry pins 1a8e47bd"):
        W.import_file(disguised, "clip-convnext-large-d-320")


def test_verify_fails_for_a_file_that_disagrees_with_the_pin(env, tmp_path):
    """A file put in the store earlier (e.g. imported before the sha256 was pinned) fails verify (exit 6)
    and load, even when checksums.json recorded its own hash."""
    dest = tmp_path / "segcli" / "weights" / "omg-seg-convl-head" / "omg_seg_convl.pth"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"not the head")
    actual = hashlib.sha256(b"not the head").hexdigest()
    (tmp_path / "segcli" / "checksums.json").write_text(json.dumps({"omg-seg-convl-head": {
        "sha256": actual, "repo": "LXT/OMG_Seg", "filename": "omg_seg_convl.pth"}}))
    [result] = W.verify("omg-seg-convl-head")
    assert (result.status, result.sha256, result.expected) == ("mismatch", actual, CONVL_HEAD_SHA)
    result = CliRunner().invoke(weights_app, ["verify", "omg-seg-convl-head"])
    assert isinstance(result.exception, WeightsError) and result.exception.exit_code == 6
    message = str(result.exception)
    assert CONVL_HEAD_SHA in message and actual in message and "pinned" in message and "\n" not in message
    result = CliRunner().invoke(weights_app, ["verify"])  # all files: the same failure
    assert isinstance(result.exception, WeightsError) and CONVL_HEAD_SHA in str(result.exception)
    with pytest.raises(WeightsError, match=f"expected sha256 {CONVL_HEAD_SHA}"):
        W.resolve("omg-seg-convl-head")


def test_a_pinned_sha256_proves_the_file(env, tmp_path, monkeypatch):
    data = b"pretend this is the released head"
    use_registry(tmp_path, monkeypatch, {"h": {"repo": "o/omg", "filename": "head.pth", "part": "head",
                                               "architecture": "convl",
                                               "sha256": hashlib.sha256(data).hexdigest()}})
    src = tmp_path / "renamed.pth"
    src.write_bytes(data)
    assert W.import_file(src)[0] == "h"  # found by its hash; no key check needed (nor possible here)
    assert [r.status for r in W.verify("h")] == ["ok"]


def test_import_needs_a_name_when_ambiguous(env, tmp_path):
    src = tmp_path / "open_clip_pytorch_model.bin"
    src.write_bytes(b"clip")
    with pytest.raises(UsageError, match="several registry files are called open_clip_pytorch_model.bin"):
        W.import_file(src)
    with pytest.raises(WeightsError, match="not a checkpoint"):  # named: then its contents are checked
        W.import_file(src, "omg-seg-convxxl")
    with pytest.raises(UsageError, match="matches no registry file"):
        W.import_file(_touch(tmp_path / "random.pth"))
    with pytest.raises(InputNotFoundError):
        W.import_file(tmp_path / "nothing.pth")


def test_cli_plurals(env, tmp_path, monkeypatch):
    use_registry(tmp_path, monkeypatch, {"h": {"repo": "o/omg", "filename": "head.pth"}})
    W.import_file(_touch(tmp_path / "head.pth"))
    result = CliRunner().invoke(weights_app, ["pull", "h", "-q"])
    assert result.exit_code == 0, result.output
    assert "h: 1 file ready" in result.stderr


def _touch(path):
    path.write_bytes(b"?")
    return path
