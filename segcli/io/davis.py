"""``davis``: DAVIS-2017 results, one indexed PNG per frame.

Layout ``<out>/<sequence>/<frame>.png``: frames are named by their source frame number
(``00005.png`` for frame 5, with ``--start 5`` the first file) or by the source image stems;
the writer's target is the sequence folder, filled in a hidden temp folder and moved into
place at close. PNGs are PIL mode "P" with the PASCAL VOC palette; 0 = background. Where masks
overlap, the higher-scoring segment wins. Two inputs with the same stem are refused
(UsageError): one PNG would overwrite the other.

Pixel value = DAVIS object index (``ids.DavisIndexer``):

- ``vos``: the object ids the user gave (``--object N``), as given;
- vis / vps / images: compact indices 1..K in order of first appearance (tracks that appear
  on the same frame: by track id), the same on every frame. The DAVIS evaluators expect small
  object numbers (the unsupervised benchmark refuses indices above 20); track ids (query
  slots such as 27..29) are not that. The summary writer records index -> track id
  (``davis_index`` of each track).
- ``WriterOptions.davis_max_objects`` keeps the first N objects and leaves the rest out with a
  notice; without it more than 255 objects raise OutputError (use ``panoptic`` or
  ``mask-video``).
"""

from __future__ import annotations

import numpy as np

from segcli.io.base import UniqueStems, Writer, check_unique_ids, frame_stem
from segcli.io.ids import DavisIndexer
from segcli.io.png import save_indexed_png
from segcli.io.rle import paint_ids
from segcli.results import FrameResult


def davis_indices(frame: FrameResult, indexer: DavisIndexer) -> np.ndarray:
    """The frame's HxW uint8 map of DAVIS object indices (see the module docstring)."""
    index_of = indexer.assign(frame)
    ids = frame.id_map()  # shared with the other writers
    kept = [s for s in frame.segments if int(s.id) in index_of]
    if len(kept) != len(frame.segments):  # objects left out must not hide the ones kept
        return paint_ids(frame.height, frame.width, kept, [index_of[int(s.id)] for s in kept])
    if not index_of:
        return np.zeros((frame.height, frame.width), np.uint8)
    if all(k == v for k, v in index_of.items()):
        return ids.astype(np.uint8)
    top = max(index_of)
    if top < 1 << 16:  # a lookup table over the ids (track ids are small)
        lut = np.zeros(top + 1, np.uint8)
        for track_id, index in index_of.items():
            lut[track_id] = index
        return lut[ids]
    present = np.array(sorted(index_of), dtype=np.int64)
    values = np.array([index_of[int(t)] for t in present], dtype=np.uint8)
    out = values[np.minimum(np.searchsorted(present, ids), len(present) - 1)]
    out[ids == 0] = 0
    return out

class DavisWriter(Writer):
    format_name = "davis"
    default_name = "{name}"
    is_dir = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._dir = self._atomic_dir(self.target)
        self._indexer = DavisIndexer(self.info.task, self.options.davis_max_objects, strict=True)
        self._stems = UniqueStems(self.format_name)

    def _write(self, frame: FrameResult) -> None:
        check_unique_ids(frame, self.format_name)
        stem = frame_stem(frame)
        self._stems.add(stem)
        save_indexed_png(self._dir.path() / f"{stem}.png", davis_indices(frame, self._indexer))

    def _close(self) -> None:
        dropped = self._indexer.dropped
        if dropped:
            ids = ", ".join(str(t) for t in sorted(dropped)[:10]) + (" ..." if len(dropped) > 10 else "")
            self.options.say(f"davis: {len(dropped)} objects beyond the first {self._indexer.limit} were left out "
                             f"(track ids {ids})")
        self._dir.commit()

    def _abort(self) -> None:
        self._dir.discard()
