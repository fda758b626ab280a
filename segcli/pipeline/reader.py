"""Lazy frame reading: video files, live and remote streams, devices, stdin, images, image folders.

    with open_source("clip.mp4", start=10, end=50) as src:
        print(src.info)              # name, width, height, fps, num_frames, kind, path, live, ...
        for frame in src:            # Frame(index, pts, rgb uint8 HxWx3, name)
            ...

    open_source("rtsp://cam.local/stream", max_frames=300)            # network streams (live)
    open_source("udp://127.0.0.1:5000", source_format="mpegts", source_options={"fifo_size": "100000"})
    open_source("/dev/video0", source_options={"video_size": "640x480"})   # v4l2 device (live)
    open_source("-")                                                    # stdin, decoded as it arrives
    open_source("clip.mp4", every=5)   # frames 0, 5, 10 ... (indices stay source indices)
    open_source("clip.mp4", fps=2)     # at most 2 frames per second of source time

Frames are decoded one at a time; nothing holds more than one frame. Every frame comes out
as upright uint8 RGB whatever the source pixel format (8/10-bit YUV, alpha, gray, palette):

* video (PyAV): converted to rgb24; the display matrix (phone videos' rotation/flip metadata)
  is applied so frames are upright, as players and `ffmpeg` show them;
* images: decoded with OpenCV like the official pipeline (`cv2.imdecode` IMREAD_COLOR, which
  applies the EXIF orientation), then BGR -> RGB.

Sources. Anything FFmpeg opens: files, URLs (`rtsp://`, `http(s)://`, `udp://`, `tcp://`, `.m3u8`,
...), devices (`/dev/videoN` via v4l2, or any name with `source_format`, e.g. "lavfi", "x11grab"),
with `source_format` / `source_options` passed to `av.open(format=..., options=...)`. URLs,
devices and stdin are *live* (`info.live`): they are opened once, frames come as the source
produces them, `info.num_frames` is None, and the source can be iterated only once. A network
or device source that cannot be opened within `timeout` (5 s by default), goes silent mid-stream
(15 s) or drops raises `StreamError` (exit code 10): at open, or, for a drop, from the iterator
right after the last frame that was decoded (frames already yielded stay valid). A clean end of
a stream (the server closes it) simply ends the iteration.

stdin ("-") is decoded while it arrives (no temporary file) for streamable containers: MPEG-TS,
Matroska/WebM, y4m, NUT, AVI, fragmented or "faststart" MP4, and streams of JPEGs or PNGs (raw
MJPEG, image2pipe; 25 fps unless source_options={"framerate": ...}). An MP4/MOV whose index
(moov) comes after the media data (the default of most encoders) cannot be decoded before its
end, and a single image is one piece anyway: both are copied to a temporary file first (deleted
on close). The first bytes decide: image magic numbers (and whether another image follows the
first), the order of the top-level MP4 boxes.

Indices. `Frame.index` is the frame's index in the source (with start=10 the first frame has
index 10; with every=5 the frames are 0, 5, 10 ...) and `Frame.pts` its time in seconds from the
start of the stream, so results say which source frames they cover. For constant-frame-rate
streams the index is derived from the timestamp (round(pts * fps)), so a packet that is lost or
cannot be decoded leaves a gap instead of shifting every later frame: `source.missing` counts such
frames and `notice(msg)` (when given) hears "frame 12 of clip.avi could not be decoded: skipped".
Variable-frame-rate streams (timestamps off a fixed grid) fall back to counting decoded frames
(plus the packets that failed to decode). For live sources index 0 is the first decoded frame.

`info.num_frames` is the number of frames the iteration will yield when the container says how
many it has (None when unknown: some MKV, every live source); treat it as a progress hint: clip
splitting that must match the official one should use `clips.OnlineClipSplitter`, which needs no
count. A `start` past the end raises UsageError, at open when the length is known or can be
counted cheaply, else when the iteration finds the end.

Readers: "pyav" (default, everything above), "decord" (local video files only; bit-exact with
PyAV on 8-bit formats, within a few levels on 10-bit; refuses rotated videos, which decord
returns scrambled), "auto" (decord where benchmarks/sources.py measured it faster and it is
exact: local MP4/MOV/AVI with a frame count, 8-bit 4:2:0 / 4:4:4 / gray, no rotation, frames up
to 320x240, decord installed; PyAV everywhere else: above that decord was not reliably faster).
"""

from __future__ import annotations

import heapq
import io
import itertools
import math
import numbers
import os
import re
import select
import shutil
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Callable, Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

import cv2
import numpy as np

from segcli.errors import InputNotFoundError, StreamError, UnreadableInputError, UsageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".pnm", ".jp2"}
)  # fmt: skip
STDIN = "-"
DEFAULT_TIMEOUT = (5.0, 15.0)  # seconds for a network/device source to open / to go silent mid-stream
READERS = ("pyav", "decord", "auto")
MAX_NOTICES = 20  # missing-frame notices per iteration; later gaps are only counted

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


@dataclass
class SourceInfo:
    name: str  # sequence name for output paths: file or folder stem, "stdin" for "-", URL path stem
    width: int  # of the upright frames
    height: int
    fps: float | None  # source frame rate; None for images (and streams that do not say)
    num_frames: int | None  # frames the iteration yields, None when unknown in advance (always for live)
    kind: str  # "video" | "image" | "folder"
    path: str  # as given (URL credentials masked)
    live: bool = False  # network stream, device or streamed stdin: frames as they arrive, one pass only
    output_fps: float | None = None  # rate of the yielded frames: fps / every, or min(fps, fps limit)
    reader: str = "opencv"  # "pyav" | "decord" | "opencv" (images)
    start: int = 0  # the first source frame asked for (--start): prompts and outputs are numbered from 0


