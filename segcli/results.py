"""Per-frame results: the contract between the pipeline and the writers (segcli.io).

The pipeline produces one `FrameResult` per processed frame, in frame order; writers consume
them one at a time (streaming) and finalise at the end. Masks are boolean HxW numpy arrays
at the original frame size.

Frame numbering: ``FrameResult.index`` is the frame's number in the *source* (with ``--start 5``
the first result is frame 5; skipped frames leave gaps), ``FrameResult.pts`` its source
presentation time. Every writer numbers frames this way (see segcli.io).

Derived values are computed once and shared by every writer: a Segment caches its area, box
and COCO RLE, a FrameResult its id map. Treat masks as read-only once a writer has seen them
(assigning a new ``mask`` or changing ``segments`` is noticed; writing into a mask in place is
not).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Segment:
    id: int  # stable track id, >= 1, the same object keeps it over the whole video
    category: int  # 0-based index into VideoInfo.classes (-1: class-agnostic, e.g. VOS without vocab)
    label: str  # class name ("" when class-agnostic)
    score: float
    mask: np.ndarray  # bool (H, W) at the original frame size
    isthing: bool = True
    # vis: the track's video-level class probability, which --score-threshold filters; `score` is
    # that times the frame's mask quality (the official instance score). None where not separate.
    class_score: float | None = None

    def __setattr__(self, name, value):
        if name == "mask":
            self.__dict__.pop("_derived", None)  # a new mask: area, box and RLE are recomputed
        object.__setattr__(self, name, value)

    def _cache(self) -> dict:
        cache = self.__dict__.get("_derived")
        if cache is None:
            cache = self.__dict__["_derived"] = {}
        return cache

    @property
    def area(self) -> int:
        cache = self._cache()
        if "area" not in cache:
            cache["area"] = int(np.count_nonzero(self.mask))
        return cache["area"]

    @property
    def bbox_xywh(self) -> list[int]:
        """Tight box of the mask as COCO [x, y, w, h]; zeros for an empty mask (a new list each call)."""
        cache = self._cache()
        box = cache.get("bbox")
        if box is None:
            ys = np.flatnonzero(self.mask.any(axis=1))
            xs = np.flatnonzero(self.mask.any(axis=0))
            if len(xs) == 0:
                box = (0, 0, 0, 0)
            else:
                box = (int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1))
            cache["bbox"] = box
        return list(box)

    @property
    def rle(self) -> dict:
        """The mask as a JSON-ready COCO RLE ``{"size": [h, w], "counts": str}`` (encoded once;
        the same dict is returned each time: do not modify it)."""
        cache = self._cache()
        if "rle" not in cache:
            from segcli.io.rle import encode_mask

            cache["rle"] = encode_mask(self.mask)
        return cache["rle"]


def paint_order(segments: list[Segment]) -> list[Segment]:
    """Segments in painting order: lower scores first, so where masks overlap the
    higher-scoring segment ends on top (ties: the higher id ends on top)."""
    return sorted(segments, key=lambda s: (float(s.score), s.id))


@dataclass
class FrameResult:
    index: int  # the frame's number in the source (with --start 5 the first result is 5)
    pts: float | None  # source presentation time in seconds, None for images and image folders
    height: int
    width: int
    segments: list[Segment] = field(default_factory=list)
    image: np.ndarray | None = None  # RGB uint8 (H, W, 3), kept only when a writer needs pixels
    name: str | None = None  # source file stem for image inputs ("00005" for video frame 5)

    def id_map(self) -> np.ndarray:
        """The HxW map of track ids (0 = background; overlaps: the higher score on top), painted
        once per frame and shared by the writers. Read-only; dtype: the smallest of
        uint8/uint16/uint32 holding the largest id."""
        key = (self.height, self.width, tuple((id(s), id(s.mask), s.id, float(s.score)) for s in self.segments))
        cached = self.__dict__.get("_id_map")
        if cached is not None and cached[0] == key:
            return cached[1]
        top = max((s.id for s in self.segments), default=0)
        dtype = np.uint8 if top <= 0xFF else np.uint16 if top <= 0xFFFF else np.uint32
        ids = np.zeros((self.height, self.width), dtype=dtype)
        for seg in paint_order(self.segments):
            ids[seg.mask] = seg.id
        ids.flags.writeable = False
        self.__dict__["_id_map"] = (key, ids)
        return ids


@dataclass
class VideoInfo:
    name: str  # sequence name used in output paths (input stem)
    width: int
    height: int
    fps: float | None
    num_frames: int | None  # None when unknown in advance (stdin, live)
    classes: list[str]  # vocabulary, things first
    num_things: int
    task: str  # "vis" | "vps" | "vss" | "vos" | "image" | "prompt"

    def isthing(self, category: int) -> bool:
        return 0 <= category < self.num_things

    @property
    def is_image(self) -> bool:
        """Independent images (``segcli image``), not the frames of one video."""
        return self.task in ("image", "prompt")
