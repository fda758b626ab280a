"""Frozen CLIP ConvNeXt backbone (open_clip's timm ConvNeXt visual tower), under OMG's names.

Module names follow the official checkpoint: `stem`, `layer1..4` (= open_clip
`visual.trunk.stages.0..3`), `head.0` (the trunk head's LayerNorm2d) and `head.1` (the CLIP
MLP projection). `forward` returns the four stage maps (strides 4, 8, 16, 32); `head` is only
used for open-vocabulary mask pooling (`forward_feat`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import BackboneConfig
from .fused import linear_act


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map, computed and returned in float32 also under
    autocast. The permutes are free for channels_last inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1).float()
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden: int, out_features: int, fc2_bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, out_features, bias=fc2_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # exact (erf) GELU as timm/open_clip; fused into fc1 for bf16 on CPU (segcli.model.fused)
        return linear_act(linear_act(x, self.fc1, "gelu"), self.fc2)


class ConvNeXtBlock(nn.Module):
    """x + gamma * MLP(LN(dwconv7x7(x))), the MLP in channels-last layout.

    Under bf16/fp16 autocast the residual stream of stages 2-4 is in the low precision (the
    downsampling conv's output; stage 1 starts float32 from the stem's LayerNorm2d). A float32
    stream measured the same mask IoU against fp32 (0.992 on ConvNeXt-L) and was 8% slower.
    The LayerNorm statistics always accumulate in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))  # registered first: official key order
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, 4 * dim, dim)
        self.scale_in_fc2 = False  # see fold_layer_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_dw(x).permute(0, 2, 3, 1)
        y = self.mlp(self.norm(y)).permute(0, 3, 1, 2)
        if not self.scale_in_fc2:
            y = y * self.gamma.reshape(1, -1, 1, 1)
        return x.add_(y)  # in place: x is this stage's own intermediate (inference only)

    @torch.no_grad()
    def fold_layer_scale(self) -> None:
        """Inference only: multiply gamma into fc2 (the same product, one full-size pass less).
        Used before storing fc2 in bf16/fp16; the float32 reference path keeps the product."""
        if not self.scale_in_fc2:
            self.mlp.fc2.weight.mul_(self.gamma[:, None])
            if self.mlp.fc2.bias is not None:
                self.mlp.fc2.bias.mul_(self.gamma)
            self.scale_in_fc2 = True


class ConvNeXtStage(nn.Module):
    def __init__(self, in_dim: int, dim: int, depth: int, eps: float, downsample: bool):
        super().__init__()
        if downsample:
            self.downsample = nn.Sequential(LayerNorm2d(in_dim, eps=eps), nn.Conv2d(in_dim, dim, 2, stride=2))
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[ConvNeXtBlock(dim, eps) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class TrunkHead(nn.Module):
    """timm NormMlpClassifierHead as used by open_clip (pool '', no fc): avg-pool, LN2d, flatten."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True)
        return self.norm(x).flatten(1)


class ClipProjection(nn.Module):
    """open_clip's projection head (timm_proj): 'mlp' = fc1 (bias) -> GELU -> fc2 (no bias), as in
    convnext_large_d_320; 'linear' = one Linear without bias (`proj`), as in convnext_xxlarge."""

    def __init__(self, in_dim: int, hidden: int, embed_dim: int, kind: str = "mlp"):
        super().__init__()
        if kind == "mlp":
            self.mlp = Mlp(in_dim, hidden, embed_dim, fc2_bias=False)
        else:
            self.proj = nn.Linear(in_dim, embed_dim, bias=False)
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) if self.kind == "mlp" else self.proj(x)


class CLIPConvNeXt(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        dims, eps = cfg.dims, cfg.norm_eps
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=eps))
        self.layer1 = ConvNeXtStage(dims[0], dims[0], cfg.depths[0], eps, downsample=False)
        self.layer2 = ConvNeXtStage(dims[0], dims[1], cfg.depths[1], eps, downsample=True)
        self.layer3 = ConvNeXtStage(dims[1], dims[2], cfg.depths[2], eps, downsample=True)
        self.layer4 = ConvNeXtStage(dims[2], dims[3], cfg.depths[3], eps, downsample=True)
        self.head = nn.Sequential(TrunkHead(dims[3], eps),
                                  ClipProjection(dims[3], cfg.proj_hidden, cfg.embed_dim, cfg.proj))
        self.out_channels = tuple(dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        # Under autocast the maps keep the memory format the stages ran in (channels_last by
        # default): the pixel decoder's convolutions and resizes and the head's GEMMs read it in
        # place. float32 maps are NCHW, as the reference numbers were made: a channels_last pixel
        # decoder rounds differently (~1e-7), which can move attention-mask pixels that lie on the
        # threshold in the golden parity tests.
        nchw = x.device.type == "meta" or not torch.is_autocast_enabled(x.device.type)
        feats = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            feats.append(x.contiguous() if nchw else x)
        return feats

    def get_clip_feature(self, feat_s32: torch.Tensor) -> torch.Tensor:
        """The map that open-vocabulary mask pooling reads (norm_pre is Identity for ConvNeXt)."""
        return feat_s32

    def forward_feat(self, pooled: torch.Tensor) -> torch.Tensor:
        """Mask-pooled trunk features (B, N, C) -> CLIP image embeddings (B, N, D), not normalised."""
        b, n, c = pooled.shape
        x = self.head(pooled.reshape(b * n, c, 1, 1))
        return x.view(b, n, -1)