@dataclass
class Frame:
    index: int  # index in the source (not in the yielded sequence)
    pts: float | None  # seconds from the start of the stream; None for images
    rgb: np.ndarray  # uint8 (H, W, 3), upright
    name: str  # file stem for images, "%05d" % index for video frames


class FrameSource:
    """Base class: iterate to get `Frame`s; usable as a context manager; `close()` frees temp files."""

    info: SourceInfo
    missing: int = 0  # source frames found missing / undecodable in the last iteration

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def interrupt(self) -> None:
        """Called (from any thread) when the run stops early: a read that waits for input that
        may never come (a live pipe) returns end of stream. Files need nothing."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Frame selection: start / end / every / fps / duration / max_frames
# ---------------------------------------------------------------------------------------------

_SKIP, _KEEP, _STOP = 0, 1, 2


@dataclass(frozen=True)
class Selection:
    """Which source frames an iteration yields. Times are relative to the first frame at/after start."""

    start: int = 0
    end: int | None = None  # exclusive source index
    every: int = 1  # keep source frames start, start+every, ...
    fps: float | None = None  # keep at most `fps` frames per second of source time (first frame of each 1/fps slot)
    max_frames: int | None = None  # stop after yielding this many
    duration: float | None = None  # stop at this many seconds of source time after the first kept frame

    def count(self, total: int, src_fps: float | None) -> int | None:
        """Frames yielded from a constant-rate source of `total` frames (None when it depends on timestamps)."""
        n = max(0, (total if self.end is None else min(total, self.end)) - self.start)
        if (self.fps is not None or self.duration is not None) and not src_fps:
            return None
        if self.duration is not None:
            n = min(n, math.ceil((self.duration - 1e-6) * src_fps))
        if self.every > 1:
            n = -(-n // self.every)
        if self.fps is not None and n > 0 and self.fps < src_fps:
            n = math.floor((n - 1) * self.fps / src_fps + 1e-6) + 1
        if self.max_frames is not None:
            n = min(n, self.max_frames)
        return n

    def output_fps(self, src_fps: float | None) -> float | None:
        if not src_fps:
            return None
        if self.fps is not None:
            return float(min(src_fps, self.fps))
        return src_fps / self.every


class _Selector:
    """Per-iteration state of a Selection: decide(index, pts) -> _SKIP | _KEEP | _STOP."""

    def __init__(self, sel: Selection, src_fps: float | None):
        self.sel, self.src_fps = sel, src_fps
        self.kept = 0
        self.done = False  # max_frames reached: stop without waiting for another frame
        self.reached = False  # a frame at/after start was seen
        self._first: tuple[int, float | None] | None = None
        self._slot: int | None = None

    def decide(self, index: int, pts: float | None) -> int:
        s = self.sel
        if index < s.start:
            return _SKIP
        if s.end is not None and index >= s.end:
            return _STOP
        self.reached = True
        if self._first is None:
            self._first = (index, pts)
        first_index, first_pts = self._first
        if pts is not None and first_pts is not None:
            rel = pts - first_pts
        elif self.src_fps:
            rel = (index - first_index) / self.src_fps
        else:
            rel = None
        if s.duration is not None and rel is not None and rel >= s.duration - 1e-6:
            return _STOP
        if s.every > 1 and (index - s.start) % s.every:
            return _SKIP
        if s.fps is not None and rel is not None:
            slot = math.floor(rel * s.fps + 1e-6)
            if self._slot is not None and slot <= self._slot:
                return _SKIP
            self._slot = slot
        self.kept += 1
        if s.max_frames is not None and self.kept >= s.max_frames:
            self.done = True
        return _KEEP


def past_end_message(start: int, frames: int, what: str = "video") -> str:
    return f"--start {start} is past the end of the {what} ({frames} frames)"


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


def _is_identity(matrix) -> bool:
    if matrix is None:
        return True
    m = np.asarray(matrix, dtype=np.float64).reshape(-1)
    return m[0] > 0 and m[4] > 0 and abs(m[1]) + abs(m[3]) < abs(m[0]) * 1e-3


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


def _display_matrix(frame, stream) -> np.ndarray | None:
    matrix = _frame_display_matrix(frame)
    if matrix is None:
        tag = stream.metadata.get("rotate") if stream.metadata else None
        if tag:
            try:
                matrix = rotation_matrix(-float(tag))  # legacy tag: clockwise degrees
            except ValueError:
                matrix = None
    return matrix


# ---------------------------------------------------------------------------------------------
# Source indices from timestamps
# ---------------------------------------------------------------------------------------------


class _Indexer:
    """Source index of each decoded frame, true to the source when packets are lost or undecodable.

    Constant frame rate (`rate` given): index = round((pts - origin) * rate); a gap in the indices is
    a missing frame. Timestamps off that grid (more than a quarter frame) or going backwards mean a
    variable frame rate: from then on frames are counted, plus the packets that failed to decode.
    While `confirmed` is False (live streams: the rate comes from probing), the first gap is taken
    as a wrong rate rather than a loss unless one step of exactly one frame was seen before."""

    def __init__(self, time_base, rate, origin: int | None, confirmed: bool = True):
        self.tb = Fraction(time_base) if time_base is not None else None
        self.rate = float(rate) if rate else None
        self.origin = origin
        self.confirmed = confirmed
        self.last = -1
        self._failures: list[int | None] = []

    def failed(self, pts: int | None) -> None:
        """A packet with this pts could not be decoded."""
        self._failures.append(pts)

    def seconds(self, pts: int | None) -> float | None:
        if pts is None or self.origin is None or self.tb is None:
            return None
        return float((pts - self.origin) * self.tb)

    def place(self, pts: int | None) -> tuple[int, float | None, range]:
        """(index, seconds, missing indices just before it) of a decoded frame with this pts."""
        if self.origin is None and pts is not None:
            self.origin = pts
        seconds = self.seconds(pts)
        index = None
        if self.rate is not None and seconds is not None:
            pos = seconds * self.rate
            k = round(pos)
            step = k - self.last
            if abs(pos - k) > 0.25 or step < 1 or (step > 1 and not self.confirmed and self.last >= 0):
                self.rate = None  # not on a constant-rate grid: count from here on
            else:
                index = k
                if step == 1 and self.last >= 0:
                    self.confirmed = True
                self._failures = [f for f in self._failures if f is not None and f > pts]
        if index is None:
            before = [f for f in self._failures if f is None or pts is None or f < pts]
            self._failures = [f for f in self._failures if not (f is None or pts is None or f < pts)]
            index = self.last + 1 + len(before)
        missing = range(self.last + 1, index)
        self.last = index
        return index, seconds, missing

    def finish(self) -> range:
        """Packets after the last decoded frame that failed to decode: missing trailing frames."""
        k = len(self._failures)
        self._failures = []
        return range(self.last + 1, self.last + 1 + k)


def _cfr_rate(stream, packet_pts: list[int]):
    """The stream's frame rate when it is constant: the container's rates agree and the first
    packets' timestamps step by exactly one frame (or whole multiples). None otherwise."""
    rate = stream.guessed_rate or stream.average_rate or stream.base_rate
    if not rate or stream.time_base is None:
        return None
    avg, base = stream.average_rate, stream.base_rate
    if avg and base and abs(float(avg) / float(base) - 1) > 0.01:
        return None  # variable frame rate
    pts = sorted(set(p for p in packet_pts if p is not None))
    deltas = [b - a for a, b in zip(pts, pts[1:])]
    if deltas:
        d = min(deltas)
        if abs(float(d * stream.time_base * rate) - 1) > 0.05:
            return None
        if any(abs(x / d - round(x / d)) > 0.2 for x in deltas):
            return None
    return rate


