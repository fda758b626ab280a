"""A tiny synthetic OMG-Seg model folder, built from a seed in a few seconds, for the pipeline, API
and CLI tests that need a working model but no golden numbers (those stay on ../shared).

The folder has the layout `--weights DIR` reads (segcli.pipeline.engine.resolve_weights and
segcli.vocab.text.text_source_from_bundle):

    config.json             only the settings config_from_bundle and the text-tower loader read
    weights.safetensors     build_model(cfg).state_dict() after a seeded random initialisation
    text_tower.safetensors  a seeded random CLIP text tower of the config's size (open_clip names)

The random initialisation is chosen so that outputs are not degenerate: ConvNeXt layer scales of
0.2..0.6 (not 1e-6) so the backbone's features depend on the picture, decoder weights scaled so the
queries stay distinct, and a sharp mask head, so that some queries have confident masks of
different sizes (objects appear with --score-threshold 0, vps finds segments, vos proposals overlap
the prompts).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

SEED = 3  # a seed whose model reports things of 3 classes and vps segments on samples/shapes.mp4

THINGS = ["person", "car", "dog,puppy", "ball", "robot"]  # robot: not in the training vocabulary (unseen)
STUFF = ["sky", "road,street"]
TEMPLATES = ["a photo of a {}.", "There is a {} in the scene"]
TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
EMBED_DIM = 32
NUM_QUERIES = 12
NUM_PROPOSALS = 4  # vos: at most this many objects per video
VIDEO_SCALE = (160, 96)  # (w, h): the samples' 320x192 frames are decoded at half size
IMAGE_SCALE = (128, 128)


def synthetic_config() -> dict:
    """config.json of the synthetic model: what config_from_bundle, bundle_vocabulary and
    text_source_from_bundle read, nothing else."""
    max_synonyms = max(len(c.split(",")) for c in THINGS + STUFF)
    return {
        "bundle": "synthetic",
        "backbone": {
            "open_clip_model_name": "synthetic_convnext",
            "open_clip_model_config": {"embed_dim": EMBED_DIM},
            "timm_trunk": {"depths": [1, 1, 2, 1], "dims": [32, 64, 128, 256]},
        },
        "text_tower": {"open_clip_text_cfg": dict(TEXT_CFG), "embed_dim": EMBED_DIM},
        "classes": {
            "things": list(THINGS),
            "stuff": list(STUFF),
            "dataset_name": "Synthetic",
            "templates": list(TEMPLATES),
            "cls_embed_file_shape": [len(THINGS) + len(STUFF), max_synonyms, EMBED_DIM],
        },
        "head": {
            "feat_channels": 64,
            "num_queries": NUM_QUERIES,
            "num_transformer_feat_level": 3,
            "logit_scale_buffer": 4.6052,
            "pixel_decoder": {
                "norm": "GroupNorm(32 groups)",
                "encoder_num_layers": 2,
                "self_attn": {"num_heads": 4, "num_points": 2},
                "ffn": {"feedforward_channels": 128},
            },
            "transformer_decoder": {
                "num_layers": 3,
                "cross_attn": {"num_heads": 4},
                "ffn": {"feedforward_channels": 128},
            },
            "box_query": {"enable_box_query_in_weights": True},
        },
        "detector": {"clip_size": 3, "clip_size_small": 3, "small_clip_thr": 10, "whole_clip_thr": 0,
                     "overlap": 0, "BACKBONE_BATCH": 50},
        "test_cfg": {"max_per_image": 30, "iou_thr": 0.3, "filter_low_score": True, "object_mask_thr": 0.0},
        "test_cfg_variants": {"vos_": {"num_proposals": NUM_PROPOSALS}},
        "INSTANCE_OFFSET": 1000,
        "preprocessing": {
            "mean": [123.675, 116.28, 103.53],
            "std": [58.395, 57.12, 57.375],
            "video_resize_scale_wh": list(VIDEO_SCALE),
            "image_resize_scale_wh": list(IMAGE_SCALE),
            "pad_size_divisor": 32,
        },
    }


def _randomize(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Seeded weights that make every path matter (see the module docstring)."""

    def normal(shape, std):
        return torch.randn(shape, generator=gen) * std

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".gamma"):
                value = torch.rand(p.shape, generator=gen) * 0.4 + 0.2
            elif p.ndim == 1 and name.endswith(".weight"):  # LayerNorm / GroupNorm scales
                value = 1 + normal(p.shape, 0.2)
            elif p.ndim == 1:  # biases
                value = normal(p.shape, 0.1)
            else:
                fan_in = p[0].numel()
                value = normal(p.shape, 1 / math.sqrt(fan_in))
            if "transformer_decoder" in name and (".out_proj." in name or ".ffn.layers.1." in name):
                value = value * 0.2  # residual branches small: the queries stay distinct
            if "cross_attn" in name and "in_proj" in name:
                value = value * 0.5
            if name.endswith("level_embed.weight"):
                value = value * 0.1
            if name.endswith(("query_feat.weight", "query_embed.weight")):
                value = normal(p.shape, 1.0)
            if name.startswith("panoptic_head.mask_embed.") and name.endswith(".weight") and p.ndim == 2:
                value = value * 1.5  # sharper mask logits: confident masks
            p.copy_(value)
        head = model.panoptic_head
        # the class embedding of a query: less of the mask-pooled features (alike for large masks),
        # and no response to the mean of the ReLU features (alike for all queries)
        head.mask_pooling_proj[1].weight.mul_(0.3)
        last = head.cls_proj[-1].weight
        last.sub_(last.mean(1, keepdim=True))


def _text_tower(seed: int):
    """A seeded random CLIP text tower (segcli.vocab.clip_text, which draws CLIP's initialisation
    in open_clip's order: the same tower open_clip would build from the seed). Its token embeddings
    are spread out (std 1), and the words of the templates, the start/end tokens and the positions
    carry no signal, so a class embedding depends on the class name only: different classes get
    clearly different embeddings (a random tower would map every sentence of the shared templates
    to nearly the same vector)."""
    from segcli.vocab import clip_text

    tokenizer = clip_text.CLIPTokenizer(context_length=TEXT_CFG["context_length"])
    silent = {tokenizer.sot_token_id, tokenizer.eot_token_id}
    for template in TEMPLATES:
        silent |= set(tokenizer.encode(template.replace("{}", " ")))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tower = clip_text.CLIPTextTransformer(clip_text.text_tower_config(TEXT_CFG, EMBED_DIM))
        with torch.no_grad():
            tower.token_embedding.weight.normal_(0, 1.0)
            tower.token_embedding.weight[sorted(silent)] = 0
            tower.positional_embedding.zero_()
    return tower


def make_model_folder(folder: str | Path, seed: int = SEED) -> Path:
    """Write the synthetic model folder (config.json, weights.safetensors, text_tower.safetensors)."""
    from safetensors.torch import save_file

    from segcli.model.config import config_from_bundle
    from segcli.model.omgseg import build_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = synthetic_config()
    model = build_model(config_from_bundle(config))
    _randomize(model, torch.Generator().manual_seed(seed))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "weights.safetensors"))
    tower = _text_tower(seed + 1)
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(folder / "text_tower.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return folder


def class_embeddings(folder: str | Path) -> torch.Tensor:
    """The folder's own vocabulary embedded with its text tower (no cache)."""
    from segcli.pipeline.engine import resolve_weights
    from segcli.vocab import cache, text

    source = resolve_weights(str(folder))
    emb, _ = cache.get_class_embeddings(source.vocabulary, text.resolve_text_source(str(folder)), cache=False)
    return emb
