"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch.

Same computation as mmcv's MultiScaleDeformableAttention (its CUDA kernel and its
`multi_scale_deform_attn_pytorch` reference): bilinear sampling with zero padding and the
pixel-centre convention (grid_sample, align_corners=False). Parameter names match the
official checkpoint (`sampling_offsets`, `attention_weights`, `value_proj`, `output_proj`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def ms_deform_attn(value: torch.Tensor, spatial_shapes: list[tuple[int, int]],
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """value (B, Nv, M, d); sampling_locations (B, Nq, M, L, P, 2) in [0, 1] (x, y);
    attention_weights (B, Nq, M, L, P) -> (B, Nq, M*d), heads concatenated head-major."""
    b, _, m, d = value.shape
    _, nq, _, num_levels, num_points, _ = sampling_locations.shape
    grids = 2 * sampling_locations - 1
    out = value.new_zeros(b * m, d, nq)
    start = 0
    for level, (h, w) in enumerate(spatial_shapes):
        # (B, h*w, M, d) -> (B*M, d, h, w)
        v = value[:, start:start + h * w].permute(0, 2, 3, 1).reshape(b * m, d, h, w)
        start += h * w
        # (B, Nq, M, P, 2) -> (B*M, Nq, P, 2)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        # weights (B, Nq, M, P) -> (B*M, 1, Nq, P); sum over points, accumulate over levels
        wts = attention_weights[:, :, :, level].transpose(1, 2).reshape(b * m, 1, nq, num_points)
        out = out + (sampled * wts).sum(-1)
    return out.view(b, m * d, nq).transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    def __init__(self, embed_dims: int, num_heads: int, num_levels: int, num_points: int):
        super().__init__()
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """Self-attention over the multi-scale tokens: query (B, N, C) without position,
        query_pos (B, N, C), reference_points (B, N, L, 2). Returns query + attention."""
        b, n, c = query.shape
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(query).view(b, n, m, c // m)
        q = query + query_pos
        offsets = self.sampling_offsets(q).view(b, n, m, lv, p, 2)
        weights = self.attention_weights(q).view(b, n, m, lv * p).softmax(-1).view(b, n, m, lv, p)
        # offsets are in pixels of their level: divide x by W_l and y by H_l
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=q.dtype, device=q.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        out = ms_deform_attn(value, spatial_shapes, locations, weights)
        return query + self.output_proj(out)