# ---------------------------------------------------------------------------------------------
# Video via PyAV: files, URLs, devices, stdin
# ---------------------------------------------------------------------------------------------


def _mask_url(url: str) -> str:
    """The URL without its password (for messages and info.path)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _reason(err: BaseException, timeout: float | None = None) -> str:
    """One short line for an FFmpeg/OS error."""
    import av

    if isinstance(err, av.ExitError):
        return f"no data for {timeout:g} s (timed out)" if timeout else "interrupted"
    text = getattr(err, "strerror", None) if isinstance(err, (av.FFmpegError, OSError)) else None
    return text or _short(err)


class PyAVSource(FrameSource):
    """Video decoded lazily with PyAV. Files are re-opened by every iteration; live sources (URLs,
    devices, stdin) are opened once, their first frame is decoded for `info`, and they can be
    iterated once."""

    def __init__(self, path, start: int = 0, end: int | None = None, display_path: str | None = None,
                 name: str | None = None, cleanup: str | None = None, *, selection: Selection | None = None,
                 source_format: str | None = None, source_options: dict | None = None,
                 timeout: tuple[float, float] | None = None, live: bool = False, network: bool = False,
                 notice: Callable[[str], None] | None = None):  # fmt: skip
        import av

        self._av = av
        self.path = path if isinstance(path, str) else "stdin"
        self._target = path  # a path/URL/device name, or a file object (stdin)
        self.display_path = display_path or self.path
        self.selection = selection or Selection(start, end)
        self.start, self.end = self.selection.start, self.selection.end
        self._cleanup = cleanup  # temp file to delete on close (stdin spool)
        self._format, self._options = source_format, dict(source_options or {})
        self.timeout = timeout
        self.live, self.network = live, network
        self._notice = notice
        self.notices: list[str] = []
        self.missing = 0
        self._gen = None  # live: the decoding generator, positioned after the first frame
        self._first = None
        self._rgb_cache = None
        try:
            if live:
                width, height, fps, total = self._open_live()
            else:
                width, height, fps, total = self._open_file()
        except BaseException:
            self.close()
            raise
        sel = self.selection
        if total is not None and sel.start >= total:
            self.close()
            raise UsageError(past_end_message(sel.start, total))
        num = None if (live or total is None) else sel.count(total, fps)
        self.info = SourceInfo(
            name=name or Path(self.display_path).stem, width=width, height=height, fps=fps,
            num_frames=num, kind="video", path=self.display_path, live=live,
            output_fps=sel.output_fps(fps), reader="pyav",
        )  # fmt: skip

    # -- opening ---------------------------------------------------------------------------------
    def _container(self):
        av = self._av
        kwargs = {}
        if self.network and self.timeout:
            kwargs["timeout"] = tuple(self.timeout)
        try:
            return av.open(self._target, format=self._format, options=self._options, **kwargs)
        except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as err:
            reason = _reason(err, self.timeout[0] if self.timeout else None)
            if self.network:
                raise StreamError(f"cannot open stream {self.display_path}: {reason}") from None
            raise UnreadableInputError(f"cannot open video {self.display_path}: {reason}") from None

    def _video_stream(self, container):
        if not container.streams.video:
            container.close()
            raise UnreadableInputError(f"no video stream in {self.display_path}")
        return container.streams.video[0]

    @staticmethod
    def _rate(stream) -> float | None:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return float(rate) if rate else None

    def _open_file(self):
        av = self._av
        container = self._container()
        try:
            stream = self._video_stream(container)
            packets, first = [], None  # the first 16 packets' timestamps tell whether the rate is constant
            try:
                for packet in container.demux(stream):
                    if packet.size:
                        packets.append(packet.pts)
                    if first is None:
                        try:
                            frames = stream.decode(packet)
                        except av.FFmpegError:
                            continue
                        first = frames[0] if frames else None
                    if first is not None and len(packets) >= 16:
                        break
            except av.FFmpegError as err:
                if first is None:
                    raise UnreadableInputError(f"cannot decode {self.display_path}: {_reason(err)}") from None
            if first is None:
                raise UnreadableInputError(f"no decodable frames in {self.display_path}")
            rgb = self._to_rgb(first, stream)
            self._cfr = _cfr_rate(stream, packets)
            total = int(stream.frames) if stream.frames and stream.frames > 0 else None
            fps = self._rate(stream)
        finally:
            container.close()
        start = self.selection.start
        if total is None:
            # no frame count in the container (FFV1/MKV, some AVI): count the packets, demuxing only
            # (a second or so for an hour of video), so that progress, prompt and range checks
            # know the length up front
            total = self._count_packets(10**8) or None
        if total is not None and start >= total:
            raise UsageError(past_end_message(start, total))
        return rgb.shape[1], rgb.shape[0], fps, total

    def _count_packets(self, limit: int) -> int:
        """Video packets in the file, counting at most `limit` (demuxing only, no decoding)."""
        container = self._container()
        n = 0
        try:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size:
                    n += 1
                    if n >= limit:
                        break
        except self._av.FFmpegError:
            pass
        finally:
            container.close()
        return n

    def _open_live(self):
        container = self._container()
        stream = self._video_stream(container)
        stream.thread_type = "SLICE"  # no frame-thread delay: a frame comes out as soon as its packet is in
        # index 0 is the first decoded frame; the rate comes from FFmpeg's probing, confirmed by the data
        indexer = _Indexer(stream.time_base, stream.guessed_rate or stream.average_rate, None, confirmed=False)
        self._gen = self._decode(container, stream, indexer)
        try:
            self._first = next(self._gen)
        except StopIteration:
            self._gen = None
            what = StreamError if self.network else UnreadableInputError
            raise what(f"no decodable frames in {self.display_path}") from None
        self._stream, self._indexer = stream, indexer
        rgb = self._to_rgb(self._first[2], stream)
        self._rgb_cache = (self._first[2], rgb)
        return rgb.shape[1], rgb.shape[0], self._rate(stream), None

    # -- decoding --------------------------------------------------------------------------------
    def _decode(self, container, stream, indexer: _Indexer):
        """Every decoded frame as (index, seconds, av.VideoFrame) in presentation order. A packet that
        does not decode is skipped (its frame reported missing); a read error ends the stream after
        the frames still inside the decoder."""
        av = self._av
        packets = container.demux(stream)
        try:
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except (av.FFmpegError, OSError) as err:
                    yield from self._drain(stream, indexer)
                    raise self._read_error(err, indexer.last) from None
                try:
                    frames = stream.decode(packet)
                except av.FFmpegError:
                    if packet.size:
                        indexer.failed(packet.pts)
                    continue
                for frame in frames:
                    yield self._place(frame, indexer)
            self._report(indexer.finish())
        finally:
            container.close()

    def _drain(self, stream, indexer):
        try:
            frames = stream.decode(None)
        except self._av.FFmpegError:
            frames = []
        for frame in frames:
            yield self._place(frame, indexer)

    def _place(self, frame, indexer: _Indexer):
        index, seconds, missing = indexer.place(frame.pts)
        if missing:
            self._report(missing)
        return index, seconds, frame

    def _read_error(self, err: BaseException, last: int) -> Exception:
        reason = _reason(err, self.timeout[1] if self.network and self.timeout else None)
        if self.live:
            if last < 0:
                return StreamError(f"stream {self.display_path} failed before its first frame: {reason}")
            return StreamError(f"stream {self.display_path} dropped after frame {last}: {reason}")
        return UnreadableInputError(f"cannot read {self.display_path} after frame {last}: {reason}")

    def _report(self, missing: range) -> None:
        sel = self.selection
        lo = max(missing.start, sel.start)
        hi = missing.stop if sel.end is None else min(missing.stop, sel.end)
        if hi <= lo:
            return
        self.missing += hi - lo
        what = f"frame {lo}" if hi - lo == 1 else f"frames {lo}-{hi - 1}"
        if len(self.notices) < MAX_NOTICES:
            msg = f"{what} of {self.display_path} could not be decoded: skipped"
        elif len(self.notices) == MAX_NOTICES:
            msg = f"more frames of {self.display_path} could not be decoded: counted, no longer reported"
        else:
            return
        self.notices.append(msg)
        if self._notice is not None:
            self._notice(msg)

    def _to_rgb(self, frame, stream) -> np.ndarray:
        if self._rgb_cache is not None and self._rgb_cache[0] is frame:
            return self._rgb_cache[1]
        # rgb24 conversion handles every pixel format (10-bit, alpha, gray, palette) via swscale
        return orient_frame(frame.to_ndarray(format="rgb24"), _display_matrix(frame, stream))

    def __iter__(self) -> Iterator[Frame]:
        if self.live:
            if self._gen is None:
                raise UsageError(f"{self.display_path} is a live source: it can be read only once")
            gen, stream, indexer = self._gen, self._stream, self._indexer
            items = itertools.chain([self._first], gen)
            self._gen = self._first = None
        else:
            container = self._container()
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame + slice threads; output order is unchanged
            start_time = stream.start_time if stream.start_time is not None else None
            indexer = _Indexer(stream.time_base, self._cfr, start_time)
            self.missing, self.notices = 0, []
            gen = items = self._decode(container, stream, indexer)
        selector = _Selector(self.selection, self.info.fps)
        try:
            for index, seconds, frame in items:
                decision = selector.decide(index, seconds)
                if decision == _SKIP:
                    continue
                if decision == _STOP:
                    break
                yield Frame(index, seconds, self._to_rgb(frame, stream), f"{index:05d}")
                if selector.done:
                    break
        finally:
            self._rgb_cache = None
            gen.close()
        if not selector.reached and self.selection.start > 0:
            raise UsageError(past_end_message(self.selection.start, indexer.last + 1))

    def interrupt(self) -> None:
        if isinstance(self._target, _StdinReader):
            self._target.stop()

    def close(self) -> None:
        gen, self._gen, self._first = self._gen, None, None
        if gen is not None:
            try:
                gen.close()  # closes the live container (unless an iteration is running it)
            except ValueError:
                pass  # the generator is executing in another thread; it closes the container itself
        if self._cleanup and os.path.exists(self._cleanup):
            os.unlink(self._cleanup)
        self._cleanup = None


# ---------------------------------------------------------------------------------------------
# Video via decord (optional)
# ---------------------------------------------------------------------------------------------


@dataclass
class _Probe:
    format: str
    pix_fmt: str | None
    frames: int | None
    matrix: np.ndarray | None
    fps: float | None
    pixels: int  # coded width * height


def _probe_file(path: str, display: str) -> _Probe:
    """Container facts PyAV reads quickly: format, pixel format, frame count, first frame's rotation."""
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise UnreadableInputError(f"cannot open video {display}: {_reason(err)}") from None
    try:
        if not container.streams.video:
            raise UnreadableInputError(f"no video stream in {display}")
        stream = container.streams.video[0]
        matrix = None
        try:
            for frame in container.decode(stream):
                matrix = _display_matrix(frame, stream)
                break
        except av.FFmpegError:
            pass
        fmt = stream.codec_context.format
        rate = stream.average_rate or stream.guessed_rate
        ctx = stream.codec_context
        return _Probe(container.format.name, fmt.name if fmt else None,
                      int(stream.frames) if stream.frames and stream.frames > 0 else None, matrix,
                      float(rate) if rate else None, ctx.width * ctx.height)  # fmt: skip
    finally:
        container.close()


