"""``ytvis``: YouTube-VIS results JSON (the file Codalab and ``YTVOS.loadRes`` read).

A JSON list with one entry per predicted track::

    [{"video_id": 1, "category_id": 3, "score": 0.87,
      "segmentations": [null, {"size": [h, w], "counts": "..."}, ...]}]

- ``segmentations[k]`` is frame ``k`` of the source video: the track's RLE where it is
  present, ``null`` where it is absent or the frame was not processed (before ``--start``,
  skipped). The list has one item per frame up to the last one processed (last index + 1),
  or the video's length when a dataset JSON gives it.
- With a dataset JSON (``WriterOptions.dataset``, e.g. YouTube-VIS ``valid.json``) that lists
  the video's ``file_names``, item ``k`` is the frame whose file stem is the ``k``-th file
  name's (``0b6f9105fc/00005.jpg`` -> frame ``00005``, which is source frame 5 of a video
  file and file ``00005.jpg`` of a frame folder); frames it does not list are left out with a
  notice. This is what the evaluator compares item by item.
- ``video_id``: ``WriterOptions.video_id`` when given, else the dataset JSON's id of the video
  (its ``file_names`` folder or its name = the input's name), else 1. Results of several
  videos, each with its own id, concatenate into one submission file.
- A track whose class changes over the video gives one entry per (track id, category), each
  with only the frames of that category (the official per (query, class) result layout).
- ``score`` is the track score: the mean of its per-frame scores over the frames where it is
  present. ``category_id`` follows the CategoryMap (1-based by default, i.e. YTVIS-19 ids when
  the vocabulary is the YTVIS class list in order).
- Entries are sorted by track id, then category id. Masks are held as RLE until close.
"""

from __future__ import annotations

from segcli.errors import UsageError
from segcli.io.base import TrackScores, Writer, dumps, frame_stem
from segcli.results import FrameResult


def resolve_video_id(name: str, video_id: int | str | None, dataset) -> int | str:
    """The YouTube-VIS id of video ``name``: ``video_id`` when given, else the dataset JSON's,
    else 1. Raises UsageError when a dataset JSON with videos does not list it."""
    if video_id is not None:
        if isinstance(video_id, str) and video_id.strip().isdigit():
            return int(video_id)
        return video_id
    if dataset is not None and dataset.videos:
        found = dataset.video_id_for(name)
        if found is None:
            where = f" {dataset.path}" if dataset.path else ""
            raise UsageError(f"video {name!r} is not in the dataset JSON{where} ({len(dataset.videos)} videos, "
                             "matched by the folder of their file_names or their name); give its video id")
        return found
    return 1


class YtvisWriter(Writer):
    format_name = "ytvis"
    default_name = "{name}.ytvis.json"
    stdout = "buffer"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        dataset = self.options.dataset
        self.video_id = resolve_video_id(self.info.name, self.options.video_id, dataset)
        self._dataset_video = None
        self._length: int | None = None
        if dataset is not None and isinstance(self.video_id, int) and self.video_id in dataset.videos:
            self._length = dataset.video_length(self.video_id)
            if dataset.video_frames(self.video_id):
                self._dataset_video = self.video_id
        self._sink = self.text_sink()
        self._scores = TrackScores()
        self._rles: dict[tuple[int, int], list[tuple[int, dict]]] = {}
        self._positions: set[int] = set()
        self._unlisted = 0

    def _position(self, frame: FrameResult) -> int | None:
        if self._dataset_video is not None:
            return self.options.dataset.frame_position(self._dataset_video, frame_stem(frame))
        return int(frame.index)

    def _write(self, frame: FrameResult) -> None:
        position = self._position(frame)
        if position is None:
            self._unlisted += 1
            return
        if self._length is not None and position >= self._length:
            raise UsageError(f"ytvis: frame {frame.index} is past the {self._length} frames the dataset JSON "
                             f"gives video {self.video_id}")
        if position in self._positions:
            raise ValueError(f"ytvis: frame {frame.index} is video frame {position} a second time")
        self._positions.add(position)
        for seg in frame.segments:
            key = (int(seg.id), self.categories(seg.category))
            if key in self._rles and self._rles[key][-1][0] == position:
                raise ValueError(f"ytvis: frame {frame.index} lists track {seg.id} twice with one category")
            self._scores.add(key, position, seg)
            self._rles.setdefault(key, []).append((position, seg.rle))

    def _close(self) -> None:
        if self._unlisted:
            self.options.say(f"ytvis: {self._unlisted} frames are not among the dataset JSON's file_names "
                             f"of video {self.video_id} and were left out")
        n = self._length if self._length is not None else max(self._positions, default=-1) + 1
        self._sink.write("[")
        for i, key in enumerate(sorted(self._rles)):
            segmentations: list[dict | None] = [None] * n
            for position, rle in self._rles[key]:
                segmentations[position] = rle
            entry = {
                "video_id": self.video_id,
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
