"""What a run is asked to do, checked without torch: the CLI validates every option with these
before it loads anything (a bad option fails in a fraction of a second), and the session and
jobs apply the same checks for API callers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import PromptError, UsageError

TASKS = ("vis", "vps", "vss", "vos")
MODES = ("auto", "exact", "online")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")


@dataclass
class ObjectPrompt:
    """One object to track in `vos`: prompts on `frame` in original-frame pixels."""

    obj_id: int
    frame: int = 0
    points: list[tuple[float, float]] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    mask: np.ndarray | None = None  # bool (H, W) at the original size


@dataclass
class VideoOptions:
    task: str = "vis"
    mode: str = "auto"
    scale: tuple[int, int] | None = None  # (w, h) resize limits; default: the model's video scale
    clip_size: int | None = None
    score_threshold: float = 0.3
    max_objects: int = 100
    open_vocab: bool = False  # CLIP mask-pooling ensemble (needs Segmenter.seen)
    keep_images: bool = False  # keep RGB frames in the results (overlay writer)
    exact_budget_mb: float = 2048.0
    objects: list[ObjectPrompt] = field(default_factory=list)  # vos
    label_objects: bool = False  # vos: label each object with the vocabulary


def validate_options(opts: VideoOptions) -> VideoOptions:
    """Every option checked up front, before any model work (the same errors the CLI reports)."""
    if opts.task not in TASKS:
        raise UsageError(f"unknown video task '{opts.task}' (choose {', '.join(TASKS)})")
    if opts.mode not in MODES:
        raise UsageError(f"--mode {opts.mode!r}: choose {', '.join(MODES)}")
    if opts.clip_size is not None and (not isinstance(opts.clip_size, int) or opts.clip_size < 1):
        raise UsageError(f"--clip-size {opts.clip_size}: must be at least 1")
    if not (isinstance(opts.score_threshold, (int, float)) and 0.0 <= opts.score_threshold <= 1.0):
        raise UsageError(f"--score-threshold {opts.score_threshold}: must be between 0 and 1")
    if not isinstance(opts.max_objects, int) or opts.max_objects < 1:
        raise UsageError(f"--max-objects {opts.max_objects}: must be at least 1")
    if not (opts.exact_budget_mb > 0 and math.isfinite(opts.exact_budget_mb)):
        raise UsageError(f"--exact-budget {opts.exact_budget_mb}: must be a positive number of MB")
    if opts.scale is not None and (len(opts.scale) != 2 or min(opts.scale) <= 0):
        raise UsageError(f"--size {opts.scale}: expected positive WxH")
    return opts


def check_precision(precision: str | None) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: choose {', '.join(PRECISIONS)}")


def check_device_name(name: str) -> None:
    if name not in DEVICE_NAMES and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise UsageError(f"unknown device '{name}' (choose auto, cpu, cuda, cuda:N or mps)")


IMAGE_TASKS = ("panoptic", "instance", "semantic")


@dataclass
class ImageOptions:
    task: str = "panoptic"
    scale: tuple[int, int] | None = None  # (w, h) limits; default: the model's image scale
    score_threshold: float = 0.3
    max_objects: int = 100
    open_vocab: bool = False
    keep_image: bool = False
    # prompt mode: {object id: (points [(x, y)], boxes [(x1, y1, x2, y2)])} in original pixels
    objects: dict[int, tuple[list, list]] = field(default_factory=dict)
    label_objects: bool = False


def validate_image_options(opts: ImageOptions) -> ImageOptions:
    if opts.task not in IMAGE_TASKS:
        raise UsageError(f"--task {opts.task!r}: choose {', '.join(IMAGE_TASKS)}")
    if not (isinstance(opts.score_threshold, (int, float)) and 0.0 <= opts.score_threshold <= 1.0):
        raise UsageError(f"--score-threshold {opts.score_threshold}: must be between 0 and 1")
    if not isinstance(opts.max_objects, int) or opts.max_objects < 1:
        raise UsageError(f"--max-objects {opts.max_objects}: must be at least 1")
    if opts.scale is not None and (len(opts.scale) != 2 or min(opts.scale) <= 0):
        raise UsageError(f"--size {opts.scale}: expected positive WxH")
    return opts


MASK_MODES = ("P", "L", "1", "I", "I;16")  # palette or grayscale: pixel value = object id


def objects_from_mask_png(path: str, frame_index: int = 0) -> list:
    """A DAVIS-style first-frame mask: one ObjectPrompt per non-zero index. Colour photos are
    refused (their pixel values are not object ids)."""
    from pathlib import Path

    from PIL import Image, UnidentifiedImageError

    from segcli.errors import InputNotFoundError

    if not Path(path).is_file():
        raise InputNotFoundError(f"no such mask file: {path}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in MASK_MODES:
                raise PromptError(f"mask {path} is a {mode} image: expected an indexed (palette) or grayscale "
                                  "PNG whose pixel values are object ids (DAVIS style)")
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, ValueError):
        raise PromptError(f"cannot read mask {path}: expected an indexed PNG (DAVIS style)") from None
    ids = [int(v) for v in np.unique(arr) if v != 0]
    if not ids:
        raise PromptError(f"mask {path} holds no object (all pixels are 0)")
    if len(ids) > 255 or max(ids) > 255:
        raise PromptError(f"mask {path} has object ids above 255")
    return [ObjectPrompt(oid, frame_index, mask=arr == oid) for oid in ids]


# ---- prompt checks in original-frame pixels (numpy only) ------------------------------------
def validate_points(points_xy, width: int, height: int) -> np.ndarray:
    """(N, 2) clicks in original pixels; raises PromptError for a click outside the frame."""
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    for x, y in pts:
        if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x < width and 0 <= y < height):
            raise PromptError(f"point ({x:g},{y:g}) is outside the {width}x{height} frame")
    return pts


def validate_boxes(boxes_xyxy, width: int, height: int) -> np.ndarray:
    """(N, 4) boxes x1,y1,x2,y2 in original pixels; raises PromptError if outside or empty."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    for x1, y1, x2, y2 in boxes:
        desc = f"box ({x1:g},{y1:g},{x2:g},{y2:g})"
        if not np.all(np.isfinite([x1, y1, x2, y2])):
            raise PromptError(f"{desc} has a non-finite coordinate")
        if not (x2 > x1 and y2 > y1):
            raise PromptError(f"{desc} is empty: need x1 < x2 and y1 < y2")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise PromptError(f"{desc} is outside the {width}x{height} frame")
    return boxes


