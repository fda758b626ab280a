"""``overlay``: the input frames with the masks drawn on them, for people (not for tools).

Each track gets a fixed colour (``rle.id_color``): masks are blended at 45 %, outlined, and
labelled ``"<id> <label> <score>"``. A label sits on its object's own interior point (the
pixel of its visible mask farthest from the mask's border, the maximum of a distance
transform), so overlapping objects do not stack their labels at one corner; labels whose
boxes would collide are moved apart (up or down, then sideways), higher scores placed first,
with a thin line back to their object when moved.

Videos: an H.264 (yuv420p) MP4, ``<name>.overlay.mp4``, one output frame per processed frame at
its source time (``FrameResult.pts``, the time jsonl gives; ``index / fps`` for image folders).
H.264 yuv420p needs even sizes: an odd width or height is padded by one replicated column/row,
so the video is ``ceil2(W) x ceil2(H)``.

Images (``segcli image``): one PNG per image, ``<stem>.overlay.png`` in the output folder
(``photo.jpg`` -> ``out/photo.overlay.png``), all moved into place at close; ``-o FILE`` takes
exactly one image (a second one is a UsageError). Two images with the same stem are refused.

Uses ``FrameResult.image`` (``needs_image`` is True).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segcli.errors import UsageError
from segcli.io.base import AtomicFile, UniqueStems, Writer, WriterOptions, check_not_input, frame_stem
from segcli.io.png import save_rgb_png
from segcli.io.rle import id_color, paint_order
from segcli.io.video import SOURCE_TIME_BASE, VideoEncoder, frame_time
from segcli.results import FrameResult, Segment, VideoInfo

ALPHA = 0.45
# Byte-identical MP4s run to run: one thread (threaded x264 output depends on timing) and no
# macroblock-tree (its lookahead reads memory x264 never wrote, so the bitstream changed with
# whatever the heap held before: measured 8 in 10 runs once freed memory is reused, as segcli
# does, segcli/runtime.py; 0 in 20 with mbtree=0).
_X264 = {"crf": "20", "preset": "fast", "threads": "1", "x264-params": "mbtree=0"}


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of ``mask`` farthest from its border (ties: the first in row order)."""
    padded = np.pad(mask.astype(np.uint8), 1)  # the crop's edge counts as outside
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x) - 1, int(y) - 1


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0


def place_labels(anchors: list[tuple[int, int]], sizes: list[tuple[int, int]], width: int,
                 height: int) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) for labels of ``sizes`` (w, h) centred on ``anchors``, in that
    order of priority: each is moved off the boxes placed before it (vertical steps first,
    then sideways), kept inside the image where it fits; the least-overlapping spot otherwise."""
    placed: list[tuple[int, int, int, int]] = []
    for (ax, ay), (w, h) in zip(anchors, sizes):
        steps = [(0, 0)]
        for k in range(1, 7):
            steps += [(0, k * (h + 1)), (0, -k * (h + 1))]
        for k in range(1, 4):
            steps += [(k * (w // 2 + 2), 0), (-k * (w // 2 + 2), 0)]
        best, best_cost = None, None
        for dx, dy in steps:
            x0 = min(max(ax - w // 2 + dx, 0), max(width - w, 0))
            y0 = min(max(ay - h // 2 + dy, 0), max(height - h, 0))
            box = (x0, y0, x0 + w, y0 + h)
            cost = sum(_overlap(box, other) for other in placed)
            if best_cost is None or cost < best_cost:
                best, best_cost = box, cost
            if cost == 0:
                break
        placed.append(best)
    return placed


def render_overlay(frame: FrameResult) -> np.ndarray:
    """The frame's RGB image with its segments drawn (same size as the frame)."""
    if frame.image is None:
        raise ValueError(f"overlay: frame {frame.index} has no image (the pipeline must keep RGB frames)")
    if frame.image.shape != (frame.height, frame.width, 3):
        raise ValueError(f"overlay: frame {frame.index} image has shape {frame.image.shape}")
    img = np.array(frame.image, dtype=np.uint8, copy=True, order="C")
    segments = [s for s in paint_order(frame) if s.area > 0]
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
    _draw_labels(img, frame, segments)
    return img


