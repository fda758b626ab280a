"""Model configuration as plain dataclasses (the network only: clip lengths, test-time thresholds and
preprocessing are the pipeline's, segcli/pipeline/config.py).

Two builders: `convl_config()` is the released ConvNeXt-L / 300-query OMG-Seg, and
`config_from_bundle(dict)` rebuilds the exact sizes recorded in a golden bundle's config.json.
Every size the forward pass needs is here; nothing is read from anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

# Widths/depths of the timm ConvNeXt trunks that open_clip's CLIP ConvNeXt models wrap.
TIMM_CONVNEXT_ARCHS = {
    "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnext_small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "convnext_base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "convnext_large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "convnext_xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
    "convnext_xxlarge": ((3, 4, 30, 3), (384, 768, 1536, 3072)),
}


CLIP_PROJECTIONS = ("mlp", "linear")


@dataclass
class BackboneConfig:
    depths: tuple[int, ...] = (3, 3, 27, 3)
    dims: tuple[int, ...] = (192, 384, 768, 1536)
    embed_dim: int = 768  # CLIP embedding width (output of the CLIP projection)
    proj_hidden: int = 1536  # hidden width of the CLIP MLP projection (open_clip: 2 * embed_dim)
    norm_eps: float = 1e-6
    # open_clip's timm_proj: "mlp" (convnext_large_d*: fc1 -> GELU -> fc2) or "linear" (every other
    # ConvNeXt CLIP, convnext_xxlarge among them: one bias-free Linear)
    proj: str = "mlp"

    def __post_init__(self):
        if self.proj not in CLIP_PROJECTIONS:
            raise ValueError(f"unsupported CLIP projection {self.proj!r} "
                             f"(expected one of {', '.join(CLIP_PROJECTIONS)})")


@dataclass
class HeadConfig:
    feat_channels: int = 256
    num_queries: int = 300
    num_levels: int = 3  # multi-scale levels seen by the encoder and the decoder
    num_heads: int = 8  # decoder attention heads
    encoder_heads: int = 8  # deformable-attention heads of the pixel decoder
    num_points: int = 4
    num_groups: int = 32  # GroupNorm groups in the pixel decoder
    encoder_layers: int = 6
    encoder_ffn: int = 1024
    decoder_layers: int = 9
    decoder_ffn: int = 2048
    num_prototypes: int = 1  # synonyms per class in the class-embedding buffer (P)
    logit_scale: float = 4.6052
    with_prompt: bool = True  # the 4 interactive-prompt keys (mask_tokens, pb_embedding, pos_linear)


@dataclass
class OMGSegConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    clip_model_name: str = "convnext_large_d_320"


def convl_config(**head_overrides) -> OMGSegConfig:
    """The released OMG-Seg ConvNeXt-L model (omg_seg_convl.pth + convnext_large_d_320 CLIP)."""
    return OMGSegConfig(head=HeadConfig(**head_overrides))


def convxxl_config(**head_overrides) -> OMGSegConfig:
    """OMG-Seg with the open_clip convnext_xxlarge backbone (omg_seg_convxxl.pth)."""
    depths, dims = TIMM_CONVNEXT_ARCHS["convnext_xxlarge"]
    return OMGSegConfig(
        backbone=BackboneConfig(depths=depths, dims=dims, embed_dim=1024, proj_hidden=2048, proj="linear"),
        head=HeadConfig(**head_overrides),
        clip_model_name="convnext_xxlarge",
    )


class OpenClipConvNeXt(NamedTuple):
    """What segcli reads of an open_clip ConvNeXt CLIP config (text context 77, vocabulary 49408)."""

    embed_dim: int
    trunk: str  # the timm ConvNeXt (TIMM_CONVNEXT_ARCHS)
    proj: str  # timm_proj: the image embedding's projection
    text_width: int
    text_heads: int
    text_layers: int


# open_clip 3.3's model_configs/<name>.json of its ConvNeXt CLIP models. Known here so that neither
# the backbone nor the text tower needs `import open_clip` (1.7 s: it imports torchvision, timm and
# torch._dynamo) for its sizes.
OPEN_CLIP_CONVNEXT_MODELS = {
    "convnext_base": OpenClipConvNeXt(512, "convnext_base", "linear", 512, 8, 12),
    "convnext_base_w": OpenClipConvNeXt(640, "convnext_base", "linear", 640, 10, 12),
    "convnext_base_w_320": OpenClipConvNeXt(640, "convnext_base", "linear", 640, 10, 12),
    "convnext_large": OpenClipConvNeXt(768, "convnext_large", "linear", 768, 12, 12),
    "convnext_large_d": OpenClipConvNeXt(768, "convnext_large", "mlp", 768, 12, 16),
    "convnext_large_d_320": OpenClipConvNeXt(768, "convnext_large", "mlp", 768, 12, 16),
    "convnext_small": OpenClipConvNeXt(512, "convnext_small", "linear", 512, 8, 12),
    "convnext_tiny": OpenClipConvNeXt(1024, "convnext_tiny", "linear", 512, 8, 12),
    "convnext_xlarge": OpenClipConvNeXt(1024, "convnext_xlarge", "linear", 1024, 16, 20),
    "convnext_xxlarge": OpenClipConvNeXt(1024, "convnext_xxlarge", "linear", 1024, 16, 24),
    "convnext_xxlarge_320": OpenClipConvNeXt(1024, "convnext_xxlarge", "linear", 1024, 16, 24),
}


def open_clip_model_config(name: str) -> dict | None:
    """open_clip.get_model_config(name), restricted to what segcli reads (embed_dim, quick_gelu,
    vision_cfg.timm_model_name / timm_proj, text_cfg); the models above without importing
    open_clip, any other name from open_clip itself (None: open_clip has no such model)."""
    if name in OPEN_CLIP_CONVNEXT_MODELS:
        m = OPEN_CLIP_CONVNEXT_MODELS[name]
        return {"embed_dim": m.embed_dim, "quick_gelu": False,
                "vision_cfg": {"timm_model_name": m.trunk, "timm_proj": m.proj},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": m.text_width,
                             "heads": m.text_heads, "layers": m.text_layers}}
    try:
        from open_clip import get_model_config
    except ImportError:
        return None
    return get_model_config(name)


def backbone_from_open_clip(model_name_or_cfg) -> BackboneConfig:
    """Backbone sizes from an open_clip model name (e.g. 'convnext_large_d_320') or an open_clip
    model-config dict ({'embed_dim', 'vision_cfg': {'timm_model_name', ...}})."""
    cfg = model_name_or_cfg
    if isinstance(cfg, str):
        name = cfg
        cfg = open_clip_model_config(name)
        if cfg is None:
            raise ValueError(f"unknown open_clip model: {name}")
    timm_name = cfg["vision_cfg"]["timm_model_name"]
    if timm_name not in TIMM_CONVNEXT_ARCHS:
        raise ValueError(f"unsupported CLIP trunk {timm_name!r} (expected a timm ConvNeXt)")
    depths, dims = TIMM_CONVNEXT_ARCHS[timm_name]
    embed = int(cfg["embed_dim"])
    return BackboneConfig(depths=depths, dims=dims, embed_dim=embed, proj_hidden=2 * embed,
                          proj=_clip_projection(cfg["vision_cfg"], default="linear"))


def _clip_projection(vision_cfg: dict, default: str) -> str:
    """open_clip's timm_proj (its own default: "linear"); a projection with a bias is refused."""
    if vision_cfg.get("timm_proj_bias"):
        raise ValueError("unsupported CLIP projection with a bias (timm_proj_bias)")
    return vision_cfg.get("timm_proj", default)


