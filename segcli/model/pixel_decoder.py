"""Pixel decoder (mmdet MSDeformAttnPixelDecoder as configured by OMG-Seg).

The three coarsest backbone maps go through a deformable-attention encoder, ordered from
low to high resolution (s32, s16, s8); the s4 map is fused afterwards FPN-style and becomes
the mask features. Outputs: mask_features (N, E, H/4, W/4) and [m32, m16, m8] (N, E, h, w)
for the transformer decoder. Nothing temporal happens here: a clip is a batch of frames.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .config import HeadConfig
from .fused import linear_act
from .msda import MultiScaleDeformableAttention
from .position import sine_2d


class ConvGN(nn.Module):
    """Conv + GroupNorm (+ ReLU). GroupNorm statistics are float32 under autocast too; with
    `float32_out` (the encoder inputs: its residual stream) the output is float32 as well."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool, groups: int, relu: bool = False,
                 float32_out: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)
        self.gn = nn.GroupNorm(groups, cout)
        self.relu = relu
        self.float32_out = float32_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.gn(x.float() if self.float32_out else x)
        return F.relu_(x) if self.relu else x


class FFN(nn.Module):
    """mmcv FFN with two fcs: x + fc2(relu(fc1(x))). Keys layers.0.0 and layers.1."""

    def __init__(self, dims: int, hidden: int):
        super().__init__()
        # in-place ReLU as official: one (tokens x hidden) buffer less
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dims, hidden), nn.ReLU(inplace=True)),
                                    nn.Linear(hidden, dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ReLU fused into fc1 for bf16 on CPU (segcli.model.fused)
        return x + linear_act(linear_act(x, self.layers[0][0], "relu"), self.layers[1])


class EncoderLayer(nn.Module):
    """Post-norm: x = LN(x + MSDA(x)); x = LN(FFN(x))."""

    def __init__(self, cfg: HeadConfig):
        super().__init__()
        e = cfg.feat_channels
        self.self_attn = MultiScaleDeformableAttention(e, cfg.encoder_heads, cfg.num_levels, cfg.num_points)
        self.ffn = FFN(e, cfg.encoder_ffn)
        self.norms = nn.ModuleList([nn.LayerNorm(e), nn.LayerNorm(e)])

    def forward(self, x, pos, reference_points, spatial_shapes):
        x = self.norms[0](self.self_attn(x, pos, reference_points, spatial_shapes))
        return self.norms[1](self.ffn(x))


class Encoder(nn.Module):
    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg.encoder_layers)])

    def forward(self, x, pos, reference_points, spatial_shapes):
        for layer in self.layers:
            x = layer(x, pos, reference_points, spatial_shapes)
        return x


def reference_points(spatial_shapes: list[tuple[int, int]], num_levels: int, device, dtype) -> torch.Tensor:
    """One point per pixel centre, normalised (x, y), repeated over the sampled levels -> (N, L, 2).
    Made once per shape (a cache: callers never write to it)."""
    return _reference_points(tuple(map(tuple, spatial_shapes)), num_levels, device, dtype)


@functools.lru_cache(maxsize=32)
def _reference_points(spatial_shapes: tuple, num_levels: int, device, dtype) -> torch.Tensor:
    points = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
    ref = torch.cat(points, 0)
    return ref[:, None, :].expand(-1, num_levels, 2).to(dtype)