def validate_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A first-frame mask must have the frame's size; returns it unchanged."""
    if mask.ndim < 2 or tuple(mask.shape[-2:]) != (height, width):
        raise PromptError(
            f"mask is {mask.shape[-1] if mask.ndim else '?'}x{mask.shape[-2] if mask.ndim > 1 else '?'}, "
            f"the frame is {width}x{height}"
        )
    return mask


def check_prompt_in_frame(obj_id: int, points, boxes, mask, width: int, height: int) -> None:
    """An object's prompts against the frame size (PromptError naming the object for a mask)."""
    if points:
        validate_points(points, width, height)
    if boxes:
        validate_boxes(boxes, width, height)
    if mask is not None:
        try:
            validate_mask(mask, width, height)
        except PromptError as exc:
            raise PromptError(f"object {obj_id}: {exc}") from None


def check_prompt_frame(frame: int, info, every: int = 1) -> None:
    """A prompt's source frame against what is known of the video in advance (`info`: start,
    num_frames, fps and output_fps of a reader's SourceInfo; `every`: --every)."""
    start = int(getattr(info, "start", 0) or 0)
    if frame < start:
        raise PromptError(f"prompt frame {frame} is before --start {start}")
    if every > 1 and (frame - start) % every:
        raise PromptError(f"prompt frame {frame} is skipped by --every {every} (processed frames: "
                          f"{start}, {start + every}, {start + 2 * every}, ...)")
    total = getattr(info, "num_frames", None)
    # num_frames counts processed frames: a frame number follows from it only when none is skipped
    consecutive = every == 1 and getattr(info, "output_fps", None) in (None, getattr(info, "fps", None))
    if total is not None and consecutive and frame - start >= total:
        raise PromptError(f"prompt frame {frame} is beyond the end of the video ({total} frames from frame {start})")
