"""A small PyAV encoder shared by the video writers (and samples/make_samples.py).

Output is byte-for-byte deterministic for a given PyAV/FFmpeg build: the muxer runs with
``fflags=+bitexact`` (no random Matroska UIDs, no version tags). Frames get pts 0, 1, 2... at
a constant rate, or, with ``time_base=SOURCE_TIME_BASE``, the time in seconds passed to
``encode(..., pts=t)`` (the writers pass the source frame's pts, see ``frame_time``).
"""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

DEFAULT_FPS = 25.0
SOURCE_TIME_BASE = Fraction(1, 90000)  # fine enough for any source time (MPEG's clock)
_MIN_STEP = 90  # 1 ms in SOURCE_TIME_BASE: Matroska stores milliseconds, timestamps must increase


def frame_time(frame, fps: float | None) -> float:
    """Presentation time of a FrameResult in the writers' videos: its source pts, or
    ``index / fps`` when it has none (image folders)."""
    if frame.pts is not None:
        return max(0.0, float(frame.pts))
    return float(frame.index / frame_rate(fps))


def frame_rate(fps: float | None) -> Fraction:
    """A rational frame rate for ``fps`` (29.97 -> 30000/1001); DEFAULT_FPS when unknown."""
    if not fps or fps <= 0 or fps != fps:
        fps = DEFAULT_FPS
    return Fraction(fps).limit_denominator(1001)


class VideoEncoder:
    """Encode numpy frames into one video stream.

    ``container_format``: "matroska", "mp4"...; ``pix_fmt``: the stream's pixel format; frames
    passed to ``encode`` are converted from ``array_format`` (e.g. "rgb24", "gray") by PyAV.
    """

    def __init__(self, path: str | os.PathLike, container_format: str, codec: str, width: int, height: int,
                 pix_fmt: str, fps: float | None, codec_options: dict | None = None,
                 container_options: dict | None = None, time_base: Fraction | None = None):
        options = {"fflags": "+bitexact", **(container_options or {})}
        self.container = av.open(str(path), mode="w", format=container_format, container_options=options)
        try:
            self.stream = self.container.add_stream(codec, rate=frame_rate(fps), options=codec_options or {})
            self.stream.width = width
            self.stream.height = height
            self.stream.pix_fmt = pix_fmt
            if time_base is not None:
                self.stream.codec_context.time_base = time_base
        except BaseException:
            self.container.close()
            raise
        self._time_base = time_base
        self._rate = frame_rate(fps)
        self._pts = 0  # next pts (constant rate), or the earliest allowed one (source times)
        self._count = 0

    def encode(self, array: np.ndarray, array_format: str, pts: float | None = None) -> None:
        """Encode one frame; ``pts`` (seconds) needs ``time_base`` (timestamps are kept strictly
        increasing, at least 1 ms apart); without it frames are 1/fps apart."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=array_format)
        if self._time_base is not None:
            seconds = Fraction(self._count) / self._rate if pts is None else Fraction(pts).limit_denominator(10**9)
            ticks = round(seconds / self._time_base)
            if self._count and ticks < self._pts:
                ticks = self._pts  # not later than the previous frame + 1 ms: nudged
            frame.pts = ticks
            frame.time_base = self._time_base
            self._pts = ticks + _MIN_STEP
        else:
            frame.pts = self._pts
            self._pts += 1
        self._count += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away
            pass
