"""`weights import` / `verify` check what a file holds (safe loading, keys, shapes), and the registry's
fallback file. The expected architecture is a tiny model here, so the files stay small."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from segcli import weights as W
from segcli.commands.weights import app as weights_app
from segcli.errors import WeightsError
from segcli.model.checkpoint import load_weights
from segcli.model.config import BackboneConfig, HeadConfig, OMGSegConfig
from segcli.model.omgseg import OMGSeg
from segcli.weights import contents

TINY = OMGSegConfig(
    backbone=BackboneConfig(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), embed_dim=16, proj_hidden=32),
    head=HeadConfig(feat_channels=32, num_queries=4, num_heads=4, num_groups=8, encoder_layers=1,
                    encoder_ffn=16, decoder_layers=3, decoder_ffn=16),
)


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGCLI_HOME", str(tmp_path / "segcli"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    registry = {
        "files": {
            "head": {"repo": "o/omg", "filename": "omg_seg_tiny.pth", "part": "head", "architecture": "convl"},
            "clip": {"repo": "o/clip", "filename": "open_clip_pytorch_model.safetensors", "part": "clip",
                     "open_clip_model": "convnext_large_d_320", "fallback": "clip-bin"},
            "clip-bin": {"repo": "o/clip", "filename": "open_clip_pytorch_model.bin", "part": "clip",
                         "open_clip_model": "convnext_large_d_320"},
        },
        "models": {"tiny": {"files": {"head": "head", "clip": "clip"}}},
    }
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    monkeypatch.setenv("SEGCLI_REGISTRY", str(tmp_path / "registry.json"))
    # the architecture the registry names is replaced by a tiny one
    monkeypatch.setattr(contents, "model_config", lambda architecture: TINY)
    monkeypatch.setattr(contents, "clip_backbone_config", lambda name: TINY.backbone)
    return tmp_path


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    return OMGSeg(TINY).state_dict()


def head_of(state):
    return {k: v.clone() for k, v in state.items() if k.startswith("panoptic_head.")}


def clip_of(state):
    """The tiny backbone under open_clip names, plus some text-tower keys (ignored by the backbone)."""
    out = {}
    for k, v in state.items():
        if not k.startswith("backbone."):
            continue
        k = k.removeprefix("backbone.")
        if k.startswith("layer"):
            i, rest = k[len("layer"):].split(".", 1)
            out[f"visual.trunk.stages.{int(i) - 1}.{rest}"] = v.clone()
        elif k.startswith("stem."):
            out["visual.trunk." + k] = v.clone()
        elif k.startswith("head.0."):
            out["visual.trunk.head." + k[len("head.0."):]] = v.clone()
        else:
            out["visual.head." + k[len("head.1."):]] = v.clone()
    out["token_embedding.weight"] = torch.randn(10, 8)
    out["logit_scale"] = torch.tensor(4.6)
    return out


@pytest.mark.xdist_group("dynamo")  # models built on the meta device (see tests/conftest.py)
def test_expected_shapes_of_the_released_architectures():
    """Unpatched: the convl head has the 310 head keys of the released file, the CLIP part the 345
    backbone keys (meta device: nothing is allocated)."""
    reg = W.load_registry()
    head = contents.expected_shapes(reg.files["omg-seg-convl-head"])
    assert len(head) == 310 and all(k.startswith("panoptic_head.") for k in head)
    clip = contents.expected_shapes(reg.files["clip-convnext-large-d-320"])
    assert len(clip) == 345 and clip["backbone.stem.0.weight"] == (192, 3, 4, 4)
    xxl = contents.expected_shapes(reg.files["omg-seg-convxxl-head"])
    assert set(xxl) == set(head) and xxl != head  # same keys, the input projections differ
    xxl_clip = contents.expected_shapes(reg.files["clip-convnext-xxlarge"])
    assert xxl_clip["backbone.stem.0.weight"] == (384, 3, 4, 4)
    # open_clip's convnext_xxlarge projects with one bias-free Linear (timm_proj "linear"), the
    # ConvL CLIP with an MLP: the released files hold visual.head.proj.weight / visual.head.mlp.*
    assert xxl_clip["backbone.head.1.proj.weight"] == (1024, 3072)
    assert not any(".mlp." in k for k in xxl_clip if k.startswith("backbone.head.1."))
    assert clip["backbone.head.1.mlp.fc1.weight"] == (1536, 1536) and "backbone.head.1.proj.weight" not in clip


def test_import_checks_a_head_file(env, tmp_path, state):
    good = tmp_path / "omg_seg_tiny.pth"
    torch.save(head_of(state), good)
    file_id, dest = W.import_file(good)
    assert file_id == "head" and dest.read_bytes() == good.read_bytes()
    assert [r.status for r in W.verify("head")] == ["ok"]

    def refused(tensors, name="omg_seg_tiny.pth", *, save=torch.save):
        path = tmp_path / "bad" / name
        path.parent.mkdir(exist_ok=True)
        save(tensors, str(path))
        with pytest.raises(WeightsError) as info:
            W.import_file(path, "head")
        message = str(info.value)
        assert message.startswith(f"{path} ") and message.endswith("; nothing was imported")
        assert "\n" not in message
        assert dest.read_bytes() == good.read_bytes()  # the imported copy is untouched
        return message

    missing = head_of(state)
    del missing["panoptic_head.query_feat.weight"]
    assert "1 missing key (panoptic_head.query_feat.weight)" in refused(missing)
    extra = head_of(state)
    extra["backbone.stem.0.weight"] = torch.zeros(1)
    assert "1 unexpected key (backbone.stem.0.weight)" in refused(extra)
    wrong = head_of(state)
    wrong["panoptic_head.query_feat.weight"] = torch.zeros(5, 32)
    message = refused(wrong)
    assert "is not the OMG-Seg convl head" in message
    assert "1 wrong shape (panoptic_head.query_feat.weight (5, 32) instead of (4, 32))" in message
    wrapped = {"state_dict": {f"module.{k}": v for k, v in head_of(state).items()}}  # mmengine layout: fine
    path = tmp_path / "wrapped" / "omg_seg_tiny.pth"
    path.parent.mkdir()
    torch.save(wrapped, path)
    contents.check_contents(W.load_registry().files["head"], path)
    # a right file that is not the one recorded at the first import
    with pytest.raises(WeightsError, match="checksum mismatch .*recorded in .*checksums.json when it was first"):
        W.import_file(path)
    # a safetensors file named as the head (the loader would read it with torch.load)
    assert "is a safetensors file, but head (omg_seg_tiny.pth) is a torch file" in refused(
        head_of(state), save=save_file)
    # a truncated file
    path = tmp_path / "bad" / "omg_seg_tiny.pth"
    path.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        W.import_file(path)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_import_refuses_pickled_code(env, tmp_path, state, capsys):
    path = tmp_path / "omg_seg_tiny.pth"
    torch.save({**head_of(state), "payload": Evil()}, path)
    with pytest.raises(WeightsError, match="refusing to load .*nothing was imported"):
        W.import_file(path)
    assert "this must never run" not in capsys.readouterr().out
    assert not (tmp_path / "segcli" / "weights").exists()


def test_import_checks_a_clip_file(env, tmp_path, state):
    good = tmp_path / "open_clip_pytorch_model.safetensors"
    save_file(clip_of(state), str(good))
    assert W.import_file(good)[0] == "clip"
    bad = clip_of(state)
    bad["visual.trunk.stem.0.weight"] = torch.zeros(8, 3, 2, 2)
    del bad["visual.head.mlp.fc2.weight"]
    path = tmp_path / "bad" / "open_clip_pytorch_model.safetensors"
    path.parent.mkdir()
    save_file(bad, str(path))
    with pytest.raises(WeightsError) as info:
        W.import_file(path, "clip")
    message = str(info.value)
    assert "is not the convnext_large_d_320 CLIP checkpoint open_clip_pytorch_model.safetensors" in message
    assert "1 missing key (backbone.head.1.mlp.fc2.weight)" in message
    assert "backbone.stem.0.weight (8, 3, 2, 2) instead of (8, 3, 4, 4)" in message
    # truncated safetensors: refused by safetensors' own header check
    path.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(WeightsError, match="cannot read safetensors file"):
        W.import_file(path, "clip")


def test_fallback_file_is_used_when_the_preferred_one_is_absent(env, tmp_path, state):
    head = tmp_path / "omg_seg_tiny.pth"
    torch.save(head_of(state), head)
    W.import_file(head)
    clip_bin = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"state_dict": clip_of(state)}, clip_bin)
    assert W.import_file(clip_bin, "tiny")[0] == "clip-bin"  # the model's file of that name (its fallback)
    paths = W.resolve("tiny")
    assert paths["clip"].name == "open_clip_pytorch_model.bin"
    assert W.resolve("clip") == {"clip": paths["clip"]}
    assert W.is_present("tiny") == {"head": True, "clip": True}
    assert [r.file_id for r in W.verify("tiny")] == ["head", "clip-bin"]
    model = OMGSeg(TINY)
    load_weights(model, paths["head"], clip=paths["clip"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # once the preferred file is there, it wins
    st = tmp_path / "open_clip_pytorch_model.safetensors"
    save_file(clip_of(state), str(st))
    W.import_file(st)
    assert W.resolve("tiny")["clip"].name == "open_clip_pytorch_model.safetensors"


def test_verify_checks_contents_of_files_without_a_pinned_sha256(env, tmp_path, state):
    dest = tmp_path / "segcli" / "weights" / "head" / "omg_seg_tiny.pth"
    dest.parent.mkdir(parents=True)
    save_file({"w": torch.zeros(3)}, str(dest))  # placed there by hand, never checked
    [result] = W.verify("head")
    assert result.status == "invalid" and "is a safetensors file" in result.problem
    assert not (tmp_path / "segcli" / "checksums.json").exists()  # nothing recorded for a wrong file
    result = CliRunner().invoke(weights_app, ["verify", "tiny"])
    assert isinstance(result.exception, WeightsError) and result.exception.exit_code == 6
    assert "is a safetensors file" in str(result.exception)
    # a right file is recorded on its first verify, then compared with the record
    torch.save(head_of(state), dest)
    assert [r.status for r in W.verify("head")] == ["recorded"]
    recorded = json.loads((tmp_path / "segcli" / "checksums.json").read_text())["head"]["sha256"]
    assert recorded == hashlib.sha256(dest.read_bytes()).hexdigest()
    assert [r.status for r in W.verify("head")] == ["ok"]
