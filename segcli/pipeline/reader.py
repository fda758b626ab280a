"""Lazy frame reading: video files (PyAV, optionally decord), single images, image folders, stdin.

    with open_source("clip.mp4", start=10, end=50) as src:
        print(src.info)              # name, width, height, fps, num_frames
        for frame in src:            # Frame(index, pts, rgb uint8 HxWx3, name)
            ...

Frames are decoded one at a time; nothing holds more than one frame. Every frame comes out
as upright uint8 RGB whatever the source pixel format (8/10-bit YUV, alpha, gray, palette):

* video: PyAV converts to rgb24; the display matrix (phone videos' rotation/flip metadata)
  is applied so frames are upright, as players and `ffmpeg` show them;
* images: decoded with OpenCV like the official pipeline (`cv2.imdecode` IMREAD_COLOR, which
  applies the EXIF orientation), then BGR -> RGB.

`Frame.index` is the frame's index in the input (with start=10 the first frame has index 10).
`info.num_frames` is the number of frames the iteration will yield when the container says so
(None when unknown, e.g. some MKV/stdin streams); treat it as a progress hint: clip splitting
that must match the official one should use `clips.OnlineClipSplitter`, which needs no count.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import cv2
import numpy as np

from segcli.errors import InputNotFoundError, UnreadableInputError, UsageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".pnm", ".jp2"}
)  # fmt: skip
STDIN = "-"


@dataclass
class SourceInfo:
    name: str  # sequence name for output paths: file or folder stem, "stdin" for "-"
    width: int  # of the upright frames
    height: int
    fps: float | None  # None for images
    num_frames: int | None  # frames the iteration yields, None when unknown in advance
    kind: str  # "video" | "image" | "folder"
    path: str


@dataclass
class Frame:
    index: int  # index in the input
    pts: float | None  # seconds from the start of the stream; None for images
    rgb: np.ndarray  # uint8 (H, W, 3), upright
    name: str  # file stem for images, "%05d" % index for video frames


class FrameSource:
    """Base class: iterate to get `Frame`s; usable as a context manager; `close()` frees temp files."""

    info: SourceInfo

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Orientation
# ---------------------------------------------------------------------------------------------


def orient_frame(rgb: np.ndarray, display_matrix) -> np.ndarray:
    """Apply an FFmpeg display matrix (3x3, 16.16 fixed point in the 2x2 part) to a decoded frame.

    FFmpeg maps a source pixel (x, y) to the displayed position (a*x + c*y, b*x + d*y) (+ a
    translation), with a, b, c, d = m[0], m[1], m[3], m[4]. Only the 8 axis-aligned cases
    (rotations by multiples of 90 degrees, with or without a mirror) occur in practice; any other
    matrix is snapped to the nearest of them.
    """
    if display_matrix is None:
        return rgb
    m = np.asarray(display_matrix, dtype=np.float64).reshape(-1)
    a, b, c, d = m[0], m[1], m[3], m[4]
    if abs(a) + abs(d) >= abs(b) + abs(c):
        out = rgb
        if a < 0:
            out = out[:, ::-1]  # displayed x decreases with source x: mirror horizontally
        if d < 0:
            out = out[::-1]
    else:
        out = rgb.transpose(1, 0, 2) if rgb.ndim == 3 else rgb.T  # displayed x from source y
        if c < 0:
            out = out[:, ::-1]
        if b < 0:
            out = out[::-1]
    return np.ascontiguousarray(out)


def rotation_matrix(ccw_degrees: float, hflip: bool = False) -> np.ndarray:
    """The display matrix FFmpeg stores for a counter-clockwise display rotation (then optional mirror);
    used for the legacy `rotate` metadata tag (clockwise degrees) and in tests."""
    theta = np.deg2rad(ccw_degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    m = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    if hflip:
        m[:, 0] *= -1
    return np.round(m * 65536).astype(np.int64)


def _frame_display_matrix(frame) -> np.ndarray | None:
    """The DISPLAYMATRIX side data of a decoded PyAV frame, if any."""
    try:
        side_data = list(frame.side_data)
    except Exception:  # pragma: no cover - PyAV without side-data support
        return None
    for item in side_data:
        if getattr(item.type, "name", str(item.type)).endswith("DISPLAYMATRIX"):
            raw = bytes(item)
            if len(raw) >= 36:
                return np.frombuffer(raw[:36], dtype="<i4").astype(np.int64)
    return None


# ---------------------------------------------------------------------------------------------
# Video via PyAV
# ---------------------------------------------------------------------------------------------


class PyAVSource(FrameSource):
    """Video file decoded lazily with PyAV; every iteration re-opens the file."""

    def __init__(self, path: str, start: int = 0, end: int | None = None, display_path: str | None = None,
                 name: str | None = None, cleanup: str | None = None):  # fmt: skip
        import av

        self._av = av
        self.path = path
        self.display_path = display_path or path
        self.start, self.end = start, end
        self._cleanup = cleanup  # temp file to delete on close (stdin spool)
        try:
            container = av.open(path)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
            self.close()
            raise UnreadableInputError(f"cannot open video {self.display_path}: {_short(err)}") from None
        try:
            if not container.streams.video:
                raise UnreadableInputError(f"no video stream in {self.display_path}")
            stream = container.streams.video[0]
            first = self._first_frame(container, stream)
            rgb = self._to_rgb(first, stream)
            height, width = rgb.shape[:2]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else None
            total = int(stream.frames) if stream.frames and stream.frames > 0 else None
        except Exception:
            self.close()  # remove a stdin spool file before propagating
            raise
        finally:
            container.close()
        if total is not None and start >= total:
            self.close()
            raise UsageError(f"start frame {start} is past the end of {self.display_path} ({total} frames)")
        num = None if total is None else (min(total, end) if end is not None else total) - start
        self.info = SourceInfo(
            name=name or Path(self.display_path).stem, width=width, height=height, fps=fps,
            num_frames=num, kind="video", path=self.display_path,
        )  # fmt: skip

    def _first_frame(self, container, stream):
        try:
            for frame in container.decode(stream):
                return frame
        except self._av.FFmpegError as err:
            raise UnreadableInputError(f"cannot decode {self.display_path}: {_short(err)}") from None
        raise UnreadableInputError(f"no decodable frames in {self.display_path}")

    def _to_rgb(self, frame, stream) -> np.ndarray:
        # rgb24 conversion handles every pixel format (10-bit, alpha, gray, palette) via swscale
        rgb = frame.to_ndarray(format="rgb24")
        matrix = _frame_display_matrix(frame)
        if matrix is None:
            tag = stream.metadata.get("rotate") if stream.metadata else None
            if tag:
                try:
                    matrix = rotation_matrix(-float(tag))  # legacy tag: clockwise degrees
                except ValueError:
                    matrix = None
        return orient_frame(rgb, matrix)

    def __iter__(self) -> Iterator[Frame]:
        av = self._av
        try:
            container = av.open(self.path)
        except (av.FFmpegError, OSError) as err:
            raise UnreadableInputError(f"cannot open video {self.display_path}: {_short(err)}") from None
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame + slice threads; output order is unchanged
            start_time = stream.start_time if stream.start_time is not None else 0
            index = -1
            decoder = container.decode(stream)
            while True:
                try:
                    frame = next(decoder)
                except StopIteration:
                    break
                except av.FFmpegError as err:
                    raise UnreadableInputError(
                        f"cannot decode frame {index + 1} of {self.display_path}: {_short(err)}"
                    ) from None
                index += 1
                if index < self.start:
                    continue  # decode-and-skip keeps the frame count exact (seeking is keyframe-based)
                if self.end is not None and index >= self.end:
                    break
                pts = None
                if frame.pts is not None and frame.time_base is not None:
                    pts = float((frame.pts - start_time) * frame.time_base)
                yield Frame(index, pts, self._to_rgb(frame, stream), f"{index:05d}")
        finally:
            container.close()

    def close(self) -> None:
        if self._cleanup and os.path.exists(self._cleanup):
            os.unlink(self._cleanup)
        self._cleanup = None


# ---------------------------------------------------------------------------------------------
# Video via decord (optional)
# ---------------------------------------------------------------------------------------------


class DecordSource(FrameSource):
    """Video decoded with decord (RGB). decord ignores rotation metadata; use PyAV for phone videos."""

    def __init__(self, path: str, start: int = 0, end: int | None = None, display_path: str | None = None,
                 name: str | None = None, cleanup: str | None = None):  # fmt: skip
        import decord

        self.path, self.display_path = path, display_path or path
        self._cleanup = cleanup
        try:
            self._vr = decord.VideoReader(path, ctx=decord.cpu(0))
            total = len(self._vr)
        except Exception as err:  # decord raises its own DECORDError and RuntimeError
            self.close()
            raise UnreadableInputError(f"cannot open video {self.display_path}: {_short(err)}") from None
        if total == 0:
            self.close()
            raise UnreadableInputError(f"no decodable frames in {self.display_path}")
        if start >= total:
            self.close()
            raise UsageError(f"start frame {start} is past the end of {self.display_path} ({total} frames)")
        self.start, self.stop = start, total if end is None else min(end, total)
        first = self._vr[start].asnumpy()
        fps = float(self._vr.get_avg_fps()) or None
        self.info = SourceInfo(
            name=name or Path(self.display_path).stem, width=int(first.shape[1]), height=int(first.shape[0]),
            fps=fps, num_frames=self.stop - self.start, kind="video", path=self.display_path,
        )  # fmt: skip

    def __iter__(self) -> Iterator[Frame]:
        for index in range(self.start, self.stop):
            try:
                rgb = self._vr[index].asnumpy()
                pts = float(self._vr.get_frame_timestamp(index)[0])
            except Exception as err:
                raise UnreadableInputError(
                    f"cannot decode frame {index} of {self.display_path}: {_short(err)}"
                ) from None
            yield Frame(index, pts, np.ascontiguousarray(rgb), f"{index:05d}")

    def close(self) -> None:
        self._vr = None
        if self._cleanup and os.path.exists(self._cleanup):
            os.unlink(self._cleanup)
        self._cleanup = None


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def read_image(path: str, display_path: str | None = None) -> np.ndarray:
    """uint8 RGB (H, W, 3) like the official loader: cv2.imdecode IMREAD_COLOR (EXIF orientation
    applied, gray / alpha / 16-bit converted to 8-bit BGR), then BGR -> RGB.
    np.fromfile + imdecode also works for non-ASCII paths, unlike cv2.imread on Windows."""
    shown = display_path or path
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise UnreadableInputError(f"cannot read image {shown}: {_short(err)}") from None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise UnreadableInputError(f"cannot decode image {shown}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class ImageListSource(FrameSource):
    """A single image or the images of a folder (sorted by file name); decoded one at a time."""

    def __init__(self, files: list[str], name: str, kind: str, display_path: str, start: int = 0,
                 end: int | None = None, display_names: list[str] | None = None,
                 cleanup: str | None = None):  # fmt: skip
        self._cleanup = cleanup
        self.display_path = display_path
        names = display_names or [Path(f).stem for f in files]
        selected = list(range(len(files)))[start:end]
        if not selected:
            self.close()
            raise UsageError(f"start frame {start} is past the end of {display_path} ({len(files)} images)")
        self._items = [(i, files[i], names[i]) for i in selected]
        first = read_image(self._items[0][1], self._shown(self._items[0][1]))
        self.info = SourceInfo(
            name=name, width=int(first.shape[1]), height=int(first.shape[0]), fps=None,
            num_frames=len(self._items), kind=kind, path=display_path,
        )  # fmt: skip

    def _shown(self, file: str) -> str:
        return self.display_path if self._cleanup else file

    def __iter__(self) -> Iterator[Frame]:
        for index, file, name in self._items:
            yield Frame(index, None, read_image(file, self._shown(file)), name)

    def close(self) -> None:
        if self._cleanup and os.path.exists(self._cleanup):
            os.unlink(self._cleanup)
        self._cleanup = None


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder (not recursive), sorted by name; hidden files skipped."""
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
         and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")


