"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch.

Same computation as mmcv's MultiScaleDeformableAttention (its CUDA kernel and its
`multi_scale_deform_attn_pytorch` reference): bilinear sampling with zero padding and the
pixel-centre convention (grid_sample, align_corners=False). Parameter names match the
official checkpoint (`sampling_offsets`, `attention_weights`, `value_proj`, `output_proj`).

Sampling locations, attention weights and the bilinear blend always run in float32, also
under bf16/fp16 autocast: a bf16 coordinate in [0, 1] is off by up to half a pixel at the
s8 level, which moves every sample.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

# CPU: the queries are blended in chunks whose int32 corner indices stay under this size per level,
# so that the sampling temporaries stay bounded whatever the input size (a 1280x736 frame, 19k
# queries x 8 heads x 16 corners, is one chunk: ~10 MB per level). On a GPU all queries go at once.
GATHER_CHUNK_BYTES = 32 << 20


def ms_deform_attn(value: torch.Tensor, spatial_shapes: list[tuple[int, int]],
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """value (B, Nv, M, d); sampling_locations (B, Nq, M, L, P, 2) in [0, 1] (x, y);
    attention_weights (B, Nq, M, L, P) -> (B, Nq, M*d) float32, heads concatenated head-major.

    Every sample reads 4 neighbours of a level map. Instead of one grid_sample per level
    (which materialises (B*M, d, Nq, P) per level, then weights and sums it), the 4 corner reads
    of a sample are weighted row gathers, summed per (batch, query, head) by embedding_bag, one
    call per level: 3-5x faster on CPU, no large intermediate. A 1-pixel zero border around
    every level map gives the zero padding, so clamped coordinates need no validity masks. The
    bags are ordered (batch, query, head), so their sums are already the output's layout.

    Any strides are accepted; the element-wise work is fastest when each level's x and y
    coordinates and weights are (M, P) blocks per query, as MultiScaleDeformableAttention lays
    them out (its sampling locations are views of (B, Nq, 2, L, M, P) memory)."""
    b, _, m, d = value.shape
    _, nq, _, num_levels, num_points, _ = sampling_locations.shape
    # the table: one row of d channels per (batch, head, padded pixel), levels one after another;
    # the zero border is what the clamped out-of-map corners read
    rows = sum((h + 2) * (w + 2) for h, w in spatial_shapes)
    table = torch.zeros(b, m, rows, d, dtype=torch.float32, device=value.device)
    level_start, start, row = [], 0, 0
    for h, w in spatial_shapes:
        level = table[:, :, row:row + (h + 2) * (w + 2)].view(b, m, h + 2, w + 2, d)
        level[:, :, 1:h + 1, 1:w + 1].copy_(value[:, start:start + h * w].view(b, h, w, m, d).permute(0, 3, 1, 2, 4))
        level_start.append(row)
        start += h * w
        row += (h + 2) * (w + 2)
    # the first row of each (batch, head) in the flat table, broadcast over (query, point)
    # int32 indices on a CPU (half the bytes of int64 for the broadcasts and for embedding_bag to
    # read, measured there); int64 elsewhere, the index type every backend's embedding_bag takes
    index_dtype = torch.int32 if value.device.type == "cpu" else torch.int64
    head_rows = (torch.arange(b * m, dtype=index_dtype, device=value.device) * rows).view(b, 1, m, 1)
    table = table.view(-1, d)
    chunk = nq if value.device.type != "cpu" else max(1, GATHER_CHUNK_BYTES // (m * num_points * 4 * 4))
    if chunk >= nq:
        out = _blend(table, level_start, head_rows, spatial_shapes, sampling_locations, attention_weights)
    else:
        out = torch.empty(b, nq, m, d, dtype=torch.float32, device=value.device)
        for first in range(0, nq, chunk):
            last = min(nq, first + chunk)
            out[:, first:last] = _blend(table, level_start, head_rows, spatial_shapes,
                                        sampling_locations[:, first:last], attention_weights[:, first:last])
    return out.view(b, nq, m * d)


def _blend(table, level_start, head_rows, spatial_shapes, locations, weights):
    """The blended samples (B, n, M, d) of the queries of `locations` (B, n, M, L, P, 2), all levels."""
    b, n, m = locations.shape[:3]
    out = None
    for level, (h, w) in enumerate(spatial_shapes):
        loc = locations[:, :, :, level].float()  # (B, n, M, P, 2); the first ops below write contiguous
        # pixel coordinates exactly as grid_sample computes them from grid = 2 * loc - 1
        x = ((2 * loc[..., 0] - 1 + 1) * w - 1) / 2
        y = ((2 * loc[..., 1] - 1 + 1) * h - 1) / 2
        # a point beyond the border keeps all its weight on the zero border (x = -1 or x = w)
        x, y = x.clamp_(-1, w), y.clamp_(-1, h)
        x0, y0 = x.floor().clamp_(max=w - 1), y.floor().clamp_(max=h - 1)
        fx, fy = x.sub_(x0), y.sub_(y0)
        # exact in float32: a level has far fewer than 2**24 padded pixels
        top_left = ((y0 + 1) * (w + 2) + (x0 + 1)).to(head_rows.dtype) + (head_rows + level_start[level])
        # the 4 neighbours of each point, (B, n, M, P, 4): one bag of 4*P rows per (query, head)
        corners = top_left[..., None] + _corner_offsets(w, table.device, top_left.dtype)
        a = weights[:, :, :, level].float()
        top, bottom = a * (1 - fy), a * fy
        wts = torch.stack((top * (1 - fx), top * fx, bottom * (1 - fx), bottom * fx), -1)
        bags = b * n * m
        part = F.embedding_bag(corners.view(bags, -1), table, per_sample_weights=wts.view(bags, -1), mode="sum")
        out = part if out is None else out.add_(part)
    return out.view(b, n, m, -1)


@functools.lru_cache(maxsize=64)
def _corner_offsets(w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Row offsets of the 4 bilinear neighbours in the zero-bordered table; made once per width
    and device (on a GPU a fresh torch.tensor is a blocking host-to-device copy per call)."""
    return torch.tensor([0, 1, w + 2, w + 3], dtype=dtype, device=device)


@functools.lru_cache(maxsize=32)
def _level_normalizer(spatial_shapes: tuple, device: torch.device) -> torch.Tensor:
    """(2, L, 1, 1): W_l for x, H_l for y. Offsets are in pixels of their level."""
    return torch.tensor([[w for _, w in spatial_shapes], [h for h, _ in spatial_shapes]], dtype=torch.float32,
                        device=device).view(2, -1, 1, 1)


def softmax_fp32(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis in float32. Written out because torch's CPU kernel is ~10x
    slower than this when the axis is shorter than a SIMD vector (here L*P = 12); and on a
    contiguous copy, because these short-axis reductions and broadcasts are 2-4x slower on a slice
    of a wider tensor (the attention weights' columns of the offsets-and-weights GEMM)."""
    x = x.float().contiguous()
    e = (x - x.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


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
        # sampling offsets and attention weights read the same input: one GEMM for both. The
        # offsets' output channels are taken in (x/y, level, head, point) order instead of the
        # checkpoint's (head, level, point, x/y): then each level's x and y are (M, P) blocks
        offset_weight = self.sampling_offsets.weight.unflatten(0, (m, lv, p, 2)).permute(3, 1, 0, 2, 4).flatten(0, 3)
        offset_bias = self.sampling_offsets.bias.view(m, lv, p, 2).permute(3, 1, 0, 2).flatten()
        both = F.linear(q, torch.cat((offset_weight, self.attention_weights.weight)),
                        torch.cat((offset_bias, self.attention_weights.bias))).float()
        offsets = both[..., :m * lv * p * 2].view(b, n, 2, lv, m, p)
        weights = softmax_fp32(both[..., m * lv * p * 2:].unflatten(-1, (m, lv * p)))
        weights = weights.view(b, n, m, lv, p).transpose(2, 3).contiguous()  # (B, N, L, M, P)
        # offsets are in pixels of their level: divide x by W_l and y by H_l
        normalizer = _level_normalizer(tuple(map(tuple, spatial_shapes)), q.device)
        ref = reference_points.float().transpose(2, 3)[..., None, None]  # (B, N, 2, L, 1, 1)
        locations = ref + offsets / normalizer  # (B, N, 2, L, M, P)
        out = ms_deform_attn(value, spatial_shapes, locations.permute(0, 1, 4, 3, 5, 2), weights.transpose(2, 3))
        return query + self.output_proj(out)
