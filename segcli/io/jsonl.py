"""``jsonl``: one JSON object per line and per frame, streamed (the default format, on stdout).

    {"frame": 0, "pts": 0.0, "width": 320, "height": 192,
     "objects": [{"id": 1, "category_id": 3, "label": "car", "score": 0.91, "isthing": true,
                  "bbox": [x, y, w, h], "area": 1234, "rle": {"size": [h, w], "counts": "..."}}]}

``frame`` is the source frame number (FrameResult.index: with ``--start 5`` the first line
is frame 5) and ``pts`` its source time in seconds, rounded to microseconds (null for images),
the same numbers the other formats use. ``category_id`` follows the writer's CategoryMap
(1-based by default, 0 when class-agnostic); ``bbox`` is the tight integer box of the mask.
Every processed frame gets a line, also frames without objects.
"""

from __future__ import annotations

from segcli.io.base import Writer, dumps
from segcli.results import FrameResult, Segment


def segment_record(seg: Segment, category_id: int) -> dict:
    record = {
        "id": int(seg.id),
        "category_id": category_id,
        "label": seg.label,
        "score": float(seg.score),
        "isthing": bool(seg.isthing),
        "bbox": seg.bbox_xywh,
        "area": seg.area,
        "rle": seg.rle,
    }
    if seg.class_score is not None:
        record["class_score"] = float(seg.class_score)  # what --score-threshold filters
    return record


class JsonlWriter(Writer):
    format_name = "jsonl"
    default_name = "{name}.jsonl"
    stdout = "stream"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sink = self.text_sink()

    def _write(self, frame: FrameResult) -> None:
        record = {
            "frame": int(frame.index),
            "pts": None if frame.pts is None else round(float(frame.pts), 6),
            "width": int(frame.width),
            "height": int(frame.height),
            "objects": [segment_record(s, self.categories(s.category)) for s in frame.segments],
        }
        self._sink.write(dumps(record) + "\n")

    def _close(self) -> None:
        self._sink.commit()

    def _abort(self) -> None:
        self._sink.discard()
