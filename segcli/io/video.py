"""A small PyAV encoder shared by the video writers (and samples/make_samples.py).

Output is byte-for-byte deterministic for a given PyAV/FFmpeg build: the muxer runs with
``fflags=+bitexact`` (no random Matroska UIDs, no version tags) and frames get pts 0, 1, 2...
at a constant rate.
"""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

DEFAULT_FPS = 25.0


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
                 container_options: dict | None = None):
        options = {"fflags": "+bitexact", **(container_options or {})}
        self.container = av.open(str(path), mode="w", format=container_format, container_options=options)
        try:
            self.stream = self.container.add_stream(codec, rate=frame_rate(fps), options=codec_options or {})
            self.stream.width = width
            self.stream.height = height
            self.stream.pix_fmt = pix_fmt
        except BaseException:
            self.container.close()
            raise
        self._pts = 0

    def encode(self, array: np.ndarray, array_format: str) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=array_format)
        frame.pts = self._pts
        self._pts += 1
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
