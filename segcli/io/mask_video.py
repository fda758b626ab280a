"""``mask-video``: a lossless id-map video, FFV1 in Matroska (``<name>.ids.mkv``).

Each frame is the HxW map of track ids (0 = background, overlaps: the higher score wins).
Pixel format ``gray`` (8-bit) while every id is <= 255, ``gray16le`` otherwise. The format is
chosen at the first frame (a first frame with an id above 255 starts as ``gray16le``); if a
later frame brings an id above 255 into a ``gray`` file, what was written so far is
re-encoded losslessly to ``gray16le`` (streamed from the temp file, no frame kept in memory).
Ids above 65535 raise OutputError. Decoding with PyAV (``frame.to_ndarray()``) or
``ffmpeg -i x.ids.mkv -f rawvideo -pix_fmt gray16le`` gives back the exact id maps.

Timestamps are the source's (``FrameResult.pts``, Matroska keeps milliseconds), so frame
``k`` of the file is shown at the time jsonl gives it (with ``--start 5`` the first frame is
at 5/fps, not 0); frames without a pts (image folders) are placed at ``index / fps``.
"""

from __future__ import annotations

import av
import numpy as np

from segcli.errors import OutputError
from segcli.io.base import AtomicFile, Writer
from segcli.io.rle import id_map
from segcli.io.video import SOURCE_TIME_BASE, VideoEncoder, frame_time
from segcli.results import FrameResult

_FFV1 = {"level": "3", "slicecrc": "1", "g": "1"}


class MaskVideoWriter(Writer):
    format_name = "mask-video"
    default_name = "{name}.ids.mkv"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._file: AtomicFile | None = None
        self._enc: VideoEncoder | None = None
        self._pix_fmt: str | None = None  # decided at the first frame

    def _open(self, pix_fmt: str) -> tuple[AtomicFile, VideoEncoder]:
        file = self._atomic_file(self.target)
        enc = VideoEncoder(file.temp_path(), "matroska", "ffv1", self.info.width, self.info.height, pix_fmt,
                           self.info.fps, codec_options=_FFV1, time_base=SOURCE_TIME_BASE)
        return file, enc

    def _upgrade_to_16bit(self) -> None:
        old_file, old_enc = self._file, self._enc
        old_enc.close()
        try:
            new_file, new_enc = self._open("gray16le")
            self._file, self._enc, self._pix_fmt = new_file, new_enc, "gray16le"
            with av.open(str(old_file.temp_path())) as src:
                for decoded in src.decode(video=0):
                    new_enc.encode(decoded.to_ndarray().astype(np.uint16), "gray16le",
                                   pts=float(decoded.pts * decoded.time_base))
        finally:
            old_file.discard()

    def _write(self, frame: FrameResult) -> None:
        if (frame.width, frame.height) != (self.info.width, self.info.height):
            raise ValueError(f"mask-video: frame {frame.index} is {frame.width}x{frame.height}, "
                             f"the video is {self.info.width}x{self.info.height}")
        try:
            ids = id_map(frame, 0xFFFF)
        except ValueError as exc:
            raise OutputError(f"mask-video: {exc}") from exc
        if self._enc is None:
            self._pix_fmt = "gray" if ids.dtype == np.uint8 else "gray16le"
            self._file, self._enc = self._open(self._pix_fmt)
        elif ids.dtype != np.uint8 and self._pix_fmt == "gray":
            self._upgrade_to_16bit()
        pts = frame_time(frame, self.info.fps)
        if self._pix_fmt == "gray":
            self._enc.encode(ids, "gray", pts=pts)
        else:
            self._enc.encode(ids.astype(np.uint16), "gray16le", pts=pts)

    def _close(self) -> None:
        if self._enc is None:  # no frame: still a valid, empty video file
            self._pix_fmt = "gray"
            self._file, self._enc = self._open(self._pix_fmt)
        self._enc.close()
        self._file.commit()

    def _abort(self) -> None:
        if self._enc is not None:
            self._enc.abort()
        if self._file is not None:
            self._file.discard()
