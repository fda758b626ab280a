"""``overlay``: an H.264 (yuv420p) MP4 of the input frames with the masks drawn on them.

For people, not for tools. Each track gets a fixed colour (``rle.id_color``): masks are blended
at 45 %, outlined, and labelled ``"<id> <label> <score>"`` at the top-left of their box. Uses
``FrameResult.image`` (``needs_image`` is True). One output frame per input frame at the input's
frame rate (25 fps when unknown). H.264 yuv420p needs even sizes: an odd width or height is
padded by one replicated column/row, so the video is ``ceil2(W) x ceil2(H)``.
"""

from __future__ import annotations

import cv2
import numpy as np

from segcli.io.base import AtomicFile, Writer
from segcli.io.rle import id_color, paint_order
from segcli.io.video import VideoEncoder
from segcli.results import FrameResult

ALPHA = 0.45
# one encoder thread: x264 output is then byte-identical run to run (and the model is far slower)
# Byte-identical MP4s run to run: one thread (threaded x264 output depends on timing) and no
# macroblock-tree (its lookahead reads memory x264 never wrote, so the bitstream changed with
# whatever the heap held before: measured 8 in 10 runs once freed memory is reused, as segcli
# does, segcli/runtime.py; 0 in 20 with mbtree=0).
_X264 = {"crf": "20", "preset": "fast", "threads": "1", "x264-params": "mbtree=0"}


def render_overlay(frame: FrameResult) -> np.ndarray:
    """The frame's RGB image with its segments drawn (same size as the frame)."""
    if frame.image is None:
        raise ValueError(f"overlay: frame {frame.index} has no image (the pipeline must keep RGB frames)")
    if frame.image.shape != (frame.height, frame.width, 3):
        raise ValueError(f"overlay: frame {frame.index} image has shape {frame.image.shape}")
    img = np.array(frame.image, dtype=np.uint8, copy=True, order="C")
    segments = [s for s in paint_order(frame) if s.bbox_xywh[2] > 0]
    thickness = max(1, round(min(frame.height, frame.width) / 300))
    for seg in segments:
        x, y, w, h = seg.bbox_xywh
        crop, m = img[y:y + h, x:x + w], seg.mask[y:y + h, x:x + w]
        colour = np.array(id_color(seg.id), dtype=np.float32)
        crop[m] = (crop[m].astype(np.float32) * (1 - ALPHA) + colour * ALPHA + 0.5).astype(np.uint8)
    for seg in segments:
        x, y, w, h = seg.bbox_xywh
        contours, _ = cv2.findContours(seg.mask[y:y + h, x:x + w].astype(np.uint8), cv2.RETR_LIST,
                                       cv2.CHAIN_APPROX_SIMPLE, offset=(x, y))
        cv2.drawContours(img, contours, -1, id_color(seg.id), thickness, cv2.LINE_AA)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, min(frame.height, frame.width) / 700)
    for seg in segments:
        x, y, _, _ = seg.bbox_xywh
        text = f"{seg.id} {seg.label} {seg.score:.2f}" if seg.label else f"{seg.id} {seg.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, font, scale, 1)
        top = y - th - base - 2 if y - th - base - 2 >= 0 else y
        colour = id_color(seg.id)
        cv2.rectangle(img, (x, top), (x + tw + 2, top + th + base + 2), colour, cv2.FILLED)
        ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        cv2.putText(img, text, (x + 1, top + th + 1), font, scale, ink, 1, cv2.LINE_AA)
    return img


def pad_even(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return img
    return cv2.copyMakeBorder(img, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


class OverlayWriter(Writer):
    format_name = "overlay"
    default_name = "{name}.overlay.mp4"
    needs_image = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._file = AtomicFile(self.target)
        self._enc: VideoEncoder | None = None

    def _open(self) -> None:
        w, h = self.info.width + self.info.width % 2, self.info.height + self.info.height % 2
        self._enc = VideoEncoder(self._file.temp_path(), "mp4", "libx264", w, h, "yuv420p", self.info.fps,
                                 codec_options=_X264, container_options={"movflags": "+faststart"})

    def _write(self, frame: FrameResult) -> None:
        if (frame.width, frame.height) != (self.info.width, self.info.height):
            raise ValueError(f"overlay: frame {frame.index} is {frame.width}x{frame.height}, "
                             f"the video is {self.info.width}x{self.info.height}")
        if self._enc is None:
            self._open()
        self._enc.encode(pad_even(render_overlay(frame)), "rgb24")

    def _close(self) -> None:
        if self._enc is None:
            self._open()
        self._enc.close()
        self._file.commit()

    def _abort(self) -> None:
        if self._enc is not None:
            self._enc.abort()
        self._file.discard()