def _draw_labels(img: np.ndarray, frame: FrameResult, segments: list[Segment]) -> None:
    if not segments:
        return
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, min(frame.height, frame.width) / 700)
    ids = frame.id_map()
    order = sorted(segments, key=lambda s: (-float(s.score), s.id))  # the best placed first
    anchors, sizes, texts = [], [], []
    for seg in order:
        x, y, w, h = seg.bbox_xywh
        visible = ids[y:y + h, x:x + w] == seg.id  # what is not covered by a higher score
        px, py = interior_point(visible if visible.any() else seg.mask[y:y + h, x:x + w])
        anchors.append((x + px, y + py))
        text = f"{seg.id} {seg.label} {seg.score:.2f}" if seg.label else f"{seg.id} {seg.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, font, scale, 1)
        sizes.append((tw + 2, th + base + 2))
        texts.append((text, th))
    boxes = place_labels(anchors, sizes, frame.width, frame.height)
    for seg, (ax, ay), (x0, y0, x1, y1), (text, th) in zip(order, anchors, boxes, texts):
        colour = id_color(seg.id)
        if not (x0 <= ax < x1 and y0 <= ay < y1):  # moved off its object: a line back to it
            cx, cy = min(max(ax, x0), x1 - 1), min(max(ay, y0), y1 - 1)
            cv2.line(img, (ax, ay), (cx, cy), colour, 1, cv2.LINE_AA)
            cv2.circle(img, (ax, ay), 2, colour, cv2.FILLED)
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), colour, cv2.FILLED)
        ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        cv2.putText(img, text, (x0 + 1, y0 + th + 1), font, scale, ink, 1, cv2.LINE_AA)


def pad_even(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return img
    return cv2.copyMakeBorder(img, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


class OverlayWriter(Writer):
    format_name = "overlay"
    default_name = "{name}.overlay.mp4"
    image_name = "{stem}.overlay.png"  # per image, for `segcli image` (info.is_image)
    needs_image = True

    def __init__(self, target, info: VideoInfo, options: WriterOptions | None = None, *,
                 directory: Path | None = None):
        super().__init__(target, info, options)
        self._directory = None if directory is None else Path(directory)  # images: one PNG each in it
        if info.is_image and self._directory is None and self.target.suffix.lower() != ".png":
            raise UsageError(f"overlay of images writes PNG files: give -o FILE.png (one image) or -o DIR/, "
                             f"not -o {self.target}")
        self._file: AtomicFile | None = None if info.is_image else self._atomic_file(self.target)
        self._enc: VideoEncoder | None = None
        self._pngs: list[AtomicFile] = []
        self._stems = UniqueStems(self.format_name)

    @classmethod
    def for_directory(cls, directory: Path, info: VideoInfo, options: WriterOptions | None = None):
        if info.is_image:
            return cls(directory / cls.image_name.format(stem=info.name), info, options, directory=directory)
        return cls(directory / cls.default_name.format(name=info.name), info, options)

    def _open(self) -> None:
        w, h = self.info.width + self.info.width % 2, self.info.height + self.info.height % 2
        self._enc = VideoEncoder(self._file.temp_path(), "mp4", "libx264", w, h, "yuv420p", self.info.fps,
                                 codec_options=_X264, container_options={"movflags": "+faststart"},
                                 time_base=SOURCE_TIME_BASE)

    def _write(self, frame: FrameResult) -> None:
        if self.info.is_image:
            self._write_png(frame)
            return
        if (frame.width, frame.height) != (self.info.width, self.info.height):
            raise ValueError(f"overlay: frame {frame.index} is {frame.width}x{frame.height}, "
                             f"the video is {self.info.width}x{self.info.height}")
        if self._enc is None:
            self._open()
        self._enc.encode(pad_even(render_overlay(frame)), "rgb24", pts=frame_time(frame, self.info.fps))

    def _write_png(self, frame: FrameResult) -> None:
        stem = frame_stem(frame)
        self._stems.add(stem)
        if self._directory is None:
            if self._pngs:
                raise UsageError(f"overlay: -o {self.target} takes one image; give an output folder (-o DIR/) "
                                 "for several")
            path = self.target
        else:
            path = self._directory / self.image_name.format(stem=stem)
        check_not_input(path, self.options.inputs)
        png = self._atomic_file(path)
        save_rgb_png(png.temp_path(), render_overlay(frame))
        self._pngs.append(png)

    def _close(self) -> None:
        if self.info.is_image:
            for png in self._pngs:
                png.commit()
            return
        if self._enc is None:
            self._open()
        self._enc.close()
        self._file.commit()

    def _abort(self) -> None:
        if self._enc is not None:
            self._enc.abort()
        for png in self._pngs:
            png.discard()
        if self._file is not None:
            self._file.discard()
