"""Checkpoint loading: strict keys with a readable error, safe formats only, open_clip key mapping."""

from __future__ import annotations

import pickle

import pytest
import torch

from segcli.errors import WeightsError
from segcli.model.backbone import CLIPConvNeXt
from segcli.model.checkpoint import (
    PROMPT_KEYS,
    clip_to_backbone,
    load_into,
    load_weights,
    model_folder_config,
    read_model_config,
    read_state_dict,
    read_tensor_shapes,
    sniff_format,
)
from segcli.model.config import BackboneConfig, HeadConfig, OMGSegConfig
from segcli.model.omgseg import OMGSeg

TINY = OMGSegConfig(
    backbone=BackboneConfig(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), embed_dim=16, proj_hidden=32),
    head=HeadConfig(feat_channels=32, num_queries=4, num_heads=4, num_groups=8, encoder_layers=1,
                    encoder_ffn=16, decoder_layers=3, decoder_ffn=16),
)


def test_mmengine_wrapped_and_bare_head_files(tmp_path):
    model = OMGSeg(TINY)
    state = model.state_dict()
    head = {k: v for k, v in state.items() if k.startswith("panoptic_head.")}
    backbone = {k: v for k, v in state.items() if k.startswith("backbone.")}
    torch.save({"state_dict": head, "meta": {"epoch": 12}}, tmp_path / "wrapped.pth")
    torch.save(head, tmp_path / "bare.pth")
    for name in ("wrapped.pth", "bare.pth"):
        assert set(read_state_dict(tmp_path / name)) == set(head)
    # head-only file without a CLIP checkpoint: a clear error
    with pytest.raises(WeightsError, match="no backbone weights"):
        load_weights(OMGSeg(TINY), tmp_path / "bare.pth")
    # head file + open_clip-named CLIP checkpoint (with text-tower keys, which are ignored)
    clip = {}
    for k, v in backbone.items():
        k = k.removeprefix("backbone.")
        if k.startswith("layer"):
            i, rest = k[len("layer"):].split(".", 1)
            clip[f"visual.trunk.stages.{int(i) - 1}.{rest}"] = v
        elif k.startswith("stem."):
            clip["visual.trunk." + k] = v
        elif k.startswith("head.0."):
            clip["visual.trunk.head." + k[len("head.0."):]] = v
        else:
            clip["visual.head." + k[len("head.1."):]] = v
    clip["token_embedding.weight"] = torch.zeros(3, 4)
    torch.save({"state_dict": clip}, tmp_path / "clip.bin")
    fresh = OMGSeg(TINY)
    load_weights(fresh, tmp_path / "bare.pth", clip=tmp_path / "clip.bin")
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k


def _open_clip_names(backbone):
    clip = {}
    for k, v in backbone.items():
        k = k.removeprefix("backbone.")
        if k.startswith("layer"):
            i, rest = k[len("layer"):].split(".", 1)
            clip[f"visual.trunk.stages.{int(i) - 1}.{rest}"] = v
        elif k.startswith("stem."):
            clip["visual.trunk." + k] = v
        elif k.startswith("head.0."):
            clip["visual.trunk.head." + k[len("head.0."):]] = v
        else:
            clip["visual.head." + k[len("head.1."):]] = v
    return clip


