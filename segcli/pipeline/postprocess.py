"""Task post-processing of per-frame query predictions (spec §1.5, §6.2–§6.4, §6.7, §7.5, §7.6).

Inputs per frame: class logits `cls` (Q, C+1) (last column = background), objectness logits
(Q, 1) and mask logits. Mask logits come either as a tensor (Q, H, W) already at the output
resolution, or as `LazyMasks`: the stride-4 logits plus the frame metas, upsampled on demand
for the queries a step actually needs. Every function walks the queries in chunks, so with
`LazyMasks` the peak memory is O(chunk * H * W) instead of the official O(Q * H * W)
(300 x 720 x 1280 x 4 B = 1.1 GB per frame).

Official semantics are reproduced operation by operation (same thresholds: sigmoid >= 0.5 for
panoptic, logit > 0 for instances, sigmoid > 0.5 for proposals; same tie-breaking of argmax).
Deviations are opt-in and named: `panoptic_segments` (stable ids), the deterministic ordering
of instances, and `semantic_postprocess` (not in OMG-Seg).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

INSTANCE_OFFSET = 1000  # mmdet panoptic encoding: thing id = class + instance_id * INSTANCE_OFFSET
DEFAULT_CHUNK = 8  # queries upsampled at once: ~8 x H x W x 4 B per buffer (66 MB at 1080p)


# ---------------------------------------------------------------------------------------------
# Mapping mask logits back to the frame (§1.5)
# ---------------------------------------------------------------------------------------------


def upsample_masks(
    mask_logits_s4: torch.Tensor,
    pad_shape: Sequence[int],
    img_shape: Sequence[int],
    ori_shape: Sequence[int] | None = None,
) -> torch.Tensor:
    """(N, h4, w4) stride-4 logits -> (N, H, W) logits at the original frame size.

    The official two-step chain: bilinear (align_corners=False) to the padded input size,
    crop the valid [:h, :w] region (img_shape), then bilinear to ori_shape. With ori_shape=None
    the result stays at img_shape (official rescale=False). Works on any subset of queries.
    """
    x = mask_logits_s4.float()
    if x.ndim != 3:
        raise ValueError(f"expected (N, h, w) mask logits, got shape {tuple(x.shape)}")
    pad_h, pad_w = int(pad_shape[0]), int(pad_shape[1])
    if x.shape[0] == 0:
        h, w = (ori_shape if ori_shape is not None else img_shape)[:2]
        return x.new_zeros((0, int(h), int(w)))
    if tuple(x.shape[-2:]) != (pad_h, pad_w):
        x = F.interpolate(x[None], size=(pad_h, pad_w), mode="bilinear", align_corners=False)[0]
    img_h, img_w = int(img_shape[0]), int(img_shape[1])
    x = x[:, :img_h, :img_w]
    if ori_shape is not None and (int(ori_shape[0]), int(ori_shape[1])) != (img_h, img_w):
        # (a same-size bilinear resize is an exact copy, so it is skipped)
        ori_h, ori_w = int(ori_shape[0]), int(ori_shape[1])
        x = F.interpolate(x[:, None], size=(ori_h, ori_w), mode="bilinear", align_corners=False)[:, 0]
    return x


class LazyMasks:
    """Stride-4 mask logits of one frame, upsampled to the output size only when indexed.

    `masks[idx]` (int, slice, list or index tensor) returns float logits (n, H, W); the
    values equal `upsample_masks(all)[idx]` because every query is resized independently.
    """

    def __init__(
        self,
        mask_logits_s4: torch.Tensor,
        pad_shape: Sequence[int],
        img_shape: Sequence[int],
        ori_shape: Sequence[int] | None = None,
    ):
        if mask_logits_s4.ndim != 3:
            raise ValueError(f"expected (Q, h4, w4) mask logits, got shape {tuple(mask_logits_s4.shape)}")
        self.logits_s4 = mask_logits_s4
        self.pad_shape = (int(pad_shape[0]), int(pad_shape[1]))
        self.img_shape = (int(img_shape[0]), int(img_shape[1]))
        self.ori_shape = None if ori_shape is None else (int(ori_shape[0]), int(ori_shape[1]))

    @property
    def shape(self) -> tuple[int, int, int]:
        h, w = self.ori_shape if self.ori_shape is not None else self.img_shape
        return (int(self.logits_s4.shape[0]), h, w)

    def __len__(self) -> int:
        return int(self.logits_s4.shape[0])

    def __getitem__(self, idx) -> torch.Tensor:
        sub = self.logits_s4[idx]
        if sub.ndim == 2:
            return upsample_masks(sub[None], self.pad_shape, self.img_shape, self.ori_shape)[0]
        return upsample_masks(sub, self.pad_shape, self.img_shape, self.ori_shape)


MaskInput = Union[torch.Tensor, LazyMasks]


def _out_hw(masks: MaskInput) -> tuple[int, int]:
    return int(masks.shape[-2]), int(masks.shape[-1])


def _device(masks: MaskInput) -> torch.device:
    """Where the masks live; every buffer of a step is allocated there (CPU or GPU)."""
    return masks.logits_s4.device if isinstance(masks, LazyMasks) else masks.device


def _take(masks: MaskInput, idx: torch.Tensor) -> torch.Tensor:
    """Float logits (n, H, W) of the queries `idx` (upsampled now when lazy); always a fresh tensor
    (advanced indexing copies), so callers may modify it in place."""
    idx = torch.as_tensor(idx, dtype=torch.int64)
    if len(idx) == 0:
        h, w = _out_hw(masks)
        return torch.zeros((0, h, w), device=_device(masks))
    return masks[idx].float()


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


# ---------------------------------------------------------------------------------------------
# Panoptic (§6.2)
# ---------------------------------------------------------------------------------------------


@dataclass
class PanopticSegment:
    id: int  # value in the id map: query slot + 1 (stable across the frames of a video)
    query: int  # query slot
    label: int  # class index (things first)
    score: float  # max softmax probability of the query
    isthing: bool
    area: int  # pixels in this frame


def _panoptic_keep(cls: torch.Tensor, object_mask_thr: float):
    """Kept queries (in query order), their max-probability scores and labels."""
    num_classes = cls.shape[-1] - 1
    scores, labels = F.softmax(cls.float(), dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_thr)
    keep_idx = torch.nonzero(keep, as_tuple=False)[:, 0]
    return keep_idx, scores[keep], labels[keep]


def _panoptic_accepted(
    cls: torch.Tensor,
    masks: MaskInput,
    iou_thr: float,
    object_mask_thr: float,
    filter_low_score: bool,
    chunk: int,
):
    """The official fusion loop, chunked. Yields (query, label, score, segment bool (H,W)) for every
    segment the official code writes, in the order it writes them, then returns.

    Pass 1: owner = argmax_k score_k * sigmoid(M_k) over the kept queries, chunk by chunk; a later
    query takes a pixel only with a strictly larger value, which is torch.argmax's rule
    (first maximum wins). Pass 2 needs the masks again only for queries owning pixels
    (area == 0 is skipped by the official code).
    """
    keep_idx, keep_scores, keep_labels = _panoptic_keep(cls, object_mask_thr)
    h, w = _out_hw(masks)
    num_kept = len(keep_idx)
    if num_kept == 0:
        return
    best_val = torch.full((h, w), float("-inf"), device=_device(masks))
    # index into the kept list; int32 (at most a few hundred queries): the per-query fill and the
    # per-segment comparison below move half the bytes of int64
    owner = torch.zeros((h, w), dtype=torch.int32, device=best_val.device)
    for s, e in _chunks(num_kept, chunk):
        # score_k * sigmoid(M_k), in place to hold one (chunk, H, W) buffer (same products as official)
        prob = _take(masks, keep_idx[s:e]).sigmoid_().mul_(keep_scores[s:e].view(-1, 1, 1))
        # a running strict maximum in query order = torch.argmax's "first maximum wins"
        # (and ~10x faster than argmax over dim 0 of a (chunk, H, W) tensor on CPU)
        for j in range(prob.shape[0]):
            better = prob[j] > best_val
            torch.maximum(best_val, prob[j], out=best_val)
            owner.masked_fill_(better, s + j)
    del best_val
    area = torch.bincount(owner.flatten(), minlength=num_kept)

    candidates = torch.nonzero(area > 0, as_tuple=False)[:, 0]  # kept positions, ascending
    # host copies of the per-query numbers, once (not one device sync per segment)
    area_h, idx_h, labels_h, scores_h = area.tolist(), keep_idx.tolist(), keep_labels.tolist(), keep_scores.tolist()
    for s, e in _chunks(len(candidates), chunk):
        ks = candidates[s:e]
        foreground = _take(masks, keep_idx[ks]).sigmoid() >= 0.5
        # an int32 sum: a bool tensor's per-row sum in int64 goes through a widened copy (20x slower)
        original_areas = foreground.flatten(1).sum(1, dtype=torch.int32).tolist()
        for j, k in enumerate(ks.tolist()):
            mask_area, original_area = area_h[k], original_areas[j]
            if original_area == 0 or mask_area / original_area < iou_thr:
                continue
            seg = owner == k
            if filter_low_score:
                seg = seg & foreground[j]
            yield idx_h[k], labels_h[k], scores_h[k], seg


def panoptic_postprocess(
    cls: torch.Tensor,
    masks: MaskInput,
    num_things: int,
    iou_thr: float = 0.8,
    object_mask_thr: float = 0.0,
    filter_low_score: bool = True,
    instance_offset: int = INSTANCE_OFFSET,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Official panoptic map (H, W) int32: thing = class + instance_offset * instance_id with
    per-frame ordinal instance ids (1, 2, ... in query order), stuff = class, void = num_classes.
    """
    num_classes = cls.shape[-1] - 1
    h, w = _out_hw(masks)
    pan = torch.full((h, w), num_classes, dtype=torch.int32, device=_device(masks))
    instance_id = 1
    for _, label, _, seg in _panoptic_accepted(cls, masks, iou_thr, object_mask_thr, filter_low_score, chunk):
        if label >= num_things:
            pan[seg] = label  # stuff: all segments of one class merge, instance 0
        else:
            pan[seg] = label + instance_id * instance_offset
            instance_id += 1
    return pan


