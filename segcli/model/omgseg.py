"""The whole OMG-Seg network: `backbone` (frozen CLIP ConvNeXt) + `panoptic_head`.

`state_dict()` keys equal the official checkpoint's (`backbone.*`, `panoptic_head.*`), so the
released head file plus the open_clip backbone load strictly (segcli.model.checkpoint).
The module holds no per-video state: clip association, running scores and post-processing
live in segcli.pipeline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import CLIPConvNeXt, ConvNeXtBlock, Mlp
from .config import OMGSegConfig
from .fused import pack_weight
from .head import HeadOutput, OMGHead, Prompts
from .pixel_decoder import FFN


class OMGSeg(nn.Module):
    def __init__(self, cfg: OMGSegConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = CLIPConvNeXt(cfg.backbone)
        self.panoptic_head = OMGHead(self.backbone.out_channels, cfg.head, cfg.backbone)

    def set_class_embeddings(self, embeddings: torch.Tensor) -> None:
        self.panoptic_head.set_class_embeddings(embeddings)

    # modules whose weights stay float32 in cast_matmul_weights: the CLIP projection runs outside
    # autocast (open-vocabulary pooling) and pos_linear maps a positional encoding
    FLOAT32_MODULES = ("backbone.head", "panoptic_head.pos_linear")

    def cast_matmul_weights(self, dtype: torch.dtype) -> None:
        """Store the weights of convolutions, linear layers and attention projections in `dtype`
        for bf16/fp16 inference under autocast: half the weight memory and no per-call cast.
        Norms, embeddings and positional layers stay float32; ConvNeXt layer scales are folded
        into fc2 first (in float32)."""
        for module in self.backbone.modules():
            if isinstance(module, ConvNeXtBlock):
                module.fold_layer_scale()
        for name, module in self.named_modules():
            if any(name == k or name.startswith(k + ".") for k in self.FLOAT32_MODULES):
                continue
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.to(dtype)
            elif isinstance(module, nn.MultiheadAttention):
                module.in_proj_weight.data = module.in_proj_weight.data.to(dtype)
                module.in_proj_bias.data = module.in_proj_bias.data.to(dtype)
        # the big CPU GEMMs read their weights pre-packed (segcli.model.fused.pack_weight): the MLPs
        # of the backbone's first three stages (+260 MB at ConvNeXt-L, 5-8 % of the backbone) and
        # the pixel decoder's FFNs. Not the last stage (113 MB for 3 % of its 0.25 s per frame)
        # nor the query decoder (300 rows)
        backbone = self.backbone
        for module in [*backbone.layer1.modules(), *backbone.layer2.modules(), *backbone.layer3.modules(),
                       *self.panoptic_head.pixel_decoder.modules()]:
            if isinstance(module, (Mlp, FFN)):
                for linear in module.modules():
                    if isinstance(linear, nn.Linear):
                        pack_weight(linear)

    @torch.no_grad()
    def extract_features(self, images: torch.Tensor, batch: int | None = None) -> list[torch.Tensor]:
        """(N, 3, Hp, Wp) normalised frames -> 4 backbone maps, in chunks of `batch` frames."""
        batch = batch or images.shape[0]
        chunks = [self.backbone(images[i:i + batch]) for i in range(0, images.shape[0], batch)]
        return [torch.cat(level, 0) for level in zip(*chunks)]

    @torch.no_grad()
    def forward_clip(self, feats: list[torch.Tensor], num_frames: int, all_layers: bool = False,
                     keep_pixel: bool = False, classify_every_layer: bool = False) -> HeadOutput:
        """Decode one clip (or B clips) of `num_frames` frames with the learned queries."""
        return self.panoptic_head(feats, num_frames=num_frames, all_layers=all_layers, keep_pixel=keep_pixel,
                                  classify_every_layer=classify_every_layer)

    @torch.no_grad()
    def forward_prompts(self, feats: list[torch.Tensor], prompts: Prompts, all_layers: bool = False,
                        pixel: tuple | None = None, classify_every_layer: bool = False) -> HeadOutput:
        """Decode prompt queries (interactive mode) on single images; `pixel`: the image's
        pixel-decoder outputs if already computed (HeadOutput.pixel)."""
        return self.panoptic_head(feats, num_frames=1, prompts=prompts, all_layers=all_layers, pixel=pixel,
                                  classify_every_layer=classify_every_layer)

    def forward(self, images: torch.Tensor, num_frames: int = 1) -> HeadOutput:
        return self.forward_clip(self.extract_features(images), num_frames)

    # ---- open-vocabulary ensemble (CLIP mask pooling, FC-CLIP style) ---------------------
    @torch.no_grad()
    def clip_pool_sums(self, feat_s32: torch.Tensor, mask_logits_padres: torch.Tensor):
        """Unnormalised CLIP mask pooling of some frames, to be summed over a whole video.

        feat_s32 (T, C, h, w) backbone maps; mask_logits_padres (Q, T, Hp, Wp) at padded input
        size. Returns (sum of features inside each mask (Q, C), mask pixel count (Q,))."""
        clip_feat = self.backbone.get_clip_feature(feat_s32)
        q, t = mask_logits_padres.shape[:2]
        small = F.interpolate(mask_logits_padres.transpose(0, 1).float(), size=clip_feat.shape[-2:],
                              mode="bilinear", align_corners=False)  # (T, Q, h, w)
        binary = torch.gt(small, 0, out=torch.empty_like(small, dtype=clip_feat.dtype))  # no bool detour
        sums = torch.einsum("tchw,tqhw->qc", clip_feat, binary)
        return sums, binary.sum(dim=(0, 2, 3))

    @torch.no_grad()
    def open_vocab_logits(self, cls_logits: torch.Tensor, pooled_sum: torch.Tensor, pooled_count: torch.Tensor,
                          seen: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
        """Geometric ensemble of query and CLIP class probabilities (official open_voc_inference).

        cls_logits (Q, K+1); pooled_* from clip_pool_sums summed over frames; seen (K,) bool
        (class in the training vocabulary). Returns log-probabilities (Q, K+1) for post-processing."""
        pooled = pooled_sum / (pooled_count[:, None] + 1e-8)
        clip_emb = self.backbone.forward_feat(pooled[None])
        clip_p = self.panoptic_head.forward_logit(clip_emb)[0, :, :-1].softmax(-1)
        query_p = cls_logits[:, :-1].softmax(-1)
        valid = (pooled_count > 0).float()[:, None]
        a = alpha * valid
        bt = beta * valid
        seen = seen.float().to(cls_logits.device)
        seen_part = (query_p ** (1 - a) * clip_p ** a).log() * seen
        logits = seen_part + (query_p ** (1 - bt) * clip_p ** bt).log() * (1 - seen)
        void = cls_logits.softmax(-1)[:, -1:]
        return torch.log(torch.cat([logits.softmax(-1) * (1 - void), void], -1) + 1e-8)


def build_model(cfg: OMGSegConfig) -> OMGSeg:
    return OMGSeg(cfg).eval()