class PixelDecoder(nn.Module):
    def __init__(self, in_channels: tuple[int, ...], cfg: HeadConfig):
        super().__init__()
        e, g = cfg.feat_channels, cfg.num_groups
        self.num_levels = cfg.num_levels
        # encoder inputs from low to high resolution: the last `num_levels` backbone maps, reversed
        encoder_in = list(in_channels[-cfg.num_levels:])[::-1]
        self.input_convs = nn.ModuleList([ConvGN(c, e, 1, bias=True, groups=g, float32_out=True)
                                          for c in encoder_in])
        self.encoder = Encoder(cfg)
        self.level_encoding = nn.Embedding(cfg.num_levels, e)
        # FPN levels below the encoder (only s4 for OMG-Seg), highest resolution last
        fpn_in = list(in_channels[: len(in_channels) - cfg.num_levels])[::-1]
        self.lateral_convs = nn.ModuleList([ConvGN(c, e, 1, bias=False, groups=g) for c in fpn_in])
        self.output_convs = nn.ModuleList([ConvGN(e, e, 3, bias=False, groups=g, relu=True) for _ in fpn_in])
        self.mask_feature = nn.Conv2d(e, e, kernel_size=1)
        self.num_feats = e // 2

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n = feats[0].shape[0]
        if n > 1 and feats[0].device.type == "cpu":
            # frame by frame on a CPU: nothing here mixes frames, so the numbers are the same, with
            # a third of a 3-frame clip's working set (~0.3 GB less peak RSS at 1280x736) and no
            # loss of speed (a frame's 19k tokens already fill the GEMMs)
            parts = [self.forward_frames([f[i:i + 1] for f in feats]) for i in range(n)]
            return torch.cat([p[0] for p in parts]), [torch.cat(level) for level in zip(*(p[1] for p in parts))]
        return self.forward_frames(feats)

    def forward_frames(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The pixel decoder on a batch of frames at once."""
        n = feats[0].shape[0]
        maps = feats[-self.num_levels:][::-1]  # s32, s16, s8
        spatial_shapes = [tuple(m.shape[-2:]) for m in maps]
        tokens, pos = [], []
        for i, m in enumerate(maps):
            x = self.input_convs[i](m)
            h, w = x.shape[-2:]
            tokens.append(x.flatten(2).transpose(1, 2))
            p = sine_2d(h, w, self.num_feats, device=x.device).reshape(h * w, -1).to(x.dtype)
            pos.append(p + self.level_encoding.weight[i].to(x.dtype))
        x = torch.cat(tokens, 1)
        pos = torch.cat(pos, 0)[None].expand(n, -1, -1)
        ref = reference_points(spatial_shapes, self.num_levels, x.device, torch.float32)[None].expand(n, -1, -1, -1)
        if x.device.type != "meta" and torch.is_autocast_enabled(x.device.type):  # meta: MAC counting
            # under bf16/fp16 autocast the encoder's token stream stays in that dtype: its residual
            # adds, norms and casts are memory-bound and took ~1/5 of the pixel decoder at 1280x736
            # (sampling locations and the bilinear blend stay float32 inside the attention)
            low = torch.get_autocast_dtype(x.device.type)
            x, pos = x.to(low), pos.to(low)
        # (and leaves it in that dtype: the maps below only feed convolutions and projections)
        x = self.encoder(x, pos, ref, spatial_shapes)

        # back to maps, low to high resolution: (N, E, h, w) views of the tokens, which are the
        # maps' channels_last memory (a frame-by-frame torch.cat of them stays channels_last)
        outs = []
        start = 0
        for h, w in spatial_shapes:
            outs.append(x[:, start:start + h * w].unflatten(1, (h, w)).permute(0, 3, 1, 2))
            start += h * w
        y = outs[-1]
        for i, lateral in enumerate(self.lateral_convs):
            fine = lateral(feats[len(self.lateral_convs) - 1 - i])
            # in the lateral's dtype (bf16/fp16 under autocast): the sum only feeds a convolution;
            # and in its memory format, dense: a channels_last resize and add are ~5x faster than
            # mixed ones, and the resize of the token view (not dense: the other levels lie between
            # frames) took 20 ms per frame more than this copy and a resize
            nhwc = fine.is_contiguous(memory_format=torch.channels_last)
            fmt = torch.channels_last if nhwc else torch.contiguous_format
            y = y.to(fine.dtype, memory_format=fmt, copy=True)
            y = fine + F.interpolate(y, size=fine.shape[-2:], mode="bilinear", align_corners=False)
            y = self.output_convs[i](y)
        return self.mask_feature(y), outs[: self.num_levels]