def _looks_like_image(head: bytes) -> bool:
    if head.startswith(_IMAGE_MAGIC):
        return True
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _spool_stdin(stream: BinaryIO | None) -> str:
    """Copy stdin to a temp file: PyAV needs a seekable file for MP4 (the index may be at the end)."""
    src = stream if stream is not None else sys.stdin.buffer
    fd, tmp = tempfile.mkstemp(prefix="segcli-stdin-")
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(src, out, length=1 << 20)
    return tmp


def open_source(
    path: str | os.PathLike,
    reader: str = "pyav",
    start: int = 0,
    end: int | None = None,
    stdin: BinaryIO | None = None,
) -> FrameSource:
    """Open a video file, an image, a folder of images, or "-" (stdin) as a lazy frame source.

    start / end select input frames [start, end) (end None = to the last frame).
    Raises InputNotFoundError (missing path), UnreadableInputError (undecodable, zero frames,
    folder without images) or UsageError (bad range, unknown reader, decord not installed).
    """
    if reader not in ("pyav", "decord"):
        raise UsageError(f"unknown reader {reader!r}: use pyav or decord")
    if start < 0 or (end is not None and end <= start):
        raise UsageError(f"invalid frame range: start={start}, end={end}")
    if reader == "decord":
        try:
            import decord  # noqa: F401
        except ImportError:
            raise UsageError(
                "reader 'decord' is not installed (pip install decord); use --reader pyav"
            ) from None
    video_cls = PyAVSource if reader == "pyav" else DecordSource

    path_str = os.fspath(path)
    if path_str == STDIN:
        tmp = _spool_stdin(stdin)
        if os.path.getsize(tmp) == 0:
            os.unlink(tmp)
            raise UnreadableInputError("stdin is empty")
        with open(tmp, "rb") as f:
            head = f.read(16)
        if _looks_like_image(head):
            return ImageListSource([tmp], "stdin", "image", "stdin", start, end, ["stdin"], cleanup=tmp)
        return video_cls(tmp, start, end, display_path="stdin", name="stdin", cleanup=tmp)

    p = Path(path_str)
    if not p.exists():
        raise InputNotFoundError(f"no such file: {path_str}")
    if p.is_dir():
        files = list_images(p)
        if not files:
            raise UnreadableInputError(f"no images in folder {path_str}")
        return ImageListSource([str(f) for f in files], p.resolve().name, "folder", path_str, start, end)
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageListSource([path_str], p.stem, "image", path_str, start, end)
    return video_cls(path_str, start, end)


def _short(err: BaseException) -> str:
    """One line of an exception message."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
