"""User prompts (points, boxes, masks) -> the box prompts the model consumes (spec §6.5).

The interactive branch of OMG-Seg takes every prompt as a box (x1, y1, x2, y2) in RESIZED image
pixels (original pixels x scale_factor); a click (x, y) becomes the pseudo-box
(x-3, y-3, x+3, y+3). The head normalises boxes by the unpadded resized size (img_shape),
converts them to (cx, cy, w, h) and passes them through mmdet's inverse_sigmoid and back.

`mask_center_point` reproduces how the official COCO point evaluation derives a click from a
ground-truth mask (kornia's approximate distance transform, first maximum).
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from segcli.errors import PromptError  # noqa: F401
from segcli.pipeline.options import validate_boxes, validate_mask, validate_points  # noqa: F401  (re-exported)
from segcli.pipeline.preprocess import resize_shape

POINT_BOX_HALF = 3  # a click is the box (x-3, y-3, x+3, y+3)
BOX_PROMPT = 0  # pb_embedding row used by official inference for every prompt (points included)


# ---------------------------------------------------------------------------------------------
# Validation (original pixel coordinates)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Original pixels -> resized-pixel boxes
# ---------------------------------------------------------------------------------------------


def scale_points(points_xy, scale_factor: Sequence[float]) -> torch.Tensor:
    """(N, 2) original-pixel points -> resized pixels (x * w_scale, y * h_scale), float32."""
    pts = torch.as_tensor(np.asarray(points_xy, dtype=np.float64).reshape(-1, 2))
    factor = torch.tensor([scale_factor[0], scale_factor[1]], dtype=torch.float64)
    return (pts * factor).float()


def scale_boxes(boxes_xyxy, scale_factor: Sequence[float]) -> torch.Tensor:
    """(N, 4) original-pixel boxes -> resized pixels, float32 (mmdet: bboxes * scale_factor.repeat(2))."""
    boxes = torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4))
    factor = torch.tensor([scale_factor[0], scale_factor[1]] * 2, dtype=torch.float64)
    return (boxes * factor).float()


def point_boxes(points_xy_resized: torch.Tensor, half: float = POINT_BOX_HALF) -> torch.Tensor:
    """Clicks (N, 2) -> pseudo-boxes (N, 4) = (x-3, y-3, x+3, y+3), the official point encoding."""
    pts = torch.as_tensor(points_xy_resized).reshape(-1, 2)
    return torch.cat([pts - half, pts + half], dim=1)


def prompt_boxes(
    scale_factor: Sequence[float],
    points_xy=None,
    boxes_xyxy=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """User prompts in original pixels -> (boxes (N, 4) float32 in resized pixels, bp (N,) int64).

    Order: all points, then all boxes. bp is 0 for every prompt: the official inference uses the
    box row of pb_embedding for clicks too (§6.5).
    """
    parts = []
    if points_xy is not None and len(points_xy) > 0:
        parts.append(point_boxes(scale_points(points_xy, scale_factor)))
    if boxes_xyxy is not None and len(boxes_xyxy) > 0:
        parts.append(scale_boxes(boxes_xyxy, scale_factor))
    boxes = torch.cat(parts) if parts else torch.zeros((0, 4))
    return boxes, torch.full((len(boxes),), BOX_PROMPT, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# Resized-pixel boxes -> normalised (cx, cy, w, h) as the head sees them
# ---------------------------------------------------------------------------------------------


def boxes_to_unit_cxcywh(boxes_xyxy_resized: torch.Tensor, img_shape: Sequence[int]) -> torch.Tensor:
    """Divide by (w, h, w, h) of img_shape (NOT the padded size), then xyxy -> cxcywh; official order."""
    h, w = int(img_shape[0]), int(img_shape[1])
    boxes = torch.as_tensor(boxes_xyxy_resized)
    unit = boxes / boxes.new_tensor([w, h, w, h])
    x1, y1, x2, y2 = unit.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """mmdet inverse_sigmoid: clamp to [0, 1], then log(max(x, eps) / max(1 - x, eps))."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def normalize_boxes(boxes_xyxy_resized: torch.Tensor, img_shape: Sequence[int]) -> torch.Tensor:
    """(N, 4) resized-pixel boxes -> (N, 4) (cx, cy, w, h) in [0, 1] exactly as the head encodes them.

    sigmoid(inverse_sigmoid(v)) is, up to float rounding, v clamped to [eps/(1+eps), 1/(1+eps)]
    ~ [1e-5, 1 - 1e-5]; it is computed literally here so the values match bit for bit.
    """
    return inverse_sigmoid(boxes_to_unit_cxcywh(boxes_xyxy_resized, img_shape)).sigmoid()


