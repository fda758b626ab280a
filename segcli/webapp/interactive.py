"""Click-to-mask on single frames with cached features: the model side of `segcli app`.

The first prompt on a frame runs the backbone and the pixel decoder once; their outputs (the
pixel decoder's mask features and its three memories, all the prompt decoder reads) go into a
bounded LRU (`FeatureCache`, budget in MB). Every later click on that frame runs only the prompt
decoder (`Segmenter.decode_prompts(..., pixel=...)`), as `segcli vos` does for a prompt frame
inside a clip (pipeline/video.py `_decode_prompts`). The pixel decoder works frame by frame, so
these are the numbers the tracker's clip decode gives that frame.

Everything here is plain functions and classes over the Segmenter's public methods and attributes;
nothing in it knows about HTTP.

    pseg = PromptSegmenter(seg, scale=seg.cfg.preprocess.video_scale, cache_mb=1024)
    masks, timing = pseg.segment(("clip", 12), lambda: rgb_of_frame_12, {1: ([(120, 80)], [])})
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

import numpy as np
import torch

from ..pipeline.engine import Segmenter
from ..pipeline.postprocess import upsample_masks
from ..pipeline.preprocess import FrameMeta, preprocess_frames
from ..pipeline.prompts import prompt_batch, validate_boxes, validate_points

DEFAULT_CACHE_MB = 1024.0


@dataclass
class FrameFeatures:
    """What the prompt decoder needs of one frame: its shapes and its pixel-decoder outputs."""

    meta: FrameMeta
    pixel: tuple  # (mask features (1, E, H4, W4), [m32, m16, m8]) as HeadOutput.pixel
    nbytes: int
    seconds: float  # backbone + pixel decoder time when it was computed


@dataclass
class ObjectMask:
    """The answer for one object on one frame: the union of its prompts' masks."""

    obj_id: int
    mask: np.ndarray  # bool (H, W) at the original frame size
    score: float  # class probability with a vocabulary, else objectness
    label: str = ""
    category: int = -1  # index into the vocabulary, -1 class-agnostic
    isthing: bool = True

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def bbox_xywh(self) -> list[int]:
        ys = np.flatnonzero(self.mask.any(axis=1))
        xs = np.flatnonzero(self.mask.any(axis=0))
        if len(xs) == 0:
            return [0, 0, 0, 0]
        return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


@dataclass
class Timing:
    features_s: float = 0.0  # backbone + pixel decoder (0 on a cache hit)
    decode_s: float = 0.0  # prompt decoder + upsampling to the frame
    cached: bool = False

    def as_dict(self) -> dict:
        return {"features_ms": round(self.features_s * 1000, 1), "decode_ms": round(self.decode_s * 1000, 1),
                "cached": self.cached}


def _nbytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    return 0


def _detach(obj):
    """Own storage for a cached tensor: a slice of a bigger batch would keep the whole batch alive."""
    if isinstance(obj, torch.Tensor):
        return obj.clone() if obj.storage_offset() or obj.untyped_storage().nbytes() > _nbytes(obj) else obj
    if isinstance(obj, list):
        return [_detach(o) for o in obj]
    if isinstance(obj, tuple):
        return tuple(_detach(o) for o in obj)
    return obj


class FeatureCache:
    """Least-recently-used per-frame features, bounded by bytes (thread-safe).

    One 1280x736 frame of the released ConvNeXt-L model holds 38 MB in bf16 (76 MB in fp32):
    stride-4 mask features 256x184x320 plus the 1/8, 1/16, 1/32 memories; the tiny reference model
    about 1 MB at its own 320x192 (19 MB at 1280x736). An entry larger than the whole budget is not kept."""

    def __init__(self, budget_mb: float = DEFAULT_CACHE_MB):
        if not budget_mb >= 0:
            raise ValueError(f"cache budget {budget_mb} MB: must be >= 0")
        self.budget = int(budget_mb * 2**20)
        self._items: OrderedDict[Hashable, FrameFeatures] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> FrameFeatures | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: Hashable, item: FrameFeatures) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._used -= old.nbytes
            if item.nbytes > self.budget:
                return
            self._items[key] = item
            self._used += item.nbytes
            while self._used > self.budget and self._items:
                _, evicted = self._items.popitem(last=False)
                self._used -= evicted.nbytes

    def discard(self, predicate: Callable[[Hashable], bool]) -> None:
        with self._lock:
            for key in [k for k in self._items if predicate(k)]:
                self._used -= self._items.pop(key).nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._used = 0

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict:
        with self._lock:
            return {"budget_mb": round(self.budget / 2**20, 1), "used_mb": round(self._used / 2**20, 2),
                    "frames": len(self._items), "hits": self.hits, "misses": self.misses}


