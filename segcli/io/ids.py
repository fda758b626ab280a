"""Ids the writers derive from frames: COCO image ids and DAVIS object indices.

Both are computed from the frames alone, deterministically, so that every writer that needs
them (coco-rle and panoptic; davis and summary) gets the same values without sharing state.
"""

from __future__ import annotations

from segcli.errors import OutputError, UsageError
from segcli.io.base import frame_stem
from segcli.io.dataset import Dataset
from segcli.results import FrameResult, VideoInfo

DAVIS_MAX_INDEX = 255  # indexed PNG
IDENTITY_TASKS = ("vos", "prompt")  # the user's own object numbers: DAVIS indices = ids as given


def numeric_stem(stem: str) -> int | None:
    """``"000000000139"`` -> 139; None unless the stem is all ASCII digits."""
    return int(stem) if stem.isascii() and stem.isdigit() else None


class ImageIds:
    """COCO ``image_id`` of each frame, the rule shared by coco-rle and image panoptic:

    1. with a dataset JSON that lists images: the id of the image with that file name (tried as
       ``<video>/<stem>`` then ``<stem>``, with or without extension); a frame it does not list
       raises UsageError (results with unknown image ids are refused by ``COCO.loadRes`` and
       panopticapi);
    2. otherwise, for images (``segcli image``): the number of a numeric file stem
       (``000000000139.jpg`` -> 139, COCO's naming), else the image's position in the run;
    3. for video frames: the source frame index (``FrameResult.index``).

    Two frames that would get the same id raise UsageError.
    """

    def __init__(self, info: VideoInfo, dataset: Dataset | None, fmt: str):
        self.info = info
        self.dataset = dataset if dataset is not None and dataset.images else None
        self.format = fmt
        self._used: dict[int, object] = {}

    def __call__(self, frame: FrameResult) -> int:
        stem = frame_stem(frame)
        key: object = stem if self.info.is_image else ("frame", frame.index)
        if self.dataset is not None:
            candidates = [stem] if self.info.is_image else [f"{self.info.name}/{stem}", stem]
            image_id = None
            for name in candidates:
                image_id = self.dataset.image_id_for(name)
                if image_id is not None:
                    break
            if image_id is None:
                raise UsageError(f"{self.format}: image {candidates[0]!r} is not in the dataset JSON "
                                 f"{self.dataset.path or ''}".rstrip())
        elif self.info.is_image:
            number = numeric_stem(stem)
            image_id = frame.index if number is None else number
        else:
            image_id = int(frame.index)
        seen = self._used.get(image_id)
        if seen is not None and seen != key:
            raise UsageError(f"{self.format}: image id {image_id} would be given to two images ({seen!r} and "
                             f"{key!r}); give the dataset JSON that lists their ids")
        self._used[image_id] = key
        return image_id


class DavisIndexer:
    """DAVIS object index (PNG palette index) of each track.

    - ``vos`` (and prompts): the user's object ids, as given (1..255).
    - other tasks (vis, vps...: track ids are query slots such as 27, 28, 29): compact indices
      1..K in order of first appearance, tracks that first appear on the same frame by track id.
    - ``max_objects``: tracks that would get an index above it are left out (``dropped``);
      without it, an index above 255 raises OutputError when ``strict`` (the davis writer) and
      is recorded as left out otherwise (the summary).

    ``assign(frame)`` must see the frames in order; ``index_of`` maps track id -> index.
    """

    def __init__(self, task: str, max_objects: int | None = None, strict: bool = True):
        if max_objects is not None and not 1 <= int(max_objects) <= DAVIS_MAX_INDEX:
            raise UsageError(f"davis holds 1..{DAVIS_MAX_INDEX} objects, got a limit of {max_objects}")
        self.identity = task in IDENTITY_TASKS
        self.max_objects = None if max_objects is None else int(max_objects)
        self.limit = DAVIS_MAX_INDEX if max_objects is None else int(max_objects)
        self.strict = strict
        self.index_of: dict[int, int] = {}
        self.dropped: dict[int, int] = {}  # track id -> frame index where it first appeared
        self._next = 1

    def assign(self, frame: FrameResult) -> dict[int, int]:
        """Give the tracks new on this frame their index; returns track id -> index for the
        frame's kept segments."""
        new = sorted({int(s.id) for s in frame.segments} - self.index_of.keys() - self.dropped.keys())
        for track_id in new:
            index = track_id if self.identity else self._next
            if index > self.limit:
                if self.strict and self.max_objects is None:
                    what = f"object id {track_id}" if self.identity else f"a {index}th object (track id {track_id})"
                    raise OutputError(f"davis PNGs hold objects 1..{DAVIS_MAX_INDEX}: frame {frame.index} has {what}; "
                                      "limit them (davis_max_objects / --davis-max-objects) or use -f panoptic "
                                      "or -f mask-video")
                self.dropped[track_id] = int(frame.index)
                continue
            self.index_of[track_id] = index
            if not self.identity:
                self._next += 1
        return {int(s.id): self.index_of[int(s.id)] for s in frame.segments if int(s.id) in self.index_of}
