"""Splitting a video into clips (spec §7.1, §7.2).

The official MinVIS detector decodes a video in short clips whose boundaries come from
`video_split`. The clip length changes the temporal positional code, so the boundaries must
match exactly for parity. Three ways to get them:

* `clip_ranges(total, ...)`: the official split when the frame count is known;
* `OnlineClipSplitter(..., exact=True)`: the same boundaries while frames stream in, holding
  back at most about (clip_size + 1) * clip_size frames (it cannot know the tail until the end);
* `OnlineClipSplitter(..., exact=False)` / `iter_fixed_clips`: plain fixed-size clips, the
  last one shorter, for live input (a documented deviation from the official split).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")


def video_split(total: int, size: int, overlap: int = 0) -> list[int]:
    """Exclusive end index of every clip, exactly as the official `video_split` (§7.2).

    Clips have `size` frames, except that when the last clip would overshoot by `diff`
    frames, the last `diff` clips are each shortened by one frame (or, when there are fewer
    clips than that, only the last clip absorbs the whole difference).
    """
    if total <= 0:
        raise ValueError(f"video_split needs at least one frame, got {total}")
    if size <= overlap:
        raise ValueError(f"clip size ({size}) must be larger than the overlap ({overlap})")
    total -= overlap
    step = size - overlap
    n = -(-total // step)  # ceil
    ends = [(i + 1) * step for i in range(n)]
    diff = ends[-1] - total
    if diff < n:
        # shorten the last `diff` clips by one frame each: the last end moves by diff, the one
        # before by diff - 1, ... (so every clip boundary shifts consistently)
        for i in range(diff):
            ends[n - 1 - i] -= diff - i
    else:
        ends[-1] -= diff  # official "Warning" branch: the last clip alone becomes short
    return [end + overlap for end in ends]


def clip_size_for(total: int, clip_size: int, clip_size_small: int, small_clip_thr: int) -> int:
    """Clip length rule of §7.1: long videos use clip_size, short ones clip_size_small."""
    return clip_size if total > small_clip_thr else clip_size_small


def clip_ranges(
    total: int,
    clip_size: int,
    clip_size_small: int | None = None,
    small_clip_thr: int = 0,
    whole_clip_thr: int = 0,
    overlap: int = 0,
) -> list[tuple[int, int]]:
    """[start, end) of every clip of a `total`-frame video under the official MinVIS rule.

    A video of at most `whole_clip_thr` frames is one clip. With overlap > 0 consecutive clips
    share `overlap` frames (the official code cannot merge those; callers must drop the
    repeated frames themselves).
    """
    if total <= 0:
        raise ValueError(f"a video needs at least one frame, got {total}")
    if total <= whole_clip_thr:
        return [(0, total)]
    small = clip_size if clip_size_small is None else clip_size_small
    size = clip_size_for(total, clip_size, small, small_clip_thr)
    ranges = []
    start = 0
    for end in video_split(total, size, overlap):
        ranges.append((start, end))
        start = end - overlap
    return ranges


def clip_ranges_from_config(total: int, detector_cfg: dict[str, Any]) -> list[tuple[int, int]]:
    """clip_ranges with the keys of a golden bundle's `config.json["detector"]`."""
    return clip_ranges(
        total,
        clip_size=int(detector_cfg["clip_size"]),
        clip_size_small=int(detector_cfg.get("clip_size_small", detector_cfg["clip_size"])),
        small_clip_thr=int(detector_cfg.get("small_clip_thr", 0)),
        whole_clip_thr=int(detector_cfg.get("whole_clip_thr", 0)),
        overlap=int(detector_cfg.get("overlap", 0)),
    )


@dataclass
class Clip(Generic[T]):
    start: int  # index of the first item, counted from the first pushed item
    end: int  # exclusive
    items: list[T] = field(default_factory=list)

    def __len__(self) -> int:
        return self.end - self.start