def pixel_outputs(seg: Segmenter, feats: list[torch.Tensor]) -> tuple:
    """The pixel decoder's outputs for the frames of `feats` (HeadOutput.pixel's layout)."""
    return seg.pixel_features(feats)


def frame_features(seg: Segmenter, rgb: np.ndarray, scale: Sequence[int]) -> FrameFeatures:
    """Backbone + pixel decoder of one RGB uint8 (H, W, 3) frame at the resize limits `scale` (w, h)."""
    t0 = time.perf_counter()
    pre = seg.cfg.preprocess
    batch, metas = preprocess_frames([rgb], tuple(scale), pre.pad_divisor, pre.mean, pre.std,
                                     device=seg.input_device)
    feats = seg.features(batch)
    pixel = _detach(pixel_outputs(seg, feats))
    del feats
    return FrameFeatures(metas[0], pixel, _nbytes(pixel), time.perf_counter() - t0)


def decode_objects(seg: Segmenter, ff: FrameFeatures, objects: dict[int, tuple[list, list]],
                   labelled: bool = False) -> list[ObjectMask]:
    """Masks of objects {id: (points [(x, y)], boxes [(x1, y1, x2, y2)])} in original pixels on the
    frame of `ff`: one prompt-decoder call for all their prompts (each prompt attends only to
    itself, so batching changes no number). An object's mask is the union of its prompts' masks
    and its label the argmax of their mean class probabilities, as `segcli image --point` does."""
    objects = {oid: (list(p), list(b)) for oid, (p, b) in objects.items() if p or b}
    if not objects:
        return []
    meta = ff.meta
    norm, flags, owners = prompt_batch([(oid, p, b) for oid, (p, b) in sorted(objects.items())],
                                       meta.scale_factor, meta.img_shape)
    out = seg.decode_prompts(None, norm, flags, pixel=ff.pixel)
    logits = upsample_masks(out.mask_logits[0, :, 0], meta.pad_shape, meta.img_shape, meta.ori_shape)
    binary = (logits.sigmoid() > 0.5).cpu().numpy()
    vocab = seg.vocabulary
    probs = out.cls_logits[0].float().softmax(-1)[:, :-1].cpu() if labelled else None
    objectness = out.iou_logits[0, :, 0].float().sigmoid().cpu()
    result = []
    for oid in sorted(objects):
        rows = [i for i, o in enumerate(owners) if o == oid]
        mask = np.logical_or.reduce(binary[rows])
        if probs is not None:
            p = probs[rows].mean(0)
            k = int(p.argmax())
            result.append(ObjectMask(oid, mask, float(p[k]), vocab.names[k], k, vocab.is_thing(k)))
        else:
            result.append(ObjectMask(oid, mask, float(objectness[rows].max())))
    return result


@dataclass
class PromptSegmenter:
    """A Segmenter plus the per-frame feature cache: `segment` is the whole click -> mask path."""

    seg: Segmenter
    scale: tuple[int, int]
    cache: FeatureCache = field(default_factory=FeatureCache)

    def features(self, key: Hashable, rgb: Callable[[], np.ndarray] | np.ndarray) -> tuple[FrameFeatures, bool]:
        """(features of frame `key`, whether they were cached); `rgb` (or a callable giving it) is
        only read on a miss."""
        hit = self.cache.get(key)
        if hit is not None:
            return hit, True
        image = rgb() if callable(rgb) else rgb
        ff = frame_features(self.seg, image, self.scale)
        self.cache.put(key, ff)
        return ff, False

    def segment(self, key: Hashable, rgb, objects: dict[int, tuple[list, list]], labelled: bool = False,
                size: tuple[int, int] | None = None) -> tuple[list[ObjectMask], Timing]:
        """Masks for `objects` on frame `key`. size (width, height): the frame's, to check the
        prompts before any model work (PromptError for a click outside the frame)."""
        if size is not None:
            for points, boxes in objects.values():
                if points:
                    validate_points(points, *size)
                if boxes:
                    validate_boxes(boxes, *size)
        timing = Timing()
        ff, timing.cached = self.features(key, rgb)
        timing.features_s = 0.0 if timing.cached else ff.seconds
        t0 = time.perf_counter()
        masks = decode_objects(self.seg, ff, objects, labelled)
        timing.decode_s = time.perf_counter() - t0
        return masks, timing