def _presentation_pts(path: str) -> Iterator[float | None]:
    """Frame timestamps (seconds from the stream start, as PyAV reports them) in presentation order,
    from demuxing alone: packet pts sorted through a 32-packet window (deeper than any B-frame
    reorder); yields None forever once packets run out."""
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError):
        while True:
            yield None
    try:
        stream = container.streams.video[0]
        tb, origin = stream.time_base, stream.start_time
        heap: list[int] = []
        try:
            for packet in container.demux(stream):
                if packet.size and packet.pts is not None:
                    heapq.heappush(heap, packet.pts)
                    if origin is None:
                        origin = packet.pts
                    if len(heap) > 32:
                        yield float((heapq.heappop(heap) - origin) * tb)
        except av.FFmpegError:
            pass
        while heap:
            yield float((heapq.heappop(heap) - origin) * tb)
    finally:
        container.close()
    while True:
        yield None


class DecordSource(FrameSource):
    """Local video file decoded with decord (RGB). Bit-exact with PyAV on 8-bit YUV/gray; 10-bit
    sources differ by a few levels (decord's own conversion). decord returns rotated videos with a
    wrong shape and scrambled pixels, so videos with rotation metadata are refused. Timestamps come
    from PyAV demuxing (exact, same as the PyAV reader); no missing-frame detection."""

    def __init__(self, path: str, start: int = 0, end: int | None = None, display_path: str | None = None,
                 name: str | None = None, cleanup: str | None = None, *, selection: Selection | None = None,
                 probe: _Probe | None = None, notice: Callable[[str], None] | None = None):  # fmt: skip
        import decord

        self._decord = decord
        self.path, self.display_path = path, display_path or path
        self._cleanup = cleanup
        self.selection = selection or Selection(start, end)
        self.missing = 0
        self._vr = None
        try:
            probe = probe or _probe_file(path, self.display_path)
            if not _is_identity(probe.matrix):
                raise UsageError(
                    f"the decord reader cannot apply the rotation metadata of {self.display_path}; use --reader pyav"
                )
            try:
                self._vr = decord.VideoReader(path, ctx=decord.cpu(0))
                total = len(self._vr)
                first = self._vr[0].asnumpy() if total else None
                fps = float(self._vr.get_avg_fps()) or probe.fps
            except Exception as err:  # decord raises its own DECORDError and RuntimeError
                raise UnreadableInputError(f"cannot open video {self.display_path}: {_short(err)}") from None
            if total == 0:
                raise UnreadableInputError(f"no decodable frames in {self.display_path}")
            if self.selection.start >= total:
                raise UsageError(past_end_message(self.selection.start, total))
        except BaseException:
            self.close()
            raise
        self.start = self.selection.start
        self.stop = total if self.selection.end is None else min(self.selection.end, total)
        self.info = SourceInfo(
            name=name or Path(self.display_path).stem, width=int(first.shape[1]), height=int(first.shape[0]),
            fps=fps, num_frames=self.selection.count(total, fps), kind="video", path=self.display_path,
            output_fps=self.selection.output_fps(fps), reader="decord",
        )  # fmt: skip

    def __iter__(self) -> Iterator[Frame]:
        decord = self._decord
        try:
            vr = self._vr if self._vr is not None else decord.VideoReader(self.path, ctx=decord.cpu(0))
            self._vr = None  # a later iteration opens its own reader
            if self.start:
                vr.seek_accurate(self.start)  # decodes from the keyframe before: exact
            else:
                vr.seek(0)
        except Exception as err:
            raise UnreadableInputError(f"cannot open video {self.display_path}: {_short(err)}") from None
        timestamps = _presentation_pts(self.path)
        for _ in range(self.start):
            next(timestamps)
        selector = _Selector(self.selection, self.info.fps)
        try:
            for index in range(self.start, self.stop):
                pts = next(timestamps)
                if pts is None:
                    pts = float(vr.get_frame_timestamp(index)[0])
                decision = selector.decide(index, pts)
                if decision == _STOP:
                    break
                try:
                    if decision == _SKIP:
                        vr.skip_frames(1)
                        continue
                    rgb = vr.next().asnumpy()
                except Exception as err:
                    raise UnreadableInputError(
                        f"cannot decode frame {index} of {self.display_path}: {_short(err)}"
                    ) from None
                yield Frame(index, pts, np.ascontiguousarray(rgb), f"{index:05d}")
                if selector.done:
                    break
        finally:
            timestamps.close()

    def close(self) -> None:
        self._vr = None
        if self._cleanup and os.path.exists(self._cleanup):
            os.unlink(self._cleanup)
        self._cleanup = None