def test_clip_safetensors_loads_like_the_bin(tmp_path, monkeypatch):
    """open_clip_pytorch_model.safetensors has the keys of the .bin; only its visual.* tensors are read."""
    from safetensors.torch import save_file

    model = OMGSeg(TINY)
    state = model.state_dict()
    torch.save({k: v for k, v in state.items() if k.startswith("panoptic_head.")}, tmp_path / "head.pth")
    clip = _open_clip_names({k: v for k, v in state.items() if k.startswith("backbone.")})
    clip["token_embedding.weight"] = torch.zeros(3, 4)
    clip["logit_scale"] = torch.tensor(4.6)
    save_file({k: v.contiguous() for k, v in clip.items()}, str(tmp_path / "open_clip_pytorch_model.safetensors"))
    torch.save(clip, tmp_path / "open_clip_pytorch_model.bin")
    for name in ("open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin"):
        fresh = OMGSeg(TINY)
        load_weights(fresh, tmp_path / "head.pth", clip=tmp_path / name)
        for k, v in fresh.state_dict().items():
            assert torch.equal(v, state[k]), (name, k)
    visual = read_state_dict(tmp_path / "open_clip_pytorch_model.safetensors",
                             select=lambda k: k.startswith("visual."))
    assert "token_embedding.weight" not in visual and len(visual) == len(clip) - 2
    shapes = read_tensor_shapes(tmp_path / "open_clip_pytorch_model.safetensors")
    assert shapes["token_embedding.weight"] == (3, 4) and shapes["logit_scale"] == ()
    assert read_tensor_shapes(tmp_path / "open_clip_pytorch_model.bin") == shapes
    assert sniff_format(tmp_path / "open_clip_pytorch_model.safetensors") == "safetensors"
    assert sniff_format(tmp_path / "open_clip_pytorch_model.bin") == "torch"
    (tmp_path / "text.txt").write_text("hello")
    assert sniff_format(tmp_path / "text.txt") == "unknown"
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert sniff_format(legacy) == "torch" and torch.equal(read_state_dict(legacy)["w"], torch.ones(2))


