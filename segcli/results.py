"""Per-frame results: the contract between the pipeline and the writers (segcli.io).

The pipeline produces one `FrameResult` per input frame, in frame order; writers consume
them one at a time (streaming) and finalise at the end. Masks are boolean HxW numpy arrays
at the original frame size.
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

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def bbox_xywh(self) -> list[int]:
        """Tight box of the mask as COCO [x, y, w, h]; zeros for an empty mask."""
        ys = np.flatnonzero(self.mask.any(axis=1))
        xs = np.flatnonzero(self.mask.any(axis=0))
        if len(xs) == 0:
            return [0, 0, 0, 0]
        return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


@dataclass
class FrameResult:
    index: int  # frame index in the input (after --start)
    pts: float | None  # presentation time in seconds, None for images
    height: int
    width: int
    segments: list[Segment] = field(default_factory=list)
    image: np.ndarray | None = None  # RGB uint8 (H, W, 3), kept only when a writer needs pixels
    name: str | None = None  # source file stem for image inputs ("00000" for video frames)


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