# "auto" uses decord only where benchmarks/sources.py measured it faster than PyAV and it is exact:
# local MP4/MOV/AVI (a frame count in the container, which decord's length relies on), pixel
# formats it decodes bit-exactly like PyAV, no rotation, and small frames. Steady decode + RGB
# rate of decord over PyAV on 2 shared cores: 320x192 (samples/) 1.5x-6x in every run; 480x270
# 1.1x-3.7x in best-of-5 runs but 0.24x in a short one; 640x360 0.45x-1.3x; 1280x720 0.6x-1.05x
# (and decord opens slower). So decord up to 320x240 only.
_DECORD_EXACT_PIX_FMTS = frozenset({"yuv420p", "yuvj420p", "yuv444p", "yuvj444p", "gray"})
_DECORD_CONTAINERS = ("mov", "mp4", "avi")
_DECORD_MAX_PIXELS = 320 * 240


def _decord_installed() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def _auto_prefers_decord(probe: _Probe) -> bool:
    return (probe.frames is not None and probe.pix_fmt in _DECORD_EXACT_PIX_FMTS
            and probe.pixels <= _DECORD_MAX_PIXELS and _is_identity(probe.matrix)
            and any(name in probe.format.split(",") for name in _DECORD_CONTAINERS)
            and _decord_installed())  # fmt: skip


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
    """A single image or the images of a folder (sorted by file name); decoded one at a time.
    `every` and `max_frames` of the selection apply (images have no timestamps)."""

    def __init__(self, files: list[str], name: str, kind: str, display_path: str, start: int = 0,
                 end: int | None = None, display_names: list[str] | None = None,
                 cleanup: str | None = None, *, selection: Selection | None = None):  # fmt: skip
        self._cleanup = cleanup
        self.display_path = display_path
        sel = selection or Selection(start, end)
        names = display_names or [Path(f).stem for f in files]
        if sel.start >= len(files):
            self.close()
            raise UsageError(past_end_message(sel.start, len(files), "image folder" if kind == "folder" else "image"))
        selected = list(range(len(files)))[sel.start:sel.end:sel.every][:sel.max_frames]
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
# stdin
# ---------------------------------------------------------------------------------------------


