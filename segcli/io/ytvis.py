"""``ytvis``: YouTube-VIS results JSON (the file Codalab and ``YTVOS.loadRes`` read).

A JSON list with one entry per predicted track::

    [{"video_id": 1, "category_id": 3, "score": 0.87,
      "segmentations": [null, {"size": [h, w], "counts": "..."}, ...]}]

- ``segmentations`` has one item per frame written, in frame (write) order: the track's RLE
  where it is present, ``null`` where it is absent.
- A track whose class changes over the video gives one entry per (track id, category), each
  with only the frames of that category (the official per (query, class) result layout).
- ``score`` is the track score: the mean of its per-frame scores over the frames where it is
  present. ``category_id`` follows the CategoryMap (1-based by default, i.e. YTVIS-19 ids when
  the vocabulary is the YTVIS class list in order); ``video_id`` comes from WriterOptions.
- Entries are sorted by track id, then category id. Masks are held as RLE until close.
"""

from __future__ import annotations

from segcli.io.base import TrackScores, Writer, dumps
from segcli.io.rle import encode_mask
from segcli.results import FrameResult


class YtvisWriter(Writer):
    format_name = "ytvis"
    default_name = "{name}.ytvis.json"
    stdout = "buffer"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sink = self.text_sink()
        self._scores = TrackScores()
        self._rles: dict[tuple[int, int], list[tuple[int, dict]]] = {}

    def _write(self, frame: FrameResult) -> None:
        position = self.frames_written
        for seg in frame.segments:
            key = (int(seg.id), self.categories(seg.category))
            if key in self._rles and self._rles[key][-1][0] == position:
                raise ValueError(f"ytvis: frame {frame.index} lists track {seg.id} twice with one category")
            self._scores.add(key, position, seg)
            self._rles.setdefault(key, []).append((position, encode_mask(seg.mask)))

    def _close(self) -> None:
        n = self.frames_written
        video_id = self.options.video_id
        self._sink.write("[")
        for i, key in enumerate(sorted(self._rles)):
            segmentations: list[dict | None] = [None] * n
            for position, rle in self._rles[key]:
                segmentations[position] = rle
            entry = {
                "video_id": video_id,
                "category_id": key[1],
                "score": TrackScores.mean(self._scores.stats[key]),
                "segmentations": segmentations,
            }
            self._sink.write(("," if i else "") + "\n" + dumps(entry))
        self._sink.write("\n]\n")
        self._sink.commit()
        self._rles.clear()

    def _abort(self) -> None:
        self._sink.discard()
        self._rles.clear()
