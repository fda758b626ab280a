"""``summary``: the tracks table, as JSON (``<name>.summary.json``) and as text.

JSON::

    {"video": "street", "task": "vps", "width": 320, "height": 192, "fps": 25.0, "frames": 60,
     "tracks": [{"id": 1, "label": "car", "category_id": 3, "score": 0.91, "first_frame": 0,
                 "last_frame": 59, "frames": 60, "mean_area": 812.5, "davis_index": 1}]}

- ``score``: mean of the track's per-frame scores over the frames where it is present
  (listed in FrameResult.segments); ``frames``: how many frames that is.
- ``label``/``category_id``: the class the track has on most of its frames (ties: the first
  class of the vocabulary).
- ``first_frame``/``last_frame``: source frame numbers (FrameResult.index); ``frames``: how
  many processed frames the track is on. Tracks are sorted by id.
- ``davis_index``: the object's index in davis PNGs (``ids.DavisIndexer``, computed from the
  same frames the same way: vos keeps the given ids, other tasks number objects 1..K by first
  appearance); null for an object davis leaves out (beyond ``davis_max_objects`` or 255).

Text: an aligned table for people. Where it goes: on stdout (``-o -``) the text table; ``-o
FILE`` gives the text table when FILE ends in ``.txt``, JSON otherwise; ``-o DIR`` writes both
``<name>.summary.json`` and ``<name>.summary.txt``.
"""

from __future__ import annotations

import json
from pathlib import Path

from segcli.io.base import TextSink, TrackScores, Writer, WriterOptions
from segcli.io.ids import DavisIndexer
from segcli.results import FrameResult, VideoInfo


def format_table(doc: dict) -> str:
    head = f"{doc['video']}: {doc['task']}, {doc['frames']} frames, {doc['width']}x{doc['height']}"
    tracks = doc["tracks"]
    if not tracks:
        return head + ", no tracks\n"
    rows = [("id", "label", "score", "first", "last", "frames")]
    for t in tracks:
        rows.append((str(t["id"]), t["label"] or "-", f"{t['score']:.3f}", str(t["first_frame"]),
                     str(t["last_frame"]), str(t["frames"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head + f", {len(tracks)} tracks"]
    for r in rows:
        cells = [c.ljust(widths[i]) if i == 1 else c.rjust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


class SummaryWriter(Writer):
    format_name = "summary"
    default_name = "{name}.summary.json"
    stdout = "buffer"

    def __init__(self, *args, text_path: Path | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.text_path = None if text_path is None else Path(text_path)
        self._tracks = TrackScores()
        self._davis = DavisIndexer(self.info.task, self.options.davis_max_objects, strict=False)
        self._sinks: list[tuple[TextSink, str]] = []
        if self.target is None:
            self._sinks.append((self.text_sink(), "text"))
        else:
            self._sinks.append((self.text_sink(self.target), "text" if self.target.suffix == ".txt" else "json"))
            if self.text_path is not None:
                self._sinks.append((self.text_sink(self.text_path), "text"))

    @classmethod
    def for_directory(cls, directory: Path, info: VideoInfo, options: WriterOptions | None = None):
        return cls(directory / f"{info.name}.summary.json", info, options,
                   text_path=directory / f"{info.name}.summary.txt")

    @property
    def targets(self) -> list[Path]:
        return super().targets + ([self.text_path] if self.text_path is not None else [])

    run_stats: dict | None = None  # set by the job before close: latencies, missing frames (see segcli.api)

    def _write(self, frame: FrameResult) -> None:
        self._davis.assign(frame)
        for seg in frame.segments:
            self._tracks.add(int(seg.id), int(frame.index), seg)

    def document(self) -> dict:
        tracks = []
        for track_id in sorted(self._tracks.stats):
            st = self._tracks.stats[track_id]
            category = TrackScores.majority_category(st)
            label = st["labels"][category]
            tracks.append({
                "id": track_id,
                "label": label,
                "category_id": self.categories(category),
                "score": TrackScores.mean(st),
                "first_frame": st["first"],
                "last_frame": st["last"],
                "frames": st["frames"],
                "mean_area": st["area"] / st["frames"],
                "davis_index": self._davis.index_of.get(track_id),
            })
        return {"video": self.info.name, "task": self.info.task, "width": self.info.width,
                "height": self.info.height, "fps": self.info.fps, "frames": self.frames_written,
                "tracks": tracks, **({"run": self.run_stats} if self.run_stats else {})}

    def _close(self) -> None:
        doc = self.document()
        as_json = json.dumps(doc, indent=2, allow_nan=False) + "\n"
        for sink, kind in self._sinks:
            sink.write(as_json if kind == "json" else format_table(doc))
        for sink, _ in self._sinks:
            sink.commit()

    def _abort(self) -> None:
        for sink, _ in self._sinks:
            sink.discard()
