"""``coco-rle``: COCO instance results JSON, one object per segment and frame (streamed).

    [{"image_id": 0, "id": 1, "category_id": 3, "score": 0.91,
      "segmentation": {"size": [h, w], "counts": "..."}}, ...]

``image_id`` is the frame index, ``id`` the track id (note: ``COCO.loadRes`` renumbers
``id``; the file keeps the track id), ``category_id`` follows the CategoryMap. Objects are
written frame by frame, one per line.

No ``bbox`` on purpose: when a result has one, ``COCO.loadRes`` takes the *box* area as the
instance area (``area = w * h``), which changes the small/medium/large split of mask AP
(detectron2 pops ``bbox`` before segm evaluation for this reason). Without it, ``loadRes``
computes ``area`` and ``bbox`` from the RLE (``mask.area`` / ``mask.toBbox``).
"""

from __future__ import annotations

from segcli.io.base import Writer, dumps
from segcli.io.rle import encode_mask
from segcli.results import FrameResult


class CocoRleWriter(Writer):
    format_name = "coco-rle"
    default_name = "{name}.coco.json"
    stdout = "buffer"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sink = self.text_sink()
        self._count = 0

    def _write(self, frame: FrameResult) -> None:
        for seg in frame.segments:
            record = {
                "image_id": int(frame.index),
                "id": int(seg.id),
                "category_id": self.categories(seg.category),
                "score": float(seg.score),
                "segmentation": encode_mask(seg.mask),
            }
            self._sink.write(("," if self._count else "[") + "\n" + dumps(record))
            self._count += 1

    def _close(self) -> None:
        self._sink.write("\n]\n" if self._count else "[]\n")
        self._sink.commit()

    def _abort(self) -> None:
        self._sink.discard()
