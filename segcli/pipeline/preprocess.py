"""Frame preprocessing exactly as the official test pipeline does it (spec §1.2–§1.4).

uint8 RGB frame --resize_frame--> uint8 RGB at img_shape --normalize_and_pad--> float32 (T, 3, Hp, Wp)

The rules reproduce mmcv `Resize(keep_ratio=True)` (cv2 INTER_LINEAR on uint8) and the
data preprocessor (ImageNet mean/std on 0-255 RGB, then zero padding bottom/right to a
multiple of 32). `FrameMeta` carries the shapes the post-processing needs to map masks back.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255 scale (§1.3), not CLIP's statistics
IMAGENET_STD = (58.395, 57.12, 57.375)
PAD_DIVISOR = 32


@dataclass(frozen=True)
class FrameMeta:
    """Shapes of one frame through the pipeline; all (h, w) except scale_factor = (w_scale, h_scale)."""

    ori_shape: tuple[int, int]  # decoded frame
    img_shape: tuple[int, int]  # after the keep-ratio resize
    pad_shape: tuple[int, int]  # after padding to the divisor (= batch input size)
    scale_factor: tuple[float, float]  # (new_w / w, new_h / h)


def resize_shape(h: int, w: int, scale_wh: Sequence[int]) -> tuple[int, int, tuple[float, float]]:
    """mmcv keep-ratio rule: the largest size with long side <= max(scale) and short side <= min(scale).

    Returns (new_h, new_w, (w_scale, h_scale)). Upscaling happens too (small frames grow).
    """
    if h <= 0 or w <= 0:
        raise ValueError(f"frame size must be positive, got {h}x{w}")
    long_limit, short_limit = max(scale_wh), min(scale_wh)
    factor = min(long_limit / max(h, w), short_limit / min(h, w))
    new_w = int(w * float(factor) + 0.5)
    new_h = int(h * float(factor) + 0.5)
    # scale_factor is measured on the result, not the factor itself (it differs per axis by rounding)
    return new_h, new_w, (new_w / w, new_h / h)


def resize_frame(rgb: np.ndarray, scale_wh: Sequence[int]) -> np.ndarray:
    """Keep-ratio resize of a uint8 HxWx3 frame with cv2 INTER_LINEAR.

    cv2 resizes each channel independently, so running it on RGB gives the same bytes as the
    official run on BGR (checked against the golden bundle).
    """
    h, w = rgb.shape[:2]
    new_h, new_w, _ = resize_shape(h, w, scale_wh)
    if (new_h, new_w) == (h, w):
        return np.ascontiguousarray(rgb)
    return cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def padded_shape(h: int, w: int, pad_divisor: int = PAD_DIVISOR) -> tuple[int, int]:
    """Round (h, w) up to the next multiple of the pad divisor."""
    return (-(-h // pad_divisor) * pad_divisor, -(-w // pad_divisor) * pad_divisor)


def frame_meta(h: int, w: int, scale_wh: Sequence[int], pad_divisor: int = PAD_DIVISOR) -> FrameMeta:
    """Metas of a frame of original size (h, w) without touching pixels."""
    new_h, new_w, scale_factor = resize_shape(h, w, scale_wh)
    return FrameMeta(
        ori_shape=(h, w),
        img_shape=(new_h, new_w),
        pad_shape=padded_shape(new_h, new_w, pad_divisor),
        scale_factor=scale_factor,
    )


def normalize_and_pad(
    frames: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
    pad_divisor: int = PAD_DIVISOR,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """uint8 RGB frames (a list of HxWx3, or T x H x W x 3) -> float32 tensor (T, 3, Hp, Wp).

    (x - mean) / std in float32 on the 0-255 scale, then zero padding bottom/right; padding
    after normalisation means padded pixels are exactly 0 (the mean colour), as in §1.4.
    All frames are padded to the largest frame, rounded up to the divisor.

    device: normalise and pad there (the result lives there). Only the uint8 pixels travel, a
    quarter of the float32 bytes, from pinned memory without blocking on a GPU; a subtraction
    and a division are exactly rounded on every device, so the numbers are the host's.
    """
    if isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim == 3:
        frames = [frames]  # a single HxWx3 frame
    if len(frames) == 0:
        raise ValueError("normalize_and_pad needs at least one frame")
    tensors = [torch.as_tensor(np.ascontiguousarray(f)) if isinstance(f, np.ndarray) else f for f in frames]
    max_h = max(t.shape[0] for t in tensors)
    max_w = max(t.shape[1] for t in tensors)
    pad_h, pad_w = padded_shape(max_h, max_w, pad_divisor)

    device = torch.device(device) if device is not None else torch.device("cpu")
    mean_t, std_t = _channel_constants(tuple(mean), tuple(std), device)
    out = []
    for t in tensors:
        if t.ndim != 3 or t.shape[2] != 3:
            raise ValueError(f"expected HxWx3 frames, got shape {tuple(t.shape)}")
        if t.device != device:
            if device.type == "cuda" and t.device.type == "cpu":
                t = t.pin_memory()
            t = t.to(device, non_blocking=True)
        x = t.permute(2, 0, 1).float()
        x = (x - mean_t) / std_t
        x = F.pad(x, (0, pad_w - x.shape[2], 0, pad_h - x.shape[1]), value=0.0)
        out.append(x)
    return torch.stack(out, dim=0).contiguous()


@functools.lru_cache(maxsize=8)
def _channel_constants(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, 1, 1) float32 mean and std on `device`, made once (on a GPU a fresh tensor is a
    blocking host-to-device copy); callers never write to them."""
    return (torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1),
            torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1))


def preprocess_frames(
    frames_rgb: Sequence[np.ndarray],
    scale_wh: Sequence[int],
    pad_divisor: int = PAD_DIVISOR,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, list[FrameMeta]]:
    """Resize + normalise + pad a clip of raw uint8 RGB frames; returns (T,3,Hp,Wp) and one meta per frame.

    The batch is padded to its largest resized frame, so every meta's pad_shape is the batch shape
    (the official `pad_shape` equals `batch_input_shape` for one video). device: where the
    normalised batch is made (normalize_and_pad); the resize is cv2's on the host.
    """
    resized = [resize_frame(f, scale_wh) for f in frames_rgb]
    batch = normalize_and_pad(resized, pad_divisor, mean, std, device=device)
    pad_shape = (int(batch.shape[2]), int(batch.shape[3]))
    metas = []
    for raw, res in zip(frames_rgb, resized):
        h, w = raw.shape[:2]
        new_h, new_w = res.shape[:2]
        metas.append(FrameMeta((h, w), (new_h, new_w), pad_shape, (new_w / w, new_h / h)))
    return batch, metas
