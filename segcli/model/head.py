"""OMG-Seg head (official `Mask2FormerVideoHead`): pixel decoder, masked-attention decoder,
prediction heads and the interactive prompt queries, under the checkpoint's names.

Forward for B clips of T frames (T = 1 for images), top to bottom:
  1. pixel decoder per frame -> mask features (B*T, E, H4, W4) and 3 memories (s32, s16, s8);
  2. memories become tokens of the whole clip (frame-major) + level embedding (content),
     keys get the 3-D sine encoding;
  3. queries: the learned ones, or one per prompt (box/point) with prompts blind to each other;
  4. prediction #0, then per decoder layer i (memory level i mod 3): masked cross-attention,
     self-attention, FFN and a new prediction whose mask, resized to the next level, masks
     the next cross-attention;
  5. the last prediction: class logits (cosine to CLIP text embeddings x exp(4.6052), zero
     background prototype), objectness logit, mask logits at stride 4 for every frame.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .config import BackboneConfig, HeadConfig
from .pixel_decoder import PixelDecoder
from .position import box_encoding, sine_3d
from .transformer_decoder import TransformerDecoder


def mlp3(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, cout))


def frames_side_by_side(frames: torch.Tensor, clips: int) -> torch.Tensor:
    """(B*T, E, H, W) maps -> (B, E, T*H*W): each clip's frames side by side, pixels in (t, y, x)
    order. Channels_last maps already hold this matrix transposed (one row of E channels per
    pixel), which the GEMMs read as it is: a view. NCHW maps are copied. (torch.bmm reads either
    layout in place; torch.matmul copies a transposed operand first.)"""
    bt, e, h, w = frames.shape
    n = bt // clips * h * w
    if frames.is_contiguous(memory_format=torch.channels_last):
        # explicit strides: a view's size-1 dims may carry any stride, and bmm copies such operands
        return frames.as_strided((clips, e, n), (n * e, 1, e), frames.storage_offset())
    return frames.reshape(clips, bt // clips, e, h * w).transpose(1, 2).reshape(clips, e, n)


def mask_pool(features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Average of features (B, C, N) inside each binarised mask (B, Q, N) -> (B, Q, C). The official
    code divides the mask by its area before summing; dividing the sums is the same average with
    a (Q, C) pass instead of a (Q, N) one."""
    # the comparison written straight in the features' dtype: through a bool tensor and a
    # conversion it took 14x as long (77 against 5 ms for a 3-frame 1280x736 clip)
    mask = torch.gt(mask_logits, 0, out=torch.empty_like(mask_logits, dtype=features.dtype))
    denorm = mask.sum(-1, keepdim=True) + 1e-8
    return torch.bmm(mask, features.transpose(1, 2)) / denorm


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


@dataclass
class Prompts:
    """Prompt queries for B images: boxes (B, N, 4) as (x1, y1, x2, y2) normalised by the resized,
    unpadded image size (img_shape), and bp (B, N) = 0 for a box (points become small boxes),
    1 for the point embedding."""

    boxes: torch.Tensor
    bp: torch.Tensor


@dataclass
class HeadOutput:
    cls_logits: torch.Tensor  # (B, Q, K+1), last column = background
    iou_logits: torch.Tensor  # (B, Q, 1) objectness
    mask_logits: torch.Tensor  # (B, Q, T, H4, W4) at stride 4 of the padded input
    query_feat: torch.Tensor  # (B, Q, E) last decoder layer output, before post_norm (MinVIS)
    # filled only with all_layers=True (parity tests): per prediction #0..#L
    all_cls: list[torch.Tensor] = field(default_factory=list)  # (B, Q, K+2), last column = iou
    all_masks: list[torch.Tensor] = field(default_factory=list)  # (B, Q, T, H4, W4)
    layer_queries: list[torch.Tensor] = field(default_factory=list)  # (B, Q, E) per layer
    # per decoder layer, each query's smallest |attention-mask logit| (B, Q): where it lies within
    # float noise of 0 the mask pixel may flip between implementations or thread counts, and the
    # query then legitimately moves by more than float noise from that layer on
    attn_margins: list[torch.Tensor] = field(default_factory=list)
    # filled only with keep_pixel=True: the pixel decoder's outputs (mask features (B*T, E, H4, W4),
    # [m32, m16, m8]), per frame, so that prompts on a frame of this clip can skip recomputing them
    pixel: tuple | None = None


