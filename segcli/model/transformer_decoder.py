"""Mask2Former transformer decoder layers (mmdet Mask2FormerTransformerDecoder).

Each layer: masked cross-attention -> self-attention -> FFN, post-norm. Positional
embeddings are added to queries and keys, never to values. `post_norm` is applied by the
prediction head (segcli.model.head) before every prediction. Keys match the checkpoint:
`layers.{i}.{cross_attn,self_attn}.attn.*`, `layers.{i}.ffn.layers.*`, `layers.{i}.norms.*`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import HeadConfig
from .pixel_decoder import FFN


class Attention(nn.Module):
    """mmcv MultiheadAttention wrapper: identity + MHA(query + query_pos, key + key_pos, value)."""

    def __init__(self, dims: int, num_heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dims, num_heads, batch_first=True)

    def forward(self, query, key, value, query_pos, key_pos, attn_mask=None):
        """attn_mask: bool (B, Nq, Nk), the same for every head, or (Nq, Nk); True = not allowed."""
        mha = self.attn
        b, nq, c = query.shape
        nk = key.shape[1]
        h = mha.num_heads
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
        q = F.linear(query + query_pos, w_q, b_q).view(b, nq, h, c // h).transpose(1, 2)
        k = F.linear(key + key_pos, w_k, b_k).view(b, nk, h, c // h).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(b, nk, h, c // h).transpose(1, 2)
        bias = None
        if attn_mask is not None:
            # additive (0 / -inf) in the queries' dtype, which is what SDPA makes of a boolean mask
            # itself, through an inverted copy and a slower conversion (the same numbers; ~15 % of a
            # stride-8 cross-attention on a CPU). Broadcast over heads: a per-head copy would be
            # heads x Nq x Nk (100 MB per clip)
            zero = torch.zeros((), dtype=q.dtype, device=q.device)
            bias = torch.where(attn_mask, float("-inf"), zero)
            bias = bias[:, None] if attn_mask.dim() == 3 else bias
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(b, nq, c)
        return query + mha.out_proj(out)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: HeadConfig):
        super().__init__()
        e = cfg.feat_channels
        self.self_attn = Attention(e, cfg.num_heads)
        self.cross_attn = Attention(e, cfg.num_heads)
        self.ffn = FFN(e, cfg.decoder_ffn)
        self.norms = nn.ModuleList([nn.LayerNorm(e) for _ in range(3)])

    def forward(self, query, query_pos, memory, memory_pos, cross_attn_mask, self_attn_mask=None):
        query = self.norms[0](self.cross_attn(query, memory, memory, query_pos, memory_pos, cross_attn_mask))
        query = self.norms[1](self.self_attn(query, query, query, query_pos, query_pos, self_attn_mask))
        return self.norms[2](self.ffn(query))


class TransformerDecoder(nn.Module):
    def __init__(self, cfg: HeadConfig):
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.decoder_layers)])
        self.post_norm = nn.LayerNorm(cfg.feat_channels)