def panoptic_segments(
    cls: torch.Tensor,
    masks: MaskInput,
    num_things: int,
    iou_thr: float = 0.8,
    object_mask_thr: float = 0.0,
    filter_low_score: bool = True,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, list[PanopticSegment]]:
    """The official panoptic fusion with STABLE ids for the CLI (deviation from the encoding only).

    Returns an int32 id map (0 = void, otherwise query slot + 1) and the segments present.
    Pixels are assigned exactly as in `panoptic_postprocess`. Things keep their query slot, so
    the same object has the same id in every frame of a video (the keep set depends only on the
    shared video-level class logits). Stuff segments of one class merge, as official, under the
    lowest kept slot of that class; its score is that slot's score.
    """
    keep_idx, keep_scores, keep_labels = _panoptic_keep(cls, object_mask_thr)
    stuff_owner: dict[int, tuple[int, float]] = {}  # class -> (lowest kept slot, its score)
    for q, s, lab in zip(keep_idx.tolist(), keep_scores.tolist(), keep_labels.tolist()):
        if lab >= num_things and lab not in stuff_owner:
            stuff_owner[lab] = (q, s)

    h, w = _out_hw(masks)
    id_map = torch.zeros((h, w), dtype=torch.int32, device=_device(masks))
    segments: dict[int, PanopticSegment] = {}
    for query, label, score, seg in _panoptic_accepted(
        cls, masks, iou_thr, object_mask_thr, filter_low_score, chunk
    ):
        isthing = label < num_things
        if not isthing:
            query, score = stuff_owner[label]
        area = int(seg.sum())
        if area == 0:
            continue
        sid = query + 1
        id_map[seg] = sid
        if sid in segments:
            segments[sid].area += area
        else:
            segments[sid] = PanopticSegment(sid, query, label, score, isthing, area)
    return id_map, sorted(segments.values(), key=lambda s: s.id)