def config_from_bundle(bundle: dict) -> OMGSegConfig:
    """Rebuild the model configuration recorded in a golden bundle's config.json (its pipeline
    settings: segcli.pipeline.config.pipeline_config_from_bundle)."""
    bb = bundle["backbone"]
    trunk = bb["timm_trunk"]
    embed = int(bb["open_clip_model_config"]["embed_dim"])
    backbone = BackboneConfig(
        depths=tuple(trunk["depths"]),
        dims=tuple(trunk["dims"]),
        embed_dim=embed,
        proj_hidden=2 * embed,
        # the golden bundles record it; folders written before it was read have the MLP
        proj=_clip_projection(bb["open_clip_model_config"].get("vision_cfg") or {}, default="mlp"),
    )
    h = bundle["head"]
    pd = h["pixel_decoder"]
    td = h["transformer_decoder"]
    groups = 32
    norm = str(pd.get("norm", ""))
    if "GroupNorm(" in norm:
        groups = int(norm.split("(")[1].split()[0])
    head = HeadConfig(
        feat_channels=int(h["feat_channels"]),
        num_queries=int(h["num_queries"]),
        num_levels=int(h["num_transformer_feat_level"]),
        num_heads=int(td["cross_attn"]["num_heads"]),
        encoder_heads=int(pd["self_attn"]["num_heads"]),
        num_points=int(pd["self_attn"]["num_points"]),
        num_groups=groups,
        encoder_layers=int(pd["encoder_num_layers"]),
        encoder_ffn=int(pd["ffn"]["feedforward_channels"]),
        decoder_layers=int(td["num_layers"]),
        decoder_ffn=int(td["ffn"]["feedforward_channels"]),
        num_prototypes=int(bundle["classes"]["cls_embed_file_shape"][1]),
        logit_scale=float(h.get("logit_scale_buffer", 4.6052)),
        with_prompt=bool(h.get("box_query", {}).get("enable_box_query_in_weights", True)),
    )
    return OMGSegConfig(
        backbone=backbone,
        head=head,
        clip_model_name=bb.get("open_clip_model_name", "custom"),
    )