_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")
_ISO_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pdin", b"uuid", b"moof", b"styp", b"sidx"}
_SNIFF_LIMIT = 1 << 20  # bytes of MP4 boxes read before giving up and spooling


def _looks_like_image(head: bytes) -> bool:
    if head.startswith(_IMAGE_MAGIC):
        return True
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _jpeg_end(b: bytes) -> int | None:
    """End offset of the JPEG at the start of b (None: need more bytes; -1: malformed), walking the
    marker segments (an EXIF thumbnail inside APP1 is skipped by its length) and the entropy-coded
    data (where 0xFF is always stuffed or a restart marker)."""
    i = 2
    while True:
        if i + 2 > len(b):
            return None
        if b[i] != 0xFF:
            return -1
        m = b[i + 1]
        if m == 0xFF:
            i += 1
        elif m == 0xD9:
            return i + 2
        elif m == 0x01 or 0xD0 <= m <= 0xD7:
            i += 2
        else:
            if i + 4 > len(b):
                return None
            i += 2 + int.from_bytes(b[i + 2:i + 4], "big")
            if m == 0xDA:  # start of scan: entropy-coded data up to the next real marker
                while True:
                    k = b.find(b"\xff", i)
                    if k < 0 or k + 1 >= len(b):
                        return None
                    if b[k + 1] == 0 or 0xD0 <= b[k + 1] <= 0xD7 or b[k + 1] == 0xFF:
                        i = k + 1
                        continue
                    i = k
                    break


def _png_end(b: bytes) -> int | None:
    """End offset of the PNG at the start of b (after its IEND chunk), None: need more bytes."""
    i = 8
    while i + 8 <= len(b):
        length = int.from_bytes(b[i:i + 4], "big")
        if b[i + 4:i + 8] == b"IEND":
            return i + 12 + length if i + 12 + length <= len(b) else None
        i += 12 + length
    return None


def _image_stream_decision(stream, head: bytes) -> tuple[bytes, str]:
    """A JPEG or PNG on stdin: one image ("image"), or the first of a stream of them (MJPEG,
    image2pipe output: "stream", decoded frame by frame). Reads the first image and a few bytes after."""
    jpeg = head.startswith(b"\xff\xd8\xff")
    end = None
    while True:
        if end is None:
            end = _jpeg_end(head) if jpeg else _png_end(head)
        if end is not None and (end < 0 or len(head) >= end + 4):
            break
        chunk = _read_some(stream, 1 << 16)
        if not chunk:
            return head, "image"
        head += chunk
    if end > 0 and head[end:].startswith(b"\xff\xd8\xff" if jpeg else b"\x89PNG\r\n\x1a\n"[:4]):
        return head, "stream"
    return head, "image"


