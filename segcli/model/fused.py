"""Linear layer + activation in one oneDNN call, for bf16 inference on CPU.

A separate bias add and GELU/ReLU are full passes over the (tokens x 4C) hidden tensor, next to
GEMMs that already run at the machine's peak. oneDNN applies bias and activation as post-ops
while the GEMM's output tile is still in cache, and rounds to bf16 once (the separate ops round
the linear's output first, then the activation's). Measured on a 2-core CPU at 1280x736,
interleaved in one process: backbone -50 ms and heads -26 ms per frame (1.5 %). The float32 reference path, GPUs
and the meta device (MAC counting) keep the plain ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# torch's own fused CPU kernel (what inductor's mkldnn fusion emits) and its weight packing; absent
# in builds without oneDNN
_MKLDNN = getattr(torch.ops, "mkldnn", None) if torch.backends.mkldnn.is_available() else None
_POINTWISE = getattr(_MKLDNN, "_linear_pointwise", None)
_REORDER = getattr(_MKLDNN, "_reorder_linear_weight", None)

# oneDNN post-op names and their algorithm argument: exact (erf) GELU as timm/open_clip, ReLU, none
_ALGORITHM = {"gelu": "none", "relu": "", "none": ""}


def pack_weight(linear: nn.Linear) -> None:
    """Keep a copy of a bf16 CPU linear layer's weight in oneDNN's blocked layout, which
    `linear_act` then uses: the plain layout costs oneDNN a repacking of the weight on every call,
    4-8 % of a ConvNeXt-L stage-3 GEMM and 14 % of a pixel-decoder FFN's first one (same
    numbers). The copy is as large as the weight. It is only used while the weight is the tensor
    it was made from (any later change of the weight, in place or not, drops back to the plain
    weight)."""
    w = linear.weight
    if _REORDER is not None and w.device.type == "cpu" and w.dtype == torch.bfloat16:
        linear._packed_weight = (_REORDER(w.detach()), w, w.data_ptr(), w._version)


def _weight_for_onednn(linear: nn.Linear) -> torch.Tensor:
    packed = getattr(linear, "_packed_weight", None)
    w = linear.weight
    if packed is not None and packed[1] is w and packed[2] == w.data_ptr() and packed[3] == w._version:
        return packed[0]
    return w


def linear_act(x: torch.Tensor, linear: nn.Linear, act: str = "none") -> torch.Tensor:
    """act(linear(x)) for act in {"gelu", "relu", "none"} (exact GELU). Under CPU bf16 autocast
    with the weight stored in bf16 (Segmenter's cast_matmul_weights) it is one oneDNN call, with
    the packed weight where pack_weight made one; otherwise the plain ops, the activation in
    place (a fresh hidden-size buffer costs page faults on CPU)."""
    w = linear.weight
    if (_POINTWISE is not None and x.device.type == "cpu" and w.dtype == torch.bfloat16
            and torch.is_autocast_enabled("cpu")):
        return _POINTWISE(x.to(w.dtype), _weight_for_onednn(linear), linear.bias, act, [], _ALGORITHM[act])
    y = linear(x)
    if act == "none":
        return y
    return torch.ops.aten.gelu_(y) if act == "gelu" else F.relu_(y)
