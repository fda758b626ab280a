"""The full-size model has exactly the official state-dict layout (../shared/golden/manifest_convl.json)."""

from __future__ import annotations

import pytest
import torch

from segcli.model.config import backbone_from_open_clip, convl_config
from segcli.model.omgseg import OMGSeg

pytestmark = pytest.mark.xdist_group("dynamo")  # models built on the meta device (see tests/conftest.py)


def manifest_entries(manifest, config_name):
    groups = manifest["configs"][config_name]["groups"]
    return [(e["key"], tuple(e["shape"])) for entries in groups.values() for e in entries]


@pytest.mark.parametrize("config_name,with_prompt", [("train_all_tasks", True), ("video_demo", False)])
def test_convl_keys_and_shapes(manifest, config_name, with_prompt):
    with torch.device("meta"):
        model = OMGSeg(convl_config(with_prompt=with_prompt))
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    expected = manifest_entries(manifest, config_name)
    assert len(ours) == manifest["configs"][config_name]["num_keys"]
    assert sorted(ours) == sorted(expected)
    # same registration order inside the head, as a released state dict would list them
    head = [k for k, _ in ours if k.startswith("panoptic_head.")]
    assert head == [k for k, _ in expected if k.startswith("panoptic_head.")]
    assert sum(v.numel() for v in model.state_dict().values()) == manifest["configs"][config_name]["num_params"]


def test_runtime_buffers_are_not_persistent():
    with torch.device("meta"):
        model = OMGSeg(convl_config())
    keys = model.state_dict().keys()
    assert "panoptic_head.cls_embed" not in keys and "panoptic_head.logit_scale" not in keys
    assert "panoptic_head.cls_embed" in dict(model.named_buffers())


def test_backbone_from_open_clip_name_and_dict():
    cfg = backbone_from_open_clip("convnext_large_d_320")
    assert cfg.dims == (192, 384, 768, 1536) and cfg.depths == (3, 3, 27, 3) and cfg.embed_dim == 768
    assert cfg.proj == "mlp"  # convnext_large_d_320's CLIP projection
    cfg = backbone_from_open_clip({"embed_dim": 1024, "vision_cfg": {"timm_model_name": "convnext_xxlarge"}})
    assert cfg.dims[-1] == 3072 and cfg.proj == "linear"  # open_clip's default projection
    assert backbone_from_open_clip("convnext_xxlarge").proj == "linear"
    with pytest.raises(ValueError, match="bias"):
        backbone_from_open_clip({"embed_dim": 8, "vision_cfg": {"timm_model_name": "convnext_base",
                                                                "timm_proj_bias": True}})
    with pytest.raises(ValueError):
        backbone_from_open_clip({"embed_dim": 8, "vision_cfg": {"timm_model_name": "vit_base_patch16"}})
