"""MinVIS association of queries between consecutive clips (spec §7.4).

Each clip is decoded independently; query slot q of clip i is re-ordered so that it denotes
the same object as slot q of clip i-1 (Hungarian matching on cosine similarity of the raw
decoder queries). The re-ordered queries of clip i are the reference for clip i+1 (chained
matching, no memory bank). Video-level class / objectness logits are the mean of the raw
(re-ordered) logits over clips.

Per-video state (the reference queries and the running sums) lives in `ClipAssociator`; the
model stays stateless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def cost_matrix(tgt_embeds: torch.Tensor, cur_embeds: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity, shape (Q_cur, Q_tgt), computed like the official code (fp32)."""
    cur = cur_embeds.float()
    tgt = tgt_embeds.float()
    # plain x / ||x|| (no eps), as official; a zero query would give NaN there too
    cur = cur / cur.norm(dim=-1, keepdim=True)
    tgt = tgt / tgt.norm(dim=-1, keepdim=True)
    cos_sim = torch.bmm(cur[None], tgt.transpose(0, 1)[None])[0]
    return 1 - cos_sim


def match_from_embeds(tgt_embeds: torch.Tensor, cur_embeds: torch.Tensor) -> torch.Tensor:
    """Permutation `perm` (Q_tgt,) such that cur[perm] aligns with tgt: perm[j] is the current
    query assigned to reference slot j.

    The Hungarian step runs on the transposed cost (rows = reference slots), as official, so
    ties are broken the same way.
    """
    # imported here: scipy.optimize costs 0.4 s at start-up, and images and one-clip videos never match
    from scipy.optimize import linear_sum_assignment

    cost = cost_matrix(tgt_embeds, cur_embeds).cpu().numpy()
    _, cols = linear_sum_assignment(cost.T)
    return torch.as_tensor(np.asarray(cols), dtype=torch.int64)


def reorder(x: Any, perm: torch.Tensor) -> Any:
    """Index dim 0 of a tensor, or of every tensor in a tuple / list / dict, with perm."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x[perm.to(x.device)]
    if isinstance(x, dict):
        return {k: reorder(v, perm) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(reorder(v, perm) for v in x)
    raise TypeError(f"cannot re-order a {type(x).__name__} along the query axis")


@dataclass
class AssociatedClip:
    """One clip's outputs after re-ordering: slot q is the same object as slot q of every other clip."""

    index: int  # clip number, 0-based
    cls_logits: torch.Tensor  # (Q, C+1)
    iou_logits: torch.Tensor  # (Q, 1)
    query_feat: torch.Tensor  # (Q, E)
    per_query: Any  # the caller's per-query payload (e.g. mask logits (Q, T, h, w)), re-ordered
    perm: torch.Tensor  # (Q,) int64: re-ordered = original[perm]; identity for the first clip


class ClipAssociator:
    """Chained MinVIS association over the clips of one video, with running video-level logits.

    Feed clips in order with `add`; `mean_cls()` / `mean_iou()` give the official video-level
    logits (mean of raw logits over clips; float32 running sum divided by the clip count, which
    is the same arithmetic as the official `sum(list) / n`).
    """

    def __init__(self) -> None:
        self.reference: torch.Tensor | None = None  # re-ordered query features of the last clip
        self.num_clips = 0
        self._cls_sum: torch.Tensor | None = None
        self._iou_sum: torch.Tensor | None = None

    def add(
        self,
        cls_logits: torch.Tensor,
        iou_logits: torch.Tensor,
        query_feat: torch.Tensor,
        per_query: Any = None,
    ) -> AssociatedClip:
        num_queries = query_feat.shape[0]
        if cls_logits.shape[0] != num_queries or iou_logits.shape[0] != num_queries:
            raise ValueError("cls_logits, iou_logits and query_feat must have the same number of queries")
        if self.reference is None:
            perm = torch.arange(num_queries, dtype=torch.int64)
        else:
            perm = match_from_embeds(self.reference, query_feat)

        cls_r = reorder(cls_logits, perm)
        iou_r = reorder(iou_logits, perm)
        feat_r = reorder(query_feat, perm)
        per_query_r = reorder(per_query, perm)

        self.reference = feat_r
        # Python's sum() in the official code starts at 0: 0 + c0 + c1 + ... in float32
        self._cls_sum = cls_r.clone() if self._cls_sum is None else self._cls_sum + cls_r
        self._iou_sum = iou_r.clone() if self._iou_sum is None else self._iou_sum + iou_r
        clip = AssociatedClip(self.num_clips, cls_r, iou_r, feat_r, per_query_r, perm)
        self.num_clips += 1
        return clip

    def mean_cls(self) -> torch.Tensor:
        """Video-level class logits (Q, C+1) over the clips added so far."""
        if self._cls_sum is None:
            raise RuntimeError("no clip was added")
        return self._cls_sum / self.num_clips

    def mean_iou(self) -> torch.Tensor:
        """Video-level objectness logits (Q, 1) over the clips added so far."""
        if self._iou_sum is None:
            raise RuntimeError("no clip was added")
        return self._iou_sum / self.num_clips