def test_read_model_config(tmp_path):
    path = tmp_path / "config.json"
    for content, match in ((None, "is missing"), (b"", "is empty"), (b"  \n", "is empty"),
                           (b"{garbage", "is not valid JSON"), (b'"text"', "JSON str"), (b"\xff", "cannot read")):
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(WeightsError, match=match) as info:
            read_model_config(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    path.write_text('{"a": 1}')
    assert read_model_config(path) == {"a": 1}
    with pytest.raises(WeightsError, match="lacks the setting 'backbone'"):
        model_folder_config(tmp_path)


def test_model_folder_config(tmp_path, bundle):
    import json

    cfg, raw = model_folder_config(bundle.path)
    assert cfg.head.num_queries == raw["head"]["num_queries"]
    broken = dict(raw)
    broken["classes"] = {**raw["classes"], "stuff": "sky"}
    (tmp_path / "config.json").write_text(json.dumps(broken))
    with pytest.raises(WeightsError, match="classes.stuff must be a list"):
        model_folder_config(tmp_path)
    broken = json.loads(json.dumps(raw))
    broken["head"]["num_queries"] = "many"
    (tmp_path / "config.json").write_text(json.dumps(broken))
    with pytest.raises(WeightsError, match="malformed model setting"):
        model_folder_config(tmp_path)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    model = OMGSeg(TINY)
    state = dict(model.state_dict())
    del state["panoptic_head.query_feat.weight"]
    state["panoptic_head.extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as err:
        load_into(OMGSeg(TINY), state)
    msg = str(err.value)
    assert "panoptic_head.query_feat.weight" in msg and "panoptic_head.extra.weight" in msg
    assert "\n" not in msg


def test_wrong_shape_is_reported():
    state = dict(OMGSeg(TINY).state_dict())
    state["panoptic_head.query_feat.weight"] = torch.zeros(5, 32)
    with pytest.raises(WeightsError, match="query_feat"):
        load_into(OMGSeg(TINY), state)


def test_prompt_keys_allowed_for_model_without_prompt_branch():
    full = OMGSeg(TINY).state_dict()
    assert all(k in full for k in PROMPT_KEYS)
    cfg = OMGSegConfig(backbone=TINY.backbone, head=HeadConfig(**{**TINY.head.__dict__, "with_prompt": False}))
    load_into(OMGSeg(cfg), dict(full))  # no error: the 4 prompt keys are on the allow-list


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_needing_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(WeightsError, match="refusing to load"):
        read_state_dict(path)
    assert "this must never run" not in capsys.readouterr().out
    with open(tmp_path / "raw.pkl", "wb") as fh:
        pickle.dump(Evil(), fh)
    with pytest.raises(WeightsError):
        read_state_dict(tmp_path / "raw.pkl")


def test_corrupt_or_missing_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(WeightsError):
        read_state_dict(bad)


@pytest.mark.xdist_group("dynamo")  # imports timm (see tests/conftest.py)
def test_backbone_matches_timm_convnext_through_open_clip_names():
    """Our ConvNeXt loaded from open_clip-style names computes what timm's trunk computes."""
    pytest.importorskip("timm")
    torch.manual_seed(0)
    # the block type of convnext_large (Linear MLP, conv_mlp=False) at a tiny size
    from timm.models.convnext import ConvNeXt

    trunk = ConvNeXt(depths=(2, 2, 3, 1), dims=(40, 80, 160, 320), conv_mlp=False, num_classes=0, global_pool="")
    trunk.eval()
    with torch.no_grad():
        for name, p in trunk.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.2, 0.6)
    state = {f"visual.trunk.{k}": v for k, v in trunk.state_dict().items()}
    state["visual.head.mlp.fc1.weight"] = torch.randn(64, 320)
    state["visual.head.mlp.fc1.bias"] = torch.randn(64)
    state["visual.head.mlp.fc2.weight"] = torch.randn(32, 64)
    mapped = clip_to_backbone(state)
    ours = CLIPConvNeXt(BackboneConfig(depths=(2, 2, 3, 1), dims=(40, 80, 160, 320), embed_dim=32, proj_hidden=64))
    ours.load_state_dict({k.removeprefix("backbone."): v for k, v in mapped.items()}, strict=True)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = ours(x)
        ref = trunk.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(feats, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.xdist_group("dynamo")  # imports timm and open_clip (see tests/conftest.py)
@pytest.mark.parametrize("proj", ["mlp", "linear"])
def test_clip_image_embedding_matches_open_clip_with_either_projection(proj):
    """Trunk, pooled head and CLIP projection equal open_clip's TimmModel, loaded from its own key
    names: the MLP projection of convnext_large_d_320 and the Linear one of convnext_xxlarge."""
    pytest.importorskip("timm")
    from open_clip.timm_model import TimmModel

    torch.manual_seed(0)
    clip = TimmModel("convnext_tiny", embed_dim=32, image_size=64, pool="", proj=proj).eval()
    with torch.no_grad():
        for name, p in clip.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.2, 0.6)
    state = {f"visual.{k}": v for k, v in clip.state_dict().items()}
    ours = CLIPConvNeXt(BackboneConfig(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), embed_dim=32,
                                       proj_hidden=64, proj=proj)).eval()
    ours.load_state_dict({k.removeprefix("backbone."): v for k, v in clip_to_backbone(state).items()}, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = ours(x)[-1].mean((2, 3))
        torch.testing.assert_close(ours.forward_feat(pooled[:, None])[:, 0], clip(x), atol=1e-5, rtol=1e-5)


def test_video_demo_checkpoint_without_prompt_keys_serves_automatic_tasks(bundle, tmp_path):
    """A state_dict of the official video-demo config has no interactive-prompt keys: it loads for
    vis/vps, and prompts are refused with one line (a mask prompt needs no prompt branch)."""
    import shutil

    import numpy as np
    from safetensors.torch import load_file, save_file

    from segcli.errors import PromptError
    from segcli.pipeline.engine import Segmenter
    from segcli.pipeline.options import ObjectPrompt, VideoOptions
    from segcli.pipeline.session import VideoSession

    folder = tmp_path / "demo_model"
    shutil.copytree(bundle.path, folder, ignore=shutil.ignore_patterns("inputs.npz", "outputs.npz"))
    state = load_file(str(folder / "weights.safetensors"))
    assert all(k in state for k in PROMPT_KEYS)
    save_file({k: v for k, v in state.items() if k not in PROMPT_KEYS}, str(folder / "weights.safetensors"))
    emb = torch.from_numpy(bundle.outputs["cls_embed_file"])
    seg = Segmenter.load(str(folder), device="cpu", embeddings=emb)
    assert not seg.has_prompts
    frames = [f.copy() for f in bundle.inputs["vid_frames_raw_rgb"][:3]]
    results = list(VideoSession(seg, VideoOptions(task="vps", mode="online")).run(frames))
    assert len(results) == 3 and any(r.segments for r in results)
    session = VideoSession(seg, VideoOptions(task="vos"))
    with pytest.raises(PromptError, match="no interactive-prompt branch"):
        session.add_prompt(1, 0, points=[(10, 10)])
    h, w = frames[0].shape[:2]
    mask = np.zeros((h, w), bool)
    mask[10:40, 10:40] = True
    vos = list(VideoSession(seg, VideoOptions(task="vos", objects=[ObjectPrompt(1, 0, mask=mask)])).run(frames))
    assert len(vos) == 3
