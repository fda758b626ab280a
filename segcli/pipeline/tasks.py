"""Per-frame task results as `Segment`s with stable ids, from video-level class logits and one
frame's stride-4 mask logits (official post-processing in segcli.pipeline.postprocess).

Ids: a thing keeps its query slot + 1 for the whole video (slots are aligned across clips by
the tracker); a stuff region takes the lowest kept slot of its class (vps) or class + 1 (vss).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..results import Segment
from ..vocab.parse import Vocabulary
from .postprocess import LazyMasks, instance_frame, panoptic_segments, select_instances, semantic_postprocess


@dataclass
class InstanceTracks:
    """Which query slots are reported as instances, decided from the video-level class logits:
    the official top-`pool` (query, class) pairs (things only), then one track per query (its
    best pair), class probability >= threshold, at most max_objects."""

    query_idx: torch.Tensor
    labels: torch.Tensor
    class_scores: torch.Tensor

    @classmethod
    def select(cls, cls_logits: torch.Tensor, num_things: int, pool: int, max_objects: int, threshold: float):
        sel = select_instances(cls_logits, num_things, pool)
        seen: set[int] = set()
        keep = []
        for i, (q, s) in enumerate(zip(sel.query_idx.tolist(), sel.class_scores.tolist())):
            if q in seen or s < threshold:
                continue
            seen.add(q)
            keep.append(i)
            if len(keep) == max_objects:
                break
        idx = torch.as_tensor(keep, dtype=torch.int64)
        return cls(sel.query_idx[idx], sel.labels[idx], sel.class_scores[idx])


def instance_segments(tracks: InstanceTracks, masks: LazyMasks, vocab: Vocabulary) -> list[Segment]:
    bin_masks, scores, _ = instance_frame(masks, tracks.class_scores, tracks.query_idx, with_boxes=False)
    if bin_masks.is_cuda:
        # one transfer, column-major (the transpose is free on the GPU): the RLE writers then
        # encode each mask without a transposing copy on the host
        bin_masks = bin_masks.transpose(1, 2).contiguous().cpu().transpose(1, 2)
    scores = scores.cpu()
    class_scores = tracks.class_scores.tolist()
    out = []
    for i, q in enumerate(tracks.query_idx.tolist()):
        mask = bin_masks[i].numpy()
        if not mask.any():
            continue
        label = int(tracks.labels[i])
        out.append(Segment(q + 1, label, vocab.names[label], float(scores[i]), mask, True,
                           class_score=class_scores[i]))
    return out


def panoptic_frame_segments(cls_logits: torch.Tensor, masks: LazyMasks, vocab: Vocabulary, test_cfg,
                            threshold: float = 0.0) -> list[Segment]:
    id_map, segments = panoptic_segments(cls_logits, masks, vocab.num_things, iou_thr=test_cfg.iou_thr,
                                         object_mask_thr=max(test_cfg.object_mask_thr, threshold),
                                         filter_low_score=test_cfg.filter_low_score)
    id_np = id_map.cpu().numpy()
    return [Segment(s.id, s.label, vocab.names[s.label], s.score, id_np == s.id, s.isthing) for s in segments]


def semantic_segments(cls_logits: torch.Tensor, masks: LazyMasks, vocab: Vocabulary) -> list[Segment]:
    sem_t = semantic_postprocess(cls_logits, masks)
    present = torch.nonzero(torch.bincount(sem_t.flatten(), minlength=len(vocab)))[:, 0].tolist()
    sem = sem_t.cpu().numpy()
    probs = cls_logits.float().softmax(-1)[:, :-1].cpu()
    out = []
    for k in present:
        # score of a class region: the best query probability for that class
        out.append(Segment(k + 1, k, vocab.names[k], float(probs[:, k].max()), sem == k, vocab.is_thing(k)))
    return out