# ---------------------------------------------------------------------------------------------
# Official point derivation from a mask (COCO point evaluation, §6.5 steps 1-5)
# ---------------------------------------------------------------------------------------------


def rescale_mask_nearest(mask: np.ndarray, img_shape: Sequence[int]) -> np.ndarray:
    """mmdet BitmapMasks.rescale(img_shape): keep-ratio rule with img_shape as the limits,
    cv2 INTER_NEAREST. Usually lands exactly on img_shape (±1 px in rounding corner cases)."""
    h, w = mask.shape[:2]
    new_h, new_w, _ = resize_shape(h, w, (int(img_shape[1]), int(img_shape[0])))
    return cv2.resize(mask.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST)


def soft_distance_transform(source: torch.Tensor, kernel_size: int = 3, h: float = 0.35) -> torch.Tensor:
    """The cascaded soft-min distance transform of kornia 0.9.0 (`kornia.contrib.distance_transform`,
    the version the golden data was made with), written out in plain torch.

    `source` (H, W) float: 1 where the distance is 0 (outside the object), 0 elsewhere. It is an
    approximation, not a Euclidean DT; the official prompts were derived with it, so it is
    reproduced literally (same conv, same float ops).
    """
    image = source.float()[None, None]
    n_iters = math.ceil(max(image.shape[2], image.shape[3]) / math.floor(kernel_size / 2))
    half = kernel_size // 2
    coords = torch.arange(kernel_size, dtype=image.dtype) - half
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    kernel = torch.hypot(gx, gy)
    kernel = torch.exp(kernel / -h)[None, None]  # taps exp(-dist / h)

    out = torch.zeros_like(image)
    boundary = image.clone()
    ones = torch.ones_like(boundary)
    for i in range(n_iters):
        padded = F.pad(boundary, (half, half, half, half), mode="replicate")
        cdt = F.conv2d(padded, kernel)
        cdt = -h * torch.log(cdt)
        cdt = torch.nan_to_num(cdt, posinf=0.0)  # log(0) -> +inf -> 0
        reached = torch.where(cdt > 0, 1.0, 0.0)
        if reached.sum() == 0:
            break  # nothing new reached: later iterations cannot change anything
        # kornia >= 0.8.2 uses i * (k // 2) = i; older releases had (i * k) // 2 (kornia issue #3161)
        offset = i * half
        out += (offset + cdt) * reached
        boundary = torch.where(reached == 1, ones, boundary)
    return out[0, 0]


def mask_center_point(mask_ori: np.ndarray, img_shape: Sequence[int]) -> tuple[int, int]:
    """The official eval click for a ground-truth mask at the original size: (x, y) in img_shape pixels.

    1. nearest rescale of the mask to img_shape; 2. source = 1 outside the mask plus a 1-pixel
    frame of 1s; 3. soft distance transform; 4. first maximum (row-major) inside the frame.
    """
    mask = torch.from_numpy(rescale_mask_nearest(np.asarray(mask_ori), img_shape).astype(bool))
    h, w = mask.shape
    source = (~F.pad(mask[None, None], (1, 1, 1, 1), mode="constant", value=False)).float()[0, 0]
    dist = soft_distance_transform(source)[1:-1, 1:-1]
    idx = dist.argmax()
    # official: tensor([idx / w, idx % w]).long() -- a float32 true division, then truncation
    row = int(torch.tensor([idx / w]).long())
    col = int(idx % w)
    return col, row


def mask_prompt_boxes(masks_ori: np.ndarray, img_shape: Sequence[int]) -> torch.Tensor:
    """(N, H, W) masks -> (N, 4) float32 pseudo-boxes around their official eval clicks."""
    points = [mask_center_point(m, img_shape) for m in masks_ori]
    if not points:
        return torch.zeros((0, 4))
    return point_boxes(torch.tensor(points, dtype=torch.float32))


def prompt_batch(objects, scale_factor: Sequence[float], img_shape: Sequence[int]):
    """All prompts of several objects for one decoder call: `objects` is [(object id, points,
    boxes)] in original pixels. Returns (boxes (N, 4) normalised by img_shape, box/point flags
    (N,), owner object id of each row)."""
    boxes, flags, owners = [], [], []
    for oid, points, bxs in objects:
        b, bp = prompt_boxes(scale_factor, points, bxs)
        boxes.append(b)
        flags.append(bp)
        owners += [oid] * len(b)
    h, w = img_shape
    norm = torch.cat(boxes).float() / torch.tensor([w, h, w, h], dtype=torch.float32)
    return norm, torch.cat(flags), owners


from segcli.pipeline.options import MASK_MODES, objects_from_mask_png  # noqa: E402,F401  (re-exported)
