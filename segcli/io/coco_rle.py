"""``coco-rle``: COCO instance results JSON, one object per segment and frame (streamed).

    [{"image_id": 139, "id": 1, "category_id": 3, "score": 0.91,
      "segmentation": {"size": [h, w], "counts": "..."}}, ...]

``image_id`` (``ids.ImageIds``): the id the dataset JSON gives the image's file name when one
is given (``WriterOptions.dataset``, e.g. the ground truth ``instances_val2017.json``);
otherwise, for images, the number of a numeric file stem (``000000000139.jpg`` -> 139, which
is COCO's own id) or else the image's position in the run; for video frames the source frame
number (``FrameResult.index``). ``COCO.loadRes`` refuses results whose image ids are not the
ground truth's, so give the dataset JSON whenever file names are not COCO's.

``id`` is the track id (``COCO.loadRes`` renumbers ``id``; the file keeps the track id),
``category_id`` follows the CategoryMap. Objects are written frame by frame, one per line.

No ``bbox`` on purpose: when a result has one, ``COCO.loadRes`` takes the *box* area as the
instance area (``area = w * h``), which changes the small/medium/large split of mask AP
(detectron2 pops ``bbox`` before segm evaluation for this reason). Without it, ``loadRes``
computes ``area`` and ``bbox`` from the RLE (``mask.area`` / ``mask.toBbox``).
"""

from __future__ import annotations

from segcli.io.base import Writer, dumps
from segcli.io.ids import ImageIds
from segcli.results import FrameResult


class CocoRleWriter(Writer):
    format_name = "coco-rle"
    default_name = "{name}.coco.json"
    stdout = "buffer"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sink = self.text_sink()
        self._count = 0
        self._image_ids = ImageIds(self.info, self.options.dataset, self.format_name)

    def _write(self, frame: FrameResult) -> None:
        image_id = self._image_ids(frame)
        for seg in frame.segments:
            record = {
                "image_id": image_id,
                "id": int(seg.id),
                "category_id": self.categories(seg.category),
                "score": float(seg.score),
                "segmentation": seg.rle,
            }
            self._sink.write(("," if self._count else "[") + "\n" + dumps(record))
            self._count += 1

    def _close(self) -> None:
        self._sink.write("\n]\n" if self._count else "[]\n")
        self._sink.commit()

    def _abort(self) -> None:
        self._sink.discard()
