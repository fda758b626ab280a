"""``davis``: DAVIS-2017 semi-supervised results, one indexed PNG per frame.

Layout ``<out>/<sequence>/<frame>.png`` (``00000.png`` ..., or the source image stems): the
writer's target is the sequence folder, filled in a hidden temp folder and moved into place
at close. PNGs are PIL mode "P" with the PASCAL VOC palette; pixel value = track id (1..255),
0 = background. Where masks overlap, the higher-scoring segment wins. Ids above 255 raise
OutputError (DAVIS cannot hold them: use ``panoptic`` or ``mask-video``).
"""

from __future__ import annotations

from segcli.errors import OutputError
from segcli.io.base import AtomicDir, Writer, check_unique_ids, frame_stem
from segcli.io.png import save_indexed_png
from segcli.io.rle import id_map
from segcli.results import FrameResult


class DavisWriter(Writer):
    format_name = "davis"
    default_name = "{name}"
    is_dir = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._dir = AtomicDir(self.target)

    def _write(self, frame: FrameResult) -> None:
        check_unique_ids(frame, self.format_name)
        top = max((s.id for s in frame.segments), default=0)
        if top > 255:
            raise OutputError(f"davis PNGs hold track ids 1..255, frame {frame.index} has id {top}; "
                              "use -f panoptic or -f mask-video")
        save_indexed_png(self._dir.path() / f"{frame_stem(frame)}.png", id_map(frame, 255))

    def _close(self) -> None:
        self._dir.commit()

    def _abort(self) -> None:
        self._dir.discard()
