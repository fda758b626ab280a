"""Sine positional encodings (one home for all of them).

All follow mmdet's conventions: positions are 1-based indices normalised by (size + eps) and
scaled by 2*pi; channel pairs (2k, 2k+1) share the frequency temperature^(2k / num_feats) and
hold (sin, cos).
"""

from __future__ import annotations

import functools
import math

import torch

TWO_PI = 2 * math.pi


def _interleave_sin_cos(pos: torch.Tensor) -> torch.Tensor:
    """(..., F) angles -> (..., F) with sin on even and cos on odd channels."""
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def _frequencies(num_feats: int, temperature: float, device) -> torch.Tensor:
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * (dim_t // 2) / num_feats)


def _normalised_positions(n: int, eps: float, scale: float, device) -> torch.Tensor:
    steps = torch.arange(1, n + 1, dtype=torch.float32, device=device)
    return steps / (steps[-1:] + eps) * scale


@functools.lru_cache(maxsize=32)
def sine_2d(h: int, w: int, num_feats: int, temperature: float = 10000.0, scale: float = TWO_PI,
            eps: float = 1e-6, device=None) -> torch.Tensor:
    """2-D encoding of an all-valid (h, w) map -> (h, w, 2*num_feats), y channels first.
    Depends on the shape only, so it is made once per shape and device (callers never write to it)."""
    dim_t = _frequencies(num_feats, temperature, device)
    y = _normalised_positions(h, eps, scale, device)
    x = _normalised_positions(w, eps, scale, device)
    pos_y = _interleave_sin_cos(y[:, None] / dim_t)  # (h, F)
    pos_x = _interleave_sin_cos(x[:, None] / dim_t)  # (w, F)
    return torch.cat(
        (pos_y[:, None, :].expand(h, w, num_feats), pos_x[None, :, :].expand(h, w, num_feats)), dim=-1
    )


@functools.lru_cache(maxsize=32)
def sine_3d(t: int, h: int, w: int, num_feats: int, temperature: float = 10000.0, scale: float = TWO_PI,
            eps: float = 1e-6, device=None) -> torch.Tensor:
    """3-D encoding (mmdet SinePositionalEncoding3D) -> (t, h, w, 2*num_feats).

    The time part has 2*num_feats channels with its own frequencies and is ADDED to the 2-D
    (y, x) encoding, not concatenated. Used for single images too (t = 1)."""
    pos_yx = sine_2d(h, w, num_feats, temperature, scale, eps, device)
    dim_z = _frequencies(2 * num_feats, temperature, device)
    z = _normalised_positions(t, eps, scale, device)
    pos_z = _interleave_sin_cos(z[:, None] / dim_z)  # (t, 2F)
    return pos_yx[None] + pos_z[:, None, None, :]


def box_encoding(boxes: torch.Tensor, num_feats: int, temperature: float = 10000.0,
                 scale: float = TWO_PI) -> torch.Tensor:
    """mmdet coordinate_to_encoding for (..., 4) boxes (cx, cy, w, h) in [0, 1]
    -> (..., 4*num_feats) in the order (y, x, w, h)."""
    dim_t = _frequencies(num_feats, temperature, boxes.device)
    parts = [_interleave_sin_cos((boxes[..., i] * scale)[..., None] / dim_t) for i in (1, 0, 2, 3)]
    return torch.cat(parts, dim=-1)