class OMGHead(nn.Module):
    def __init__(self, in_channels: tuple[int, ...], cfg: HeadConfig, backbone: BackboneConfig):
        super().__init__()
        e = cfg.feat_channels
        self.cfg = cfg
        self.num_heads = cfg.num_heads
        self.num_levels = cfg.num_levels
        self.pixel_decoder = PixelDecoder(in_channels, cfg)
        self.transformer_decoder = TransformerDecoder(cfg)
        self.query_embed = nn.Embedding(cfg.num_queries, e)
        self.query_feat = nn.Embedding(cfg.num_queries, e)
        self.level_embed = nn.Embedding(cfg.num_levels, e)
        self.mask_embed = mlp3(e, e, e)
        self.iou_embed = mlp3(e, e, 1)
        self.cls_proj = mlp3(e, e, backbone.embed_dim)
        self.mask_pooling_proj = nn.Sequential(nn.LayerNorm(e), nn.Linear(e, e))
        if cfg.with_prompt:
            self.mask_tokens = nn.Embedding(1, e)
            self.pb_embedding = nn.Embedding(2, e)
            self.pos_linear = nn.Linear(2 * e, e)
        # Runtime buffers, never in a checkpoint: the vocabulary's CLIP text embeddings (D, K+1, P)
        # with an all-zero background prototype, and the fixed logit scale.
        self.register_buffer("cls_embed", torch.zeros(backbone.embed_dim, 1, cfg.num_prototypes), persistent=False)
        self.register_buffer("logit_scale", torch.tensor(cfg.logit_scale, dtype=torch.float32), persistent=False)

    # ---- vocabulary ----------------------------------------------------------------------
    def set_class_embeddings(self, embeddings: torch.Tensor) -> None:
        """embeddings (K, P, D), unit rows, things first -> buffer (D, K+1, P) with zero background."""
        k, p, d = embeddings.shape
        emb = embeddings.to(self.cls_embed.device, torch.float32)
        full = torch.cat([emb, emb.new_zeros(1, p, d)], 0)
        self.cls_embed = full.permute(2, 0, 1).contiguous()

    @property
    def num_classes(self) -> int:
        return self.cls_embed.shape[1] - 1

    def forward_logit(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, K+1): max over synonyms of the cosine, times exp(logit_scale)."""
        # float32 even under autocast: x100 turns a bf16 cosine's 4e-3 error into 0.4 logits
        device = embeddings.device.type
        # (the meta device, where the benchmark counts MACs, has no autocast)
        with torch.autocast(device, enabled=False) if device != "meta" else contextlib.nullcontext():
            emb = F.normalize(embeddings.float(), dim=-1)
            cos = torch.einsum("bnd,dkp->bnkp", emb, self.cls_embed).max(-1).values
            return self.logit_scale.exp() * cos

    # ---- prediction head -----------------------------------------------------------------
    def _predict(self, query, mask_features, next_features, full_masks: bool, classify: bool,
                 margins: list | None = None):
        """query (B, Q, E); mask_features (B, E, T*H4*W4), the clip's frames side by side;
        next_features: the mask features resized to the next cross-attention level (B, E, T*h*w),
        None after the last layer. Returns (cls or None, stride-4 mask logits (B, Q, T*H4*W4) or
        None, attention mask)."""
        z = self.transformer_decoder.post_norm(query)
        embed = self.mask_embed(z)
        mask_logits = cls = attn_mask = None
        if full_masks or classify:
            mask_logits = torch.bmm(embed, mask_features)
        if classify:
            pooled = self.mask_pooling_proj(mask_pool(mask_features, mask_logits))
            cls = self.forward_logit(self.cls_proj(pooled + z))
            cls = torch.cat([cls, self.iou_embed(z).float()], -1)
        if next_features is not None:
            # the official code resizes the stride-4 mask logits to the next level; resizing is
            # linear per channel, so the logits of the resized features are the same numbers
            # (up to rounding) at 1/4-1/64 of the cost. (B, Q, T*h*w), True = blocked, one mask
            # for all heads.
            attn_logits = torch.bmm(embed, next_features)
            attn_mask = attn_logits.sigmoid() < 0.5
            if margins is not None:
                margins.append(attn_logits.abs().amin(-1).float())
        return cls, mask_logits, attn_mask

    def _prompt_queries(self, prompts: Prompts):
        boxes = prompts.boxes
        cxcywh = torch.stack(((boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2,
                              boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]), -1)
        coords = inverse_sigmoid(cxcywh).sigmoid()
        encoding = box_encoding(coords, self.cfg.feat_channels // 2)
        with torch.autocast(boxes.device.type, enabled=False):  # a positional encoding: float32
            query_embed = self.pos_linear(encoding.float())
        query_feat = self.pb_embedding(prompts.bp) + self.mask_tokens.weight[0]
        n = boxes.shape[1]
        # each prompt attends only to itself (True = blocked)
        self_mask = ~torch.eye(n, dtype=torch.bool, device=boxes.device)
        return query_feat, query_embed, self_mask

    # ---- forward -------------------------------------------------------------------------
    def forward(self, feats: list[torch.Tensor], num_frames: int = 1, prompts: Prompts | None = None,
                all_layers: bool = False, pixel: tuple | None = None, keep_pixel: bool = False,
                classify_every_layer: bool = False) -> HeadOutput:
        """feats: the 4 backbone maps of B clips x T frames, (B*T, C_i, H_i, W_i), frame-major per clip.
        pixel: these frames' pixel-decoder outputs from an earlier call (HeadOutput.pixel; the pixel
        decoder works frame by frame, so a frame's slice of a clip's outputs is that frame's).
        all_layers: return every prediction (parity tests). classify_every_layer: do the official
        work of classifying all predictions although inference reads only the last (~45 GMAC per
        1280x736 frame); skipping them is exact, doing them is the benchmark's plain reference."""
        t = num_frames
        mask_features, memories = pixel if pixel is not None else self.pixel_decoder(feats)
        kept = (mask_features, memories) if keep_pixel else None
        bt, e, h4, w4 = mask_features.shape
        b = bt // t
        frames = mask_features  # (B*T, E, H4, W4), channels_last unless the model runs NCHW
        mask_features = frames_side_by_side(frames, b)  # (B, E, T*H4*W4)

        tokens, token_pos, sizes = [], [], []
        for i, m in enumerate(memories):
            h, w = m.shape[-2:]
            sizes.append((h, w))
            mem = m.view(b, t, e, h * w).permute(0, 1, 3, 2).reshape(b, t * h * w, e)
            tokens.append(mem + self.level_embed.weight[i].to(mem.dtype))
            pos = sine_3d(t, h, w, e // 2, device=m.device).reshape(1, t * h * w, e)
            token_pos.append(pos.to(mem.dtype))

        if prompts is not None:
            query, query_pos, self_mask = self._prompt_queries(prompts)
        else:
            query = self.query_feat.weight[None].expand(b, -1, -1)
            query_pos = self.query_embed.weight[None].expand(b, -1, -1)
            self_mask = None
        # queries are the decoder's residual stream: float32 also under autocast
        query = query.float()
        query_pos = query_pos.float()

        # mask features at each memory level's size, frame by frame: (B, E, T*h*w). In the features'
        # own dtype: CPU autocast would widen bf16 to float32 first (a 180 MB copy per 3-frame
        # 1280x736 clip); the projections below read bf16 either way. And in their memory format:
        # a CPU resize of bf16 NCHW maps widens them first (~50 ms per level and clip)
        with torch.autocast(frames.device.type, enabled=False) if frames.device.type != "meta" \
                else contextlib.nullcontext():
            resized = [F.interpolate(frames, size=s, mode="bilinear", align_corners=False) for s in sizes]
        level_features = [frames_side_by_side(r, b) for r in resized]

        out = HeadOutput(None, None, None, None)
        num_layers = len(self.transformer_decoder.layers)
        every = all_layers or classify_every_layer
        margins = out.attn_margins if all_layers else None
        cls, masks, attn_mask = self._predict(query, mask_features, level_features[0], every, every, margins)
        if all_layers:
            out.all_cls.append(cls)
            out.all_masks.append(masks.view(b, -1, t, h4, w4))
        for i, layer in enumerate(self.transformer_decoder.layers):
            level = i % self.num_levels
            # a query whose mask covers nothing may attend everywhere (avoids all -inf rows)
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
            query = layer(query, query_pos, tokens[level], token_pos[level], attn_mask, self_mask)
            last = i == num_layers - 1
            next_features = None if last else level_features[(i + 1) % self.num_levels]
            cls, masks, attn_mask = self._predict(query, mask_features, next_features, every or last, every or last,
                                                  margins)
            if all_layers:
                out.all_cls.append(cls)
                out.all_masks.append(masks.view(b, -1, t, h4, w4))
                out.layer_queries.append(query)
        out.cls_logits = cls[..., :-1]
        out.iou_logits = cls[..., -1:]
        out.mask_logits = masks.view(b, -1, t, h4, w4)
        out.query_feat = query
        out.pixel = kept
        return out