class OnlineClipSplitter(Generic[T]):
    """Groups items (frames, preprocessed tensors...) into clips as they arrive.

    push(item) returns the clips that became final (usually zero or one), finish() the rest.

    exact=True reproduces `clip_ranges` for the final frame count without knowing it in
    advance: a clip is released only once enough frames have been seen that the end-of-video
    shortening of `video_split` (which touches at most the last size-1 clips) cannot reach it,
    i.e. once more than (j + size) * size frames are known for clip j. The size rule itself
    (clip_size vs clip_size_small, whole_clip_thr) is settled once the count passes the
    thresholds. Memory: at most about max(small_clip_thr, whole_clip_thr, (size + 1) * size)
    items are held. Only overlap = 0 is supported.

    exact=False emits fixed clips of `clip_size` items as soon as they are full; the last clip
    is shorter. This is a deviation from the official split for the last clips of a video.
    """

    def __init__(
        self,
        clip_size: int,
        clip_size_small: int | None = None,
        small_clip_thr: int = 0,
        whole_clip_thr: int = 0,
        exact: bool = True,
    ):
        if clip_size <= 0:
            raise ValueError(f"clip_size must be positive, got {clip_size}")
        self.clip_size = clip_size
        self.clip_size_small = clip_size if clip_size_small is None else clip_size_small
        self.small_clip_thr = small_clip_thr
        self.whole_clip_thr = whole_clip_thr
        self.exact = exact
        self._buffer: list[T] = []  # items not yet released, the first one has index self._next_start
        self._next_start = 0
        self._seen = 0
        self._finished = False

    @property
    def pending(self) -> int:
        """Number of items held back."""
        return len(self._buffer)

    def push(self, item: T) -> list[Clip[T]]:
        if self._finished:
            raise RuntimeError("push() after finish()")
        self._buffer.append(item)
        self._seen += 1
        if not self.exact:
            if len(self._buffer) == self.clip_size:
                return [self._release(self.clip_size)]
            return []
        # exact mode: the clip length is only known once the count passed both thresholds
        if self._seen <= max(self.whole_clip_thr, self.small_clip_thr):
            return []
        size = self.clip_size  # total > small_clip_thr from now on
        released = []
        # clip j = [j*size, (j+1)*size) is final once seen > (j + size) * size
        while True:
            j = self._next_start // size
            if self._seen > (j + size) * size:
                released.append(self._release(size))
            else:
                break
        return released

    def finish(self) -> list[Clip[T]]:
        """Release the remaining items as the final clips."""
        if self._finished:
            return []
        self._finished = True
        if not self._buffer:
            return []
        if not self.exact:
            return [self._release(len(self._buffer))]
        ranges = clip_ranges(
            self._seen, self.clip_size, self.clip_size_small, self.small_clip_thr, self.whole_clip_thr
        )
        clips = []
        for start, end in ranges:
            if start < self._next_start:
                continue  # already released (released clips always match the exact split)
            assert start == self._next_start, "released clips drifted from the official split"
            clips.append(self._release(end - start))
        return clips

    def _release(self, n: int) -> Clip[T]:
        items, self._buffer = self._buffer[:n], self._buffer[n:]
        clip = Clip(self._next_start, self._next_start + n, items)
        self._next_start += n
        return clip


def iter_clips(
    items: Iterable[T],
    clip_size: int,
    clip_size_small: int | None = None,
    small_clip_thr: int = 0,
    whole_clip_thr: int = 0,
    exact: bool = True,
) -> Iterator[Clip[T]]:
    """Generator form of OnlineClipSplitter over any iterable (e.g. a FrameSource)."""
    splitter: OnlineClipSplitter[T] = OnlineClipSplitter(
        clip_size, clip_size_small, small_clip_thr, whole_clip_thr, exact
    )
    for item in items:
        yield from splitter.push(item)
    yield from splitter.finish()


def iter_fixed_clips(items: Iterable[T], clip_size: int) -> Iterator[Clip[T]]:
    """Fixed-size clips for live input of unknown length: clip_size items each, the last shorter."""
    return iter_clips(items, clip_size, exact=False)
