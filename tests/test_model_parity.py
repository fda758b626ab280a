"""Raw-forward parity with the official implementation, array by array (golden bundle, fp32, CPU).

Tolerances from the golden README: features / queries / mask logits atol=rtol=1e-4,
class logits atol 5e-3 (mask-pooling threshold flips), IoU logits atol 1e-5 (+ rtol 1e-5).

Two thresholds inside the decoder make a query jump by more than float noise when a value sits
within noise of them: mask pooling (`mask logit > 0`, handled by `close_cls`) and the masked
cross-attention (`sigmoid(attention logit) < 0.5`). Seen for real: with one intra-op thread,
one query of clip 2 has an attention logit of 2e-8, its mask pixel flips, and that query moves
by 1.5e-4 from that layer on while the other 19 stay within 2e-5. A query whose attention
margin (`HeadOutput.attn_margins`) fell below ATTN_NEAR at some layer is therefore held, from the
next prediction on, to the README's bound for a different but correct implementation (1e-3,
"anything above is a bug") instead of float noise; every other query keeps the strict bound.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcli.model.checkpoint import load_weights
from segcli.model.config import config_from_bundle
from segcli.model.head import Prompts
from segcli.model.omgseg import build_model

FEAT = dict(atol=1e-4, rtol=1e-4)
CLS = dict(atol=5e-3, rtol=1e-4)
IOU = dict(atol=1e-5, rtol=1e-5)
NEAR = 5e-5  # mask logits agree to ~1e-5, so only pixels this close to 0 can flip
# attention logits carry the mask logits' noise (<= 1e-5 between thread counts in the golden
# README); only one within that of 0 can have the other sign in another run
ATTN_NEAR = 1e-5
FLIPPED = dict(atol=1e-3, rtol=1e-4)  # a query after a possible attention-mask flip (see above)


def flipped_queries(res) -> np.ndarray:
    """(L+1, Q) bool: prediction p of query q follows a decoder layer whose attention mask for q
    had a logit within ATTN_NEAR of the threshold (prediction 0 precedes every layer)."""
    near = torch.stack([m[0] for m in res.attn_margins]).numpy() < ATTN_NEAR  # (L, Q), layer l's mask
    after = np.logical_or.accumulate(near, axis=0)
    flags = np.concatenate([np.zeros_like(after[:1]), after])
    assert flags[-1].mean() <= 0.25, f"{flags[-1].mean():.0%} of the queries sit on the attention threshold"
    return flags


def close_cls(ours: torch.Tensor, ref: np.ndarray, masks: list[torch.Tensor], name: str) -> None:
    """Class logits (L+1, Q, C) of every prediction. The class branch pools the mask features
    inside the BINARISED mask (logit > 0): where one of a query's mask logits lies within float
    noise of 0 the pooled embedding may jump, so, as the golden README allows, those queries
    (min |mask logit| < NEAR in that prediction, a few times the mask-logit tolerance reached)
    are not held to the class-logit tolerance."""
    ours = ours.detach().float().numpy()
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != {ref.shape}"
    near = np.stack([m[0].flatten(1).abs().min(1).values.numpy() < NEAR for m in masks])  # (L+1, Q)
    assert near.mean() <= 0.25, f"{name}: {near.mean():.0%} of the queries sit on the mask threshold"
    err = np.abs(ours - ref).max(-1)
    bad = (err > CLS["atol"] + CLS["rtol"] * np.abs(ref).max(-1)) & ~near
    assert not bad.any(), f"{name}: max abs error {err[~near].max():.3e} on queries away from the threshold"


def close(ours: torch.Tensor, ref: np.ndarray, name: str, atol: float, rtol: float,
          flipped: np.ndarray | None = None) -> None:
    """flipped: bool per leading (query or prediction x query) entry, held to FLIPPED instead."""
    ours = ours.detach().float().numpy()
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != {ref.shape}"
    err = np.abs(ours - ref)
    bound = atol + rtol * np.abs(ref)
    if flipped is not None:
        loose = FLIPPED["atol"] + FLIPPED["rtol"] * np.abs(ref)
        flags = flipped.reshape(flipped.shape + (1,) * (ref.ndim - flipped.ndim))
        bound = np.where(flags, np.maximum(bound, loose), bound)
    assert (err <= bound).all(), f"{name}: max abs error {err.max():.3e}"


@pytest.fixture(scope="module")
def model(bundle):
    m = build_model(config_from_bundle(bundle.config))
    load_weights(m, bundle.weights)
    m.set_class_embeddings(torch.from_numpy(bundle.outputs["cls_embed_file"]))
    return m


@pytest.fixture(scope="module")
def image_feats(model, bundle):
    return model.extract_features(torch.from_numpy(bundle.inputs["img_batch_inputs"]))


@pytest.fixture(scope="module")
def video_feats(model, bundle):
    return model.extract_features(torch.from_numpy(bundle.inputs["vid_batch_inputs"][0]))


def test_class_embedding_buffer(model, bundle):
    close(model.panoptic_head.cls_embed, bundle.outputs["cls_embed_buffer"], "cls_embed_buffer", **IOU)
    assert model.panoptic_head.logit_scale.exp().item() == pytest.approx(bundle.config["head"]["logit_multiplier"])


@pytest.mark.parametrize("prefix", ["img", "vid"])
def test_backbone_and_pixel_decoder(model, bundle, image_feats, video_feats, prefix):
    feats = image_feats if prefix == "img" else video_feats
    out = bundle.outputs
    for i in range(4):
        close(feats[i], out[f"{prefix}_backbone_feat{i}"], f"{prefix}_backbone_feat{i}", **FEAT)
    mask_features, memories = model.panoptic_head.pixel_decoder(feats)
    close(mask_features, out[f"{prefix}_pixdec_mask_features"], "mask_features", **FEAT)
    for i, m in enumerate(memories):
        close(m, out[f"{prefix}_pixdec_ms_feat{i}"], f"{prefix}_pixdec_ms_feat{i}", **FEAT)


def test_image_decoder(model, bundle, image_feats):
    out = bundle.outputs
    res = model.forward_clip(image_feats, 1, all_layers=True)
    flip = flipped_queries(res)
    all_cls = torch.stack([c[0] for c in res.all_cls])
    close_cls(all_cls[..., :-1], out["img_cls_logits_all_layers"][..., :-1], res.all_masks, "img class logits")
    close(all_cls[..., -1], out["img_cls_logits_all_layers"][..., -1], "img iou logits", **IOU, flipped=flip)
    close(torch.stack([m[0, :, 0] for m in res.all_masks]), out["img_mask_logits_all_layers"], "img masks", **FEAT,
          flipped=flip)
    close(torch.stack([q[0] for q in res.layer_queries]), out["img_decoder_layer_queries"], "img layers", **FEAT,
          flipped=flip[1:])
    close(res.query_feat[0], out["img_query_feat"], "img_query_feat", **FEAT, flipped=flip[-1])
    close_cls(res.cls_logits, out["img_pred_cls"][None], res.all_masks[-1:], "img_pred_cls")
    close(res.iou_logits[0], out["img_pred_iou"], "img_pred_iou", **IOU, flipped=flip[-1])
    # the inference path (classification of the last prediction only) gives the same numbers
    fast = model.forward_clip(image_feats, 1)
    assert torch.equal(fast.cls_logits, res.cls_logits)
    assert torch.equal(fast.mask_logits, res.mask_logits)


def test_image_mask_logits_at_padded_resolution(model, bundle, image_feats):
    res = model.forward_clip(image_feats, 1, all_layers=True)
    pad = tuple(bundle.inputs["img_pad_shape"])
    up = torch.nn.functional.interpolate(res.mask_logits[:, :, 0], size=pad, mode="bilinear", align_corners=False)
    close(up[0], bundle.outputs["img_pred_mask_padres"], "img_pred_mask_padres", **FEAT,
          flipped=flipped_queries(res)[-1])


def test_video_clips(model, bundle, video_feats):
    out = bundle.outputs
    ranges = out["vid_clip_frame_ranges"]
    for c, (start, end) in enumerate(ranges):
        res = model.forward_clip([f[start:end] for f in video_feats], int(end - start), all_layers=True)
        flip = flipped_queries(res)
        all_cls = torch.stack([q[0] for q in res.all_cls])
        ref = out[f"vid_clip{c}_cls_logits_all_layers"]
        close_cls(all_cls[..., :-1], ref[..., :-1], res.all_masks, f"clip{c} class logits")
        close(all_cls[..., -1], ref[..., -1], f"clip{c} iou logits", **IOU, flipped=flip)
        close(res.mask_logits[0], out[f"vid_clip{c}_mask_logits"], f"clip{c} masks", **FEAT, flipped=flip[-1])
        close(res.query_feat[0], out[f"vid_clip{c}_query_feat"], f"clip{c} query_feat", **FEAT, flipped=flip[-1])
        layers = torch.stack([q[0] for q in res.layer_queries])
        close(layers, out[f"vid_clip{c}_decoder_layer_queries"], f"clip{c} layers", **FEAT, flipped=flip[1:])
        close_cls(res.cls_logits, out[f"vid_clip{c}_pred_cls"][None], res.all_masks[-1:], f"clip{c} pred_cls")
        close(res.iou_logits[0], out[f"vid_clip{c}_pred_iou"], f"clip{c} pred_iou", **IOU, flipped=flip[-1])


@pytest.mark.parametrize("run", ["sam_eval", "sam_user_bp0", "sam_user_bp1"])
def test_prompt_mode(model, bundle, image_feats, run):
    inp, out = bundle.inputs, bundle.outputs
    if run == "sam_eval":
        boxes, bp = inp["sam_eval_prompt_boxes"], inp["sam_eval_prompt_bp"]
    else:
        boxes, bp = inp["sam_user_prompt_boxes"], inp[f"{run}_bp"]
    h, w = (int(v) for v in inp["img_img_shape"])
    norm = torch.from_numpy(boxes).float() / torch.tensor([w, h, w, h], dtype=torch.float32)
    res = model.forward_prompts(image_feats, Prompts(norm[None], torch.from_numpy(bp)[None]), all_layers=True)
    flip = flipped_queries(res)
    all_cls = torch.stack([q[0] for q in res.all_cls])
    ref = out[f"{run}_cls_logits_all_layers"]
    close_cls(all_cls[..., :-1], ref[..., :-1], res.all_masks, f"{run} class logits")
    close(all_cls[..., -1], ref[..., -1], f"{run} iou logits", **IOU, flipped=flip)
    close(res.mask_logits[0, :, 0], out[f"{run}_mask_logits"], f"{run} masks", **FEAT, flipped=flip[-1])
    close(res.query_feat[0], out[f"{run}_query_feat"], f"{run} query_feat", **FEAT, flipped=flip[-1])
    close(res.iou_logits[0], out[f"{run}_pred_iou"], f"{run} iou", **IOU, flipped=flip[-1])


def test_prompts_are_independent(model, bundle, image_feats):
    """Each prompt attends only to itself: decoding prompts one by one gives the same masks."""
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.3, 0.9, 0.9]])
    bp = torch.zeros(1, 2, dtype=torch.long)
    both = model.forward_prompts(image_feats, Prompts(boxes[None], bp))
    for i in range(2):
        one = model.forward_prompts(image_feats, Prompts(boxes[None, i:i + 1], bp[:, :1]))
        torch.testing.assert_close(one.mask_logits[0, 0], both.mask_logits[0, i], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("prefix", ["imgov", "vidov"])
def test_open_vocabulary_ensemble(model, bundle, image_feats, video_feats, prefix):
    """CLIP mask pooling of the predicted masks, the frozen CLIP head and the geometric ensemble."""
    inp, out = bundle.inputs, bundle.outputs
    alpha, beta = (bundle.config["detector"]["open_vocab"][k] for k in ("alpha", "beta"))
    if prefix == "imgov":
        feats, pad = image_feats, tuple(int(v) for v in inp["img_pad_shape"])
        res = model.forward_clip(feats, 1)
        masks_s4 = res.mask_logits[0]  # (Q, 1, h4, w4)
    else:
        feats, pad = video_feats, tuple(int(v) for v in inp["vid_pad_shape"])
        masks_s4 = torch.from_numpy(out["vid_merged_mask_logits_q4_derived"])  # (Q, T, h4, w4)
    q, t = masks_s4.shape[:2]
    padres = torch.nn.functional.interpolate(masks_s4.flatten(0, 1)[None], size=pad, mode="bilinear",
                                             align_corners=False)[0].view(q, t, *pad)
    close(model.backbone.get_clip_feature(feats[-1]), out[f"{prefix}_clip_feature"], "clip feature", **FEAT)
    # pooling summed frame by frame (as the streaming pipeline does) equals pooling the whole tube
    sums = counts = 0
    for frame in range(t):
        s, c = model.clip_pool_sums(feats[-1][frame:frame + 1], padres[:, frame:frame + 1])
        sums, counts = sums + s, counts + c
    pooled = sums / (counts[:, None] + 1e-8)
    close(pooled, out[f"{prefix}_pooled_clip_feat"], "pooled clip feature", **FEAT)
    proj = model.backbone.forward_feat(pooled[None])[0]
    close(proj, out[f"{prefix}_pooled_proj"], "pooled projection", **FEAT)
    close(model.panoptic_head.forward_logit(proj[None])[0], out[f"{prefix}_clip_logit"], "clip logit", **CLS)
    seen = torch.from_numpy(inp["ov_overlapping"]) > 0.5
    in_cls = torch.from_numpy(out[f"{prefix}_in_cls"])
    ens = model.open_vocab_logits(in_cls, sums, counts, seen, alpha, beta)
    close(ens, out[f"{prefix}_out_cls"], "ensemble output", **CLS)