# ---------------------------------------------------------------------------------------------
# Instance (§6.3, §7.5)
# ---------------------------------------------------------------------------------------------


@dataclass
class InstanceSelection:
    """Which (query, class) pairs are instances; depends only on the class logits."""

    query_idx: torch.Tensor  # (K,) int64
    labels: torch.Tensor  # (K,) int64, things only
    class_scores: torch.Tensor  # (K,) float32 softmax probability, descending


@dataclass
class InstanceResult:
    labels: torch.Tensor  # (K,) int64
    scores: torch.Tensor  # (K,) float32: class probability x mask score
    boxes: torch.Tensor  # (K, 4) float32 x1, y1, x2 + 1, y2 + 1 (mmdet mask2bbox); zeros if empty
    masks: torch.Tensor  # (K, H, W) bool (logit > 0)
    query_idx: torch.Tensor  # (K,) int64 query slot of each instance


def select_instances(cls: torch.Tensor, num_things: int, max_per_image: int) -> InstanceSelection:
    """Official top-k over the flattened (query, class) probabilities, background dropped after
    the softmax; stuff labels are removed after the top-k, so fewer than max_per_image remain.

    The official `topk(sorted=False)` leaves the order undefined; here the pairs come sorted by
    class probability (descending), ties by flattened index (query-major), which is stable.
    """
    num_classes = cls.shape[-1] - 1
    scores = F.softmax(cls.float(), dim=-1)[:, :-1]
    flat = scores.flatten()
    k = min(int(max_per_image), flat.numel())
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    labels = order % num_classes
    query_idx = order // num_classes
    is_thing = labels < num_things
    return InstanceSelection(query_idx[is_thing], labels[is_thing], flat[order][is_thing])


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """mmdet mask2bbox: (K, H, W) bool -> (K, 4) float32 x1, y1, x2 + 1, y2 + 1; zeros for empty masks."""
    num = masks.shape[0]
    boxes = torch.zeros((num, 4), dtype=torch.float32, device=masks.device)
    if num == 0:
        return boxes
    x_any = masks.any(dim=1)  # (K, W)
    y_any = masks.any(dim=2)  # (K, H)
    w, h = x_any.shape[1], y_any.shape[1]
    nonempty = x_any.any(dim=1)
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    x1 = torch.where(x_any, xs, w).min(dim=1).values
    x2 = torch.where(x_any, xs, -1).max(dim=1).values + 1
    y1 = torch.where(y_any, ys, h).min(dim=1).values
    y2 = torch.where(y_any, ys, -1).max(dim=1).values + 1
    stacked = torch.stack([x1, y1, x2, y2], dim=1).float()
    boxes[nonempty] = stacked[nonempty]
    return boxes