def _read_some(stream, n: int) -> bytes:
    """Up to n bytes, returning as soon as some are available (one read of a pipe)."""
    read1 = getattr(stream, "read1", None)
    return read1(n) if read1 is not None else stream.read(n)


def _iso_decision(head: bytes) -> str | None:
    """For an ISO-BMFF (MP4/MOV) head: "stream" when the index (moov/moof) precedes the media data,
    "spool" when mdat comes first, None when more bytes are needed."""
    pos = 0
    while pos + 8 <= len(head):
        size = int.from_bytes(head[pos:pos + 4], "big")
        kind = head[pos + 4:pos + 8]
        if kind in (b"moov", b"moof"):
            return "stream"
        if kind == b"mdat" or kind not in _ISO_BOXES:
            return "spool"
        if size == 1:
            if pos + 16 > len(head):
                return None
            size = int.from_bytes(head[pos + 8:pos + 16], "big")
        if size < 8:
            return "spool"  # box runs to the end of the file, or malformed
        pos += size
    return None


def _sniff_stdin(stream, source_format: str | None = None) -> tuple[bytes, str]:
    """Read just enough of stdin to decide how to read it: (head, "image" | "spool" | "stream").
    With an explicit source_format only an MP4/MOV index at the end makes it spool."""
    head = b""
    while len(head) < 16:
        chunk = _read_some(stream, 16 - len(head))
        if not chunk:
            break
        head += chunk
    if source_format is None and _looks_like_image(head):
        if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")):
            return _image_stream_decision(stream, head)
        return head, "image"
    if head[4:8] not in _ISO_BOXES:
        return head, "stream"
    while True:
        decision = _iso_decision(head)
        if decision is not None:
            return head, decision
        if len(head) >= _SNIFF_LIMIT:
            return head, "spool"
        chunk = _read_some(stream, 1 << 16)
        if not chunk:
            return head, "spool"
        head += chunk


class _StdinReader:
    """A non-seekable file object for PyAV: the sniffed head, then stdin, one pipe read at a time
    (so a frame is decoded as soon as its bytes have arrived, not when a 32 KiB buffer is full).

    The decoding thread waits for input in select() on the unbuffered pipe, never inside a locked
    buffered read: `stop()` (a stopped run) then ends the stream within 0.1 s, and an exit while a
    producer is silent neither waits for it nor aborts on the buffer's lock at interpreter shutdown
    (seen: Ctrl-C on `producer | segcli vis -` hung 5 s, then died of SIGABRT)."""

    def __init__(self, head: bytes, stream):
        self._head, self._stream = head, stream
        self._stopped = threading.Event()
        self._fd = stream.fileno() if isinstance(stream, io.FileIO) else None

    def stop(self) -> None:
        self._stopped.set()

    def read(self, n: int = -1) -> bytes:
        if self._head:
            n = len(self._head) if n < 0 else n
            out, self._head = self._head[:n], self._head[n:]
            return out
        while self._fd is not None and not self._stopped.is_set():
            if select.select([self._fd], [], [], 0.1)[0]:
                break
        if self._stopped.is_set():
            return b""
        return _read_some(self._stream, n if n > 0 else 1 << 16)


def _spool(head: bytes, stream) -> str:
    """Copy stdin (the sniffed head, then the rest) to a temp file."""
    fd, tmp = tempfile.mkstemp(prefix="segcli-stdin-")
    with os.fdopen(fd, "wb") as out:
        out.write(head)
        shutil.copyfileobj(stream, out, length=1 << 20)
    return tmp


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def is_url(path: str) -> bool:
    return bool(_URL.match(path))


def _stream_name(url: str) -> str:
    try:
        stem = Path(urlsplit(url).path).stem
    except ValueError:
        stem = ""
    return stem or "stream"


def _is_device(p: Path) -> bool:
    try:
        return stat.S_ISCHR(p.stat().st_mode)
    except OSError:
        return False


def _check_format(name: str | None) -> None:
    if name is None:
        return
    import av

    try:
        av.ContainerFormat(name)
    except ValueError:
        raise UsageError(f"unknown source format {name!r} (ffmpeg -formats lists them)") from None


