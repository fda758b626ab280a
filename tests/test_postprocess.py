"""segcli.pipeline.postprocess vs the official post-processing (golden bundle) and its own invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segcli.pipeline.postprocess import (
    LazyMasks,
    instance_frame,
    instance_postprocess,
    masks_to_boxes,
    match_first_frame,
    paint_vos,
    panoptic_postprocess,
    panoptic_segments,
    proposal_postprocess,
    select_instances,
    select_proposals,
    semantic_postprocess,
    upsample_masks,
)
from segcli.pipeline.tracker import ClipAssociator

MAX_MISMATCH = 1e-4  # golden README: at most 1e-4 of the pixels of a map may differ


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _assert_map(ours: torch.Tensor, ref: np.ndarray):
    assert ours.shape == ref.shape
    assert ours.dtype == torch.int32
    mismatch = int((ours.numpy() != ref).sum())
    assert mismatch <= MAX_MISMATCH * ref.size, f"{mismatch} of {ref.size} pixels differ"


def _sorted_ref(labels, scores, *rest):
    order = sorted(range(len(labels)), key=lambda k: (-float(scores[k]), int(labels[k])))
    return [np.asarray(x)[order] for x in (labels, scores, *rest)]


def _assert_instances(res, labels, scores, boxes, masks):
    labels, scores, boxes, masks = _sorted_ref(labels, scores, boxes, masks)
    assert np.array_equal(res.labels.numpy(), labels)
    np.testing.assert_allclose(res.scores.numpy(), scores, atol=1e-4, rtol=0)
    np.testing.assert_allclose(res.boxes.numpy(), boxes, atol=0.5, rtol=0)
    assert int((res.masks.numpy() != masks).sum()) <= MAX_MISMATCH * masks.size


def _cfg(bundle):
    cfg = bundle.config
    return cfg["test_cfg"], cfg["classes"]["num_things_classes"]


def _pan(bundle, cls, masks, iou_thr=None, chunk=32):
    tc, num_things = _cfg(bundle)
    return panoptic_postprocess(
        cls, masks, num_things,
        iou_thr=tc["iou_thr"] if iou_thr is None else iou_thr,
        object_mask_thr=tc["object_mask_thr"], filter_low_score=tc["filter_low_score"],
        instance_offset=bundle.config["INSTANCE_OFFSET"], chunk=chunk,
    )  # fmt: skip


# --------------------------------------------------------------------------- synthetic logits


@pytest.mark.parametrize("variant", ["rescale", "norescale"])
@pytest.mark.parametrize("chunk", [3, 64])
def test_golden_synthetic(bundle, variant, chunk):
    i, o = bundle.inputs, bundle.outputs
    tc, num_things = _cfg(bundle)
    mask_pred = _t(i["syn_mask_pred"])  # already at the padded input resolution
    ori = i["syn_ori_shape"] if variant == "rescale" else None
    masks = LazyMasks(mask_pred, mask_pred.shape[-2:], i["syn_img_shape"], ori)
    cls = _t(i["syn_mask_cls"])
    prefix = f"syn_{variant}"

    _assert_map(_pan(bundle, cls, masks, chunk=chunk), o[f"{prefix}_pan_seg"])
    res = instance_postprocess(cls, masks, num_things, tc["max_per_image"], chunk=chunk)
    _assert_instances(
        res,
        o[f"{prefix}_ins_labels"],
        o[f"{prefix}_ins_scores"],
        o[f"{prefix}_ins_bboxes"],
        o[f"{prefix}_ins_masks"],
    )
    num_proposals = bundle.config["test_cfg_variants"]["syn_*"]["num_proposals"]
    proposals = proposal_postprocess(_t(i["syn_iou"]), masks, num_proposals, chunk=chunk)
    ref = o[f"{prefix}_proposals"]
    assert proposals.shape == ref.shape
    assert int((proposals.numpy() != ref).sum()) <= MAX_MISMATCH * ref.size


# --------------------------------------------------------------------------- image


def test_golden_image(bundle):
    i, o = bundle.inputs, bundle.outputs
    tc, num_things = _cfg(bundle)
    logits_s4 = _t(o["img_mask_logits_all_layers"][-1])
    padres = upsample_masks(logits_s4, i["img_pad_shape"], i["img_pad_shape"])
    np.testing.assert_allclose(padres.numpy(), o["img_pred_mask_padres"], atol=1e-4, rtol=0)

    masks = LazyMasks(logits_s4, i["img_pad_shape"], i["img_img_shape"], i["img_ori_shape"])
    assert masks.shape[1:] == tuple(i["img_ori_shape"])
    cls = _t(o["img_pred_cls"])
    _assert_map(_pan(bundle, cls, masks), o["img_pan_seg"])
    res = instance_postprocess(cls, masks, num_things, tc["max_per_image"])
    _assert_instances(res, o["img_ins_labels"], o["img_ins_scores"], o["img_ins_bboxes"], o["img_ins_masks"])
    # eager masks at the output size give the same result as the lazy ones
    eager = upsample_masks(logits_s4, i["img_pad_shape"], i["img_img_shape"], i["img_ori_shape"])
    assert torch.equal(_pan(bundle, cls, eager), _pan(bundle, cls, masks))


# --------------------------------------------------------------------------- video


@pytest.fixture(scope="module")
def merged_video(bundle):
    """Video-level logits and per-frame lazy masks from the clips, through our own associator."""
    o, i = bundle.outputs, bundle.inputs
    assoc = ClipAssociator()
    masks = []
    for c in range(len(o["vid_clip_frame_ranges"])):
        out = assoc.add(
            _t(o[f"vid_clip{c}_pred_cls"]), _t(o[f"vid_clip{c}_pred_iou"]),
            _t(o[f"vid_clip{c}_query_feat"]), _t(o[f"vid_clip{c}_mask_logits"]),
        )  # fmt: skip
        masks.append(out.per_query)
    merged = torch.cat(masks, dim=1)
    frames = [
        LazyMasks(merged[:, t], i["vid_pad_shape"], i["vid_img_shape"], i["vid_ori_shape"])
        for t in range(merged.shape[1])
    ]
    return assoc.mean_cls(), assoc.mean_iou(), merged, frames


def test_golden_video_merged_frame0(bundle, merged_video):
    _, _, merged, _ = merged_video
    i, o = bundle.inputs, bundle.outputs
    padres = upsample_masks(merged[:, 0], i["vid_pad_shape"], i["vid_pad_shape"])
    np.testing.assert_allclose(padres.numpy(), o["vid_merged_mask_logits_frame0_padres"], atol=1e-4, rtol=0)


def test_golden_video_panoptic(bundle, merged_video):
    cls, _, _, frames = merged_video
    o = bundle.outputs
    lo_thr = bundle.config["test_cfg_variants"]["vidlo_"]["iou_thr"]
    for t, masks in enumerate(frames):
        pan = _pan(bundle, cls, masks)
        _assert_map(pan, o["vid_pan_seg"][t])
        _assert_map(pan, o["vidperm_pan_seg"][t])  # the association undid the injected permutation
        _assert_map(_pan(bundle, cls, masks, iou_thr=lo_thr), o["vidlo_pan_seg"][t])


def test_golden_video_instances(bundle, merged_video):
    cls, _, _, frames = merged_video
    o = bundle.outputs
    tc, num_things = _cfg(bundle)
    sel = select_instances(cls, num_things, tc["max_per_image"])  # once per video
    per_frame = [instance_frame(masks, sel.class_scores, sel.query_idx) for masks in frames]
    s0 = per_frame[0][1].numpy()
    # the same tracks in every frame: order both sides once, by frame 0 (score desc, label)
    ours = sorted(range(len(s0)), key=lambda k: (-s0[k], int(sel.labels[k])))
    # iou_thr (vidlo_) does not touch instances; vidperm_ checks the association end to end
    for prefix in ("vid", "vidlo", "vidperm"):
        ref_labels = o[f"{prefix}_ins_labels"]
        assert len(sel.query_idx) == len(ref_labels)
        ref = sorted(range(len(ref_labels)), key=lambda k: (-o[f"{prefix}_ins_scores"][0, k], ref_labels[k]))
        assert np.array_equal(sel.labels.numpy()[ours], ref_labels[ref])
        for t, (bin_masks, scores, boxes) in enumerate(per_frame):
            np.testing.assert_allclose(
                scores.numpy()[ours], o[f"{prefix}_ins_scores"][t][ref], atol=1e-4, rtol=0
            )
            np.testing.assert_allclose(
                boxes.numpy()[ours], o[f"{prefix}_ins_bboxes"][t][ref], atol=0.5, rtol=0
            )
            ref_masks = o[f"{prefix}_ins_masks"][t][ref]
            assert int((bin_masks.numpy()[ours] != ref_masks).sum()) <= MAX_MISMATCH * ref_masks.size


def test_golden_vos(bundle, merged_video):
    _, iou, _, frames = merged_video
    i, o = bundle.inputs, bundle.outputs
    num_proposals = bundle.config["test_cfg_variants"]["vos_"]["num_proposals"]
    assignment = None
    for t, masks in enumerate(frames):
        proposals = proposal_postprocess(iou, masks, num_proposals)
        ref = o["vos_proposals_raw"][t]
        assert proposals.shape == ref.shape
        assert int((proposals.numpy() != ref).sum()) <= MAX_MISMATCH * ref.size
        if t == 0:
            assignment = match_first_frame(proposals, _t(i["vos_first_frame_masks"]), i["vos_instance_ids"])
            assert sorted(assignment.values()) == sorted(int(x) for x in i["vos_instance_ids"])
        _assert_map(paint_vos(proposals, assignment), o["vos_seg_maps"][t])


# --------------------------------------------------------------------------- invariants


def _random_case(seed=0, q=9, c=5, h=64, w=96):
    gen = torch.Generator().manual_seed(seed)
    cls = torch.randn(q, c + 1, generator=gen) * 3
    logits = torch.randn(q, h // 4, w // 4, generator=gen) * 4
    return cls, logits


def test_argmax_ties_go_to_the_first_query_across_chunks():
    # queries 1 and 3 are identical (same class logits, same mask): official argmax gives pixels
    # to query 1, so query 3 owns nothing and gets no instance id
    cls = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 9.0], [0, 5.0, 0]])
    masks = torch.full((4, 6, 6), -9.0)
    masks[1, :, :3] = 9.0
    masks[3, :, :3] = 9.0
    masks[0, :, 3:] = 9.0
    for chunk in (1, 2, 3, 4):
        pan = panoptic_postprocess(cls, masks, num_things=2, chunk=chunk)
        assert (pan[:, :3] == 1 + 2 * 1000).all()  # query 1: class 1, second thing segment
        assert (pan[:, 3:] == 0 + 1 * 1000).all()  # query 0: class 0, first thing segment
        id_map, segments = panoptic_segments(cls, masks, num_things=2, chunk=chunk)
        assert (id_map[:, :3] == 2).all() and (id_map[:, 3:] == 1).all()
        assert [(s.id, s.query, s.label, s.area) for s in segments] == [(1, 0, 0, 18), (2, 1, 1, 18)]


def test_chunking_and_laziness_do_not_change_results():
    cls, logits = _random_case()
    # note: for tiny planes (output under ~40 x 90) torch's CPU bilinear kernel picks another code
    # path by channel count and a subset can differ from the full set by 1 ulp; not at these sizes
    lazy = LazyMasks(logits, (64, 96), (61, 90), (122, 180))
    eager = upsample_masks(logits, (64, 96), (61, 90), (122, 180))
    ref = panoptic_postprocess(cls, eager, num_things=3, iou_thr=0.5, chunk=1000)
    for chunk in (1, 2, 5):
        assert torch.equal(panoptic_postprocess(cls, lazy, num_things=3, iou_thr=0.5, chunk=chunk), ref)
    a = instance_postprocess(cls, lazy, 3, 20, chunk=2)
    b = instance_postprocess(cls, eager, 3, 20, chunk=1000)
    assert (
        torch.equal(a.masks, b.masks) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)
    )
    assert torch.equal(lazy[torch.tensor([4, 1])], eager[[4, 1]])
    assert torch.equal(lazy[2], eager[2])


class CountingMasks(LazyMasks):
    def __init__(self, *args):
        super().__init__(*args)
        self.requests: list[int] = []

    def __getitem__(self, idx):
        out = super().__getitem__(idx)
        self.requests.append(out.shape[0])
        return out


def test_memory_is_bounded_by_the_chunk():
    cls, logits = _random_case(q=40)
    masks = CountingMasks(logits, (64, 96), (64, 96), (64, 96))
    panoptic_postprocess(cls, masks, num_things=3, chunk=4)
    instance_postprocess(cls, masks, 3, 30, chunk=4)
    proposal_postprocess(cls[:, :1], masks, 10, chunk=4)
    semantic_postprocess(cls, masks, chunk=4)
    assert masks.requests and max(masks.requests) <= 4


def test_panoptic_segments_agree_with_official_encoding():
    cls, logits = _random_case(seed=3, q=12)
    masks = LazyMasks(logits, (64, 96), (64, 96), (80, 120))
    num_things = 2
    pan = panoptic_postprocess(cls, masks, num_things, iou_thr=0.3, instance_offset=1000)
    id_map, segments = panoptic_segments(cls, masks, num_things, iou_thr=0.3)
    num_classes = cls.shape[1] - 1
    assert ((id_map == 0) == (pan == num_classes)).all()  # same void pixels
    for seg in segments:
        region = id_map == seg.id
        assert int(region.sum()) == seg.area > 0
        values = pan[region].unique()
        assert len(values) == 1  # each stable segment is one official segment
        assert int(values[0]) % 1000 == seg.label
        assert seg.isthing == (seg.label < num_things)
        if seg.isthing:
            assert seg.id == seg.query + 1
    stuff_labels = [s.label for s in segments if not s.isthing]
    assert len(stuff_labels) == len(set(stuff_labels))  # one segment per stuff class


def test_upsample_two_step_differs_from_one_step_and_crops():
    _, logits = _random_case()
    two = upsample_masks(logits, (64, 96), (61, 90), (122, 180))
    assert two.shape == (9, 122, 180)
    padded = F.interpolate(logits[None], size=(64, 96), mode="bilinear", align_corners=False)[0]
    assert torch.equal(upsample_masks(logits, (64, 96), (61, 90)), padded[:, :61, :90])
    one = F.interpolate(logits[None, :, :16, :23], size=(122, 180), mode="bilinear", align_corners=False)[0]
    assert not torch.allclose(one, two)  # why the official two-step chain must be kept
    assert upsample_masks(logits[:0], (64, 96), (61, 90), (122, 180)).shape == (0, 122, 180)


def test_instance_selection_rules():
    # 2 queries x 3 classes (class 2 is stuff with num_things=2)
    cls = torch.log(torch.tensor([[0.5, 0.1, 0.3, 0.1], [0.05, 0.6, 0.05, 0.3]]))
    sel = select_instances(cls, num_things=2, max_per_image=3)
    # top-3 of (0.5, 0.1, 0.3, 0.05, 0.6, 0.05) = 0.6 (q1,c1), 0.5 (q0,c0), 0.3 (q0,c2: stuff, dropped)
    assert sel.query_idx.tolist() == [1, 0] and sel.labels.tolist() == [1, 0]
    torch.testing.assert_close(sel.class_scores, torch.tensor([0.6, 0.5]))
    masks = torch.full((2, 5, 6), -5.0)
    masks[0, 1:3, 2:5] = 5.0
    bin_masks, scores, boxes = instance_frame(masks, sel.class_scores, sel.query_idx)
    assert bin_masks[0].sum() == 0 and scores[0] == 0  # query 1 has an empty mask
    assert boxes[0].tolist() == [0, 0, 0, 0] and boxes[1].tolist() == [2, 1, 5, 3]
    expected = 0.5 * torch.sigmoid(torch.tensor(5.0)) * 6 / (6 + 1e-6)
    torch.testing.assert_close(scores[1], expected)


def test_masks_to_boxes():
    m = torch.zeros(3, 4, 5, dtype=torch.bool)
    m[0, 1:3, 1:4] = True
    m[2, 3, 4] = True
    assert masks_to_boxes(m).tolist() == [[1, 1, 4, 3], [0, 0, 0, 0], [4, 3, 5, 4]]


def test_semantic_extension():
    cls = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])  # query 0 -> class 0, query 1 -> class 1
    masks = torch.full((2, 4, 4), -6.0)
    masks[0, :, :2] = 6.0
    masks[1, :, 2:] = 6.0
    sem = semantic_postprocess(cls, masks, chunk=1)
    assert sem.shape == (4, 4)
    assert (sem[:, :2] == 0).all() and (sem[:, 2:] == 1).all()


def test_proposals_order_and_vos_painting():
    iou = torch.tensor([[0.0], [3.0], [-2.0], [1.0]])
    assert select_proposals(iou, 3).tolist() == [0, 3, 1]  # ascending objectness
    masks = torch.full((4, 4, 4), -5.0)
    masks[1, :2] = 5.0  # best proposal: top half
    masks[3, :, :2] = 5.0  # second: left half
    props = proposal_postprocess(iou, masks, 3)
    assert props.shape == (3, 4, 4) and props[0].sum() == 0
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[0, :, :2] = True
    gt[1, :2] = True
    assignment = match_first_frame(props, gt, [7, 3])
    assert assignment == {1: 7, 2: 3}
    seg = paint_vos(props, assignment)
    assert seg[0, 0] == 3  # later (better) proposal overwrites the overlap
    assert seg[3, 0] == 7 and seg[3, 3] == 0
    # an object with IoU 0 to everything still gets a proposal; empty-vs-empty IoU is 0, not NaN
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert len(match_first_frame(props, empty, [5])) == 1
    with pytest.raises(ValueError):
        match_first_frame(props, torch.zeros(1, 3, 3, dtype=torch.bool), [1])
