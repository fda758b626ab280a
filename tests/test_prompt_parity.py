"""Prompt mode end to end (original-pixel prompts -> image pipeline -> masks at the original
size) against the official interactive results of the golden bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcli.pipeline.engine import Segmenter
from segcli.pipeline.image import ImageOptions, segment_image
from segcli.pipeline.postprocess import upsample_masks
from segcli.pipeline.reader import Frame


@pytest.fixture(scope="module")
def segmenter(bundle):
    emb = torch.from_numpy(bundle.outputs["cls_embed_file"])
    return Segmenter.load(str(bundle.path), device="cpu", precision="fp32", embeddings=emb)


def test_final_masks_from_official_logits(bundle):
    """The official crop + bilinear resize + sigmoid > 0.5 of the prompt mask logits."""
    inp, out = bundle.inputs, bundle.outputs
    pad, img, ori = (tuple(int(v) for v in inp[k]) for k in ("img_pad_shape", "img_img_shape", "img_ori_shape"))
    for run in ("sam_eval", "sam_user_bp0", "sam_user_bp1"):
        logits = upsample_masks(torch.from_numpy(out[f"{run}_mask_logits"]), pad, img, ori)
        masks = (logits.sigmoid() > 0.5).numpy()
        assert (masks != out[f"{run}_masks"]).mean() <= 1e-4, run


def test_user_prompts_in_original_pixels(bundle, segmenter):
    """3 clicks and 1 box given in original pixels reproduce the official masks of each prompt."""
    inp, out = bundle.inputs, bundle.outputs
    sx, sy = (float(v) for v in inp["img_scale_factor"])
    clicks = inp["sam_user_clicks_xy"] / np.array([sx, sy], dtype=np.float32)
    box = inp["sam_user_prompt_boxes"][3] / np.array([sx, sy, sx, sy], dtype=np.float32)
    objects = {i + 1: ([tuple(c)], []) for i, c in enumerate(clicks)}
    objects[4] = ([], [tuple(box)])
    frame = Frame(0, None, inp["img_raw_rgb"], "image")
    res = segment_image(segmenter, frame, ImageOptions(objects=objects))
    assert [s.id for s in res.segments] == [1, 2, 3, 4]
    for s, ref in zip(res.segments, out["sam_user_bp0_masks"]):
        assert s.mask.shape == ref.shape
        assert (s.mask != ref).mean() <= 1e-4