def instance_frame(
    masks: MaskInput,
    class_scores: torch.Tensor,
    query_idx: torch.Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
    with_boxes: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Masks, scores and boxes of the selected instances in one frame.

    `masks` holds the selected instances' logits (K, H, W), or, with `query_idx`, all queries
    (then only the selected ones are upsampled, each query once even if selected with two labels).
    score = class score x mean sigmoid inside the binary mask (logit > 0), as official.
    Returns (masks bool (K, H, W), scores (K,), boxes (K, 4), or None without `with_boxes`:
    the video pipeline takes boxes from the final masks, so it skips this full-frame scan).
    """
    h, w = _out_hw(masks)
    dev = _device(masks)
    if query_idx is None:
        query_idx = torch.arange(len(class_scores))
    num = len(query_idx)
    if num == 0:
        return (torch.zeros((0, h, w), dtype=torch.bool, device=dev), torch.zeros(0, device=dev),
                torch.zeros((0, 4), device=dev))
    unique_q, inverse = torch.unique(query_idx, return_inverse=True)
    bin_masks = torch.zeros((len(unique_q), h, w), dtype=torch.bool, device=dev)
    mask_scores = torch.zeros(len(unique_q), device=dev)
    for s, e in _chunks(len(unique_q), chunk):
        logits = _take(masks, unique_q[s:e])
        # written straight as float: through a bool tensor it took 7x as long
        binary = torch.gt(logits, 0, out=torch.empty_like(logits))
        mask_scores[s:e] = (logits.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        bin_masks[s:e] = binary.bool()
    out_masks = bin_masks[inverse.to(dev)]
    scores = class_scores.float().to(dev) * mask_scores[inverse.to(dev)]
    return out_masks, scores, (masks_to_boxes(out_masks) if with_boxes else None)


def instance_postprocess(
    cls: torch.Tensor,
    masks: MaskInput,
    num_things: int,
    max_per_image: int = 100,
    chunk: int = DEFAULT_CHUNK,
) -> InstanceResult:
    """Official image instance results, sorted by (score desc, label, query) for determinism."""
    sel = select_instances(cls, num_things, max_per_image)
    bin_masks, scores, boxes = instance_frame(masks, sel.class_scores, sel.query_idx, chunk)
    order = sorted(
        range(len(scores)), key=lambda i: (-float(scores[i]), int(sel.labels[i]), int(sel.query_idx[i]))
    )
    order_t = torch.as_tensor(order, dtype=torch.int64)
    return InstanceResult(
        labels=sel.labels[order_t],
        scores=scores[order_t],
        boxes=boxes[order_t],
        masks=bin_masks[order_t],
        query_idx=sel.query_idx[order_t],
    )


# ---------------------------------------------------------------------------------------------
# Semantic (§6.7; an extension: OMG-Seg itself raises for semantic_on)
# ---------------------------------------------------------------------------------------------


def semantic_postprocess(cls: torch.Tensor, masks: MaskInput, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """EXTENSION, not an OMG-Seg reproduction: Mask2Former semantic inference.

    sem[k] = sum_q softmax(cls)[q, k] * sigmoid(M_q) over the K real classes; returns the
    argmax class per pixel (H, W) int64. Memory O(K * H * W) for the class scores.
    """
    num_classes = cls.shape[-1] - 1
    probs = F.softmax(cls.float(), dim=-1)[:, :num_classes]
    h, w = _out_hw(masks)
    sem = torch.zeros((num_classes, h, w), device=_device(masks))
    for s, e in _chunks(probs.shape[0], chunk):
        m = _take(masks, torch.arange(s, e)).sigmoid()
        sem += torch.einsum("qc,qhw->chw", probs[s:e], m)
    return sem.argmax(0)


# ---------------------------------------------------------------------------------------------
# Proposals and VOS (§6.4, §7.6)
# ---------------------------------------------------------------------------------------------


def select_proposals(iou_logits: torch.Tensor, num_proposals: int) -> torch.Tensor:
    """Query indices of the top `num_proposals` by sigmoid(objectness), in ASCENDING score order
    (the official stacking order, so that painting in order lets better proposals win).
    """
    scores = iou_logits.float().reshape(-1).sigmoid()
    k = min(int(num_proposals), scores.numel())
    top = torch.sort(scores, descending=True, stable=True).indices[:k]
    return top.flip(0)


def proposal_postprocess(
    iou_logits: torch.Tensor, masks: MaskInput, num_proposals: int, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """Binary proposal masks (K, H, W), sigmoid > 0.5, in ascending objectness order (§6.4)."""
    idx = select_proposals(iou_logits, num_proposals)
    h, w = _out_hw(masks)
    out = torch.zeros((len(idx), h, w), dtype=torch.bool, device=_device(masks))
    for s, e in _chunks(len(idx), chunk):
        out[s:e] = _take(masks, idx[s:e]).sigmoid() > 0.5
    return out


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix (len(a), len(b)) of binary masks; 0 where both masks are empty (official: NaN)."""
    a2 = a.flatten(1).double()
    b2 = b.flatten(1).double()
    inter = (a2 @ b2.T).round().long()
    union = a2.sum(1).long()[:, None] + b2.sum(1).long()[None] - inter
    iou = inter / union  # int64 / int64 -> float32, as official
    return torch.nan_to_num(iou, nan=0.0)


def match_first_frame(
    proposal_masks: torch.Tensor, gt_masks: torch.Tensor, gt_ids: Sequence[int]
) -> dict[int, int]:
    """Hungarian assignment maximising mask IoU between frame-0 proposals and the given objects.

    Returns {proposal index: object id} in ascending proposal index (the painting order). Every
    object gets a proposal when there are enough, even with IoU 0 (no threshold, as official).
    """
    if len(gt_ids) != len(gt_masks):
        raise ValueError("gt_ids and gt_masks must have the same length")
    if len(proposal_masks) == 0 or len(gt_masks) == 0:
        return {}
    if tuple(proposal_masks.shape[-2:]) != tuple(gt_masks.shape[-2:]):
        raise ValueError(
            f"object masks are {tuple(gt_masks.shape[-2:])}, proposals {tuple(proposal_masks.shape[-2:])}"
        )
    from scipy.optimize import linear_sum_assignment  # 0.4 s to import: only where it is used

    iou = mask_iou(proposal_masks.bool(), gt_masks.bool())
    rows, cols = linear_sum_assignment(-iou.cpu().numpy())  # rows = proposals, as official
    ids = [int(x) for x in np.asarray(gt_ids).reshape(-1)]
    return {int(r): ids[int(c)] for r, c in zip(rows, cols)}


def paint_vos(proposal_masks: torch.Tensor, assignment: dict[int, int]) -> torch.Tensor:
    """int32 object-id map (0 = background): matched proposals painted in ascending index order,
    later (higher-scoring) ones overwriting earlier ones."""
    h, w = proposal_masks.shape[-2:]
    seg = torch.zeros((h, w), dtype=torch.int32, device=proposal_masks.device)
    for idx, obj_id in assignment.items():
        seg[proposal_masks[idx]] = obj_id
    return seg