def _open_source(
    path: str | os.PathLike,
    reader: str = "pyav",
    start: int = 0,
    end: int | None = None,
    stdin: BinaryIO | None = None,
    *,
    source_format: str | None = None,
    source_options: dict[str, str] | None = None,
    timeout: float | tuple[float, float] | None = DEFAULT_TIMEOUT,
    every: int = 1,
    fps: float | None = None,
    max_frames: int | None = None,
    duration: float | None = None,
    notice: Callable[[str], None] | None = None,
) -> FrameSource:
    """Open a video file, a URL or device, an image, a folder of images, or "-" (stdin) as a lazy
    frame source.

    start / end select source frames [start, end) (end None = to the last frame); every keeps one
    source frame in `every`; fps keeps at most `fps` frames per second of source time; duration
    stops after that many seconds of source time (from the first selected frame); max_frames stops
    after that many yielded frames. source_format / source_options go to av.open(format=, options=)
    (demuxer, protocol and device options, values as strings). timeout bounds opening a
    network/device source and each read from it: seconds for both, an (open, read) pair (default
    5 s to open, 15 s of silence mid-stream: enough for a live HLS playlist to refresh), or None to
    wait forever. notice(msg) hears about source frames that are missing or undecodable.
    stdin has no timeout (a pipe may be slow on purpose).

    Raises InputNotFoundError (missing path), UnreadableInputError (undecodable, zero frames,
    folder without images), StreamError (a network/device source unreachable, timed out, or dropped
    mid-way; the latter from the iterator) or UsageError (bad range or option, start past the end,
    unknown reader, decord not installed or not applicable).
    """
    if reader not in READERS:
        raise UsageError(f"unknown reader {reader!r}: use pyav, decord or auto")
    if start < 0 or (end is not None and end <= start):
        raise UsageError(f"invalid frame range: start={start}, end={end}")
    if not isinstance(every, numbers.Integral) or every < 1:
        raise UsageError(f"--every must be a whole number >= 1, got {every!r}")
    if fps is not None and not fps > 0:
        raise UsageError(f"--fps must be > 0, got {fps!r}")
    if fps is not None and every > 1:
        raise UsageError("use either --every or --fps, not both")
    if max_frames is not None and (not isinstance(max_frames, numbers.Integral) or max_frames < 1):
        raise UsageError(f"--max-frames must be a whole number >= 1, got {max_frames!r}")
    if duration is not None and not duration > 0:
        raise UsageError(f"--duration must be > 0 seconds, got {duration!r}")
    timeouts = None if timeout is None else (timeout, timeout) if not isinstance(timeout, tuple) else timeout
    if timeouts is not None and not (len(timeouts) == 2 and all(t is not None and t > 0 for t in timeouts)):
        raise UsageError(f"timeout must be > 0 seconds, got {timeout!r}")
    if reader == "decord" and not _decord_installed():
        raise UsageError("reader 'decord' is not installed (pip install decord); use --reader pyav")
    if reader == "decord" and (source_format or source_options):
        raise UsageError("--source-format/--source-option need the pyav reader")
    _check_format(source_format)
    options = {str(k): str(v) for k, v in (source_options or {}).items()}
    selection = Selection(start, end, every, fps, max_frames, duration)
    common = dict(selection=selection, source_format=source_format, source_options=options, notice=notice)

    path_str = os.fspath(path)
    if path_str.lower().startswith("file://"):
        path_str = unquote(urlsplit(path_str).path)
    if path_str == STDIN:
        # the unbuffered pipe: a buffered reader would keep bytes select() cannot see (_StdinReader);
        # a stdin replaced by an in-memory stream (an embedding program, CliRunner) has no raw file
        raw = stdin if stdin is not None else getattr(sys.stdin.buffer, "raw", sys.stdin.buffer)
        head, how = _sniff_stdin(raw, source_format)
        if not head:
            raise UnreadableInputError("stdin is empty")
        if how == "image":
            tmp = _spool(head, raw)
            return ImageListSource([tmp], "stdin", "image", "stdin", display_names=["stdin"], cleanup=tmp,
                                   selection=selection)  # fmt: skip
        if how == "spool" or reader == "decord":
            tmp = _spool(head, raw)
            if reader == "decord":
                return DecordSource(tmp, display_path="stdin", name="stdin", cleanup=tmp, selection=selection)
            return PyAVSource(tmp, display_path="stdin", name="stdin", cleanup=tmp, **common)
        if source_format is None and head.startswith((b"\xff\xd8\xff", b"\x89PNG")):
            # a stream of images; FFmpeg's probing misses progressive JPEGs, so name the demuxer
            common["source_format"] = "jpeg_pipe" if head.startswith(b"\xff") else "png_pipe"
        return PyAVSource(_StdinReader(head, raw), display_path="stdin", name="stdin", live=True, **common)

    if is_url(path_str):
        if reader == "decord":
            raise UsageError("the decord reader reads local files only; use --reader pyav for streams")
        shown = _mask_url(path_str)
        return PyAVSource(path_str, display_path=shown, name=_stream_name(path_str), live=True, network=True,
                          timeout=timeouts, **common)  # fmt: skip

    p = Path(path_str)
    device = _is_device(p) or (source_format is not None and not p.exists())
    if device:
        if reader == "decord":
            raise UsageError("the decord reader reads local files only; use --reader pyav for devices")
        if source_format is None and sys.platform.startswith("linux"):
            common["source_format"] = "v4l2"
        name = p.name if _is_device(p) else (source_format or "device")
        return PyAVSource(path_str, display_path=path_str, name=name, live=True, network=True,
                          timeout=timeouts, **common)  # fmt: skip
    if not p.exists():
        if path_str.startswith("/dev/"):
            raise InputNotFoundError(f"no such device: {path_str}")
        raise InputNotFoundError(f"no such file: {path_str}")
    if p.is_dir():
        files = list_images(p)
        if not files:
            raise UnreadableInputError(f"no images in folder {path_str}")
        if fps is not None or duration is not None:
            raise UsageError("--fps and --duration need a video: image folders have no timestamps (use --every)")
        return ImageListSource([str(f) for f in files], p.resolve().name, "folder", path_str, selection=selection)
    if p.suffix.lower() in IMAGE_EXTENSIONS and source_format is None:
        return ImageListSource([path_str], p.stem, "image", path_str, selection=selection)
    if reader == "auto" and not (source_format or options):
        probe = _probe_file(path_str, path_str)
        if _auto_prefers_decord(probe):
            return DecordSource(path_str, selection=selection, probe=probe, notice=notice)
    if reader == "decord":
        return DecordSource(path_str, selection=selection, notice=notice)
    return PyAVSource(path_str, **common)


def _short(err: BaseException) -> str:
    """One line of an exception message."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def open_source(path: str | os.PathLike, reader: str = "pyav", start: int = 0, end: int | None = None,
                stdin: BinaryIO | None = None, **options) -> FrameSource:
    source = _open_source(path, reader, start, end, stdin, **options)
    source.info.start = start
    return source


open_source.__doc__ = _open_source.__doc__
