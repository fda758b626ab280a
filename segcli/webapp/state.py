"""What `segcli app` holds between requests: the sources it may serve, their frames, the prompted
objects, the runs (vos tracking, vis/vps/vss) and their per-frame results, and exports.

No HTTP here (segcli.webapp.server maps requests onto `AppState`). Every source is a file or
folder the app was started with, or an upload saved under the app's own temp folder; clients
name sources, frames, runs and exports by id, never by path.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import cv2
import numpy as np

from ..errors import InputNotFoundError, PromptError, SegcliError, UnreadableInputError, UsageError
from ..pipeline.reader import IMAGE_EXTENSIONS, open_source
from ..results import FrameResult, Segment, VideoInfo, paint_order
from .interactive import DEFAULT_CACHE_MB, FeatureCache, ObjectMask, PromptSegmenter

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".gif",
                              ".wmv", ".flv", ".3gp"})
RUN_TASKS = ("vos", "vis", "vps", "vss")
RUN_MODES = ("online", "exact", "auto")
MAX_UPLOADS = 32
# CLI defaults per task (segcli vis / vps / vos), so the shown command gives the same results
TASK_DEFAULTS = {"vis": (0.3, 100), "vps": (0.0, 100), "vss": (0.0, 100), "vos": (0.0, 255)}


class ConflictError(SegcliError):
    """The request is fine but the app is busy with something it would disturb (HTTP 409)."""

    exit_code = 2


class NotFound(SegcliError):
    """No such source, frame, run or export (HTTP 404)."""

    exit_code = 3


class Cancelled(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------


class _LRU:
    """A small bytes-bounded LRU (frames as RGB arrays or JPEG bytes)."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self._items: OrderedDict = OrderedDict()
        self._used = 0

    @staticmethod
    def _size(v) -> int:
        return v.nbytes if isinstance(v, np.ndarray) else len(v)

    def get(self, key):
        v = self._items.get(key)
        if v is not None:
            self._items.move_to_end(key)
        return v

    def put(self, key, value) -> None:
        if key in self._items:
            self._used -= self._size(self._items.pop(key))
        self._items[key] = value
        self._used += self._size(value)
        while self._used > self.budget and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._used -= self._size(old)


class FrameStore:
    """Random access to the frames of one source: a forward-decoding reader (re-opened when a
    request goes back past what it has decoded) and bounded caches of RGB frames and JPEGs."""

    def __init__(self, path: str, num_frames: int | None, rgb_mb: float = 128, jpeg_mb: float = 64):
        self.path = path
        self.num_frames = num_frames
        self._rgb = _LRU(int(rgb_mb * 2**20))
        self._jpeg = _LRU(int(jpeg_mb * 2**20))
        self._lock = threading.Lock()
        self._source = None
        self._iter = None
        self._next = 0  # index the reader yields next

    def _check(self, k: int) -> None:
        if k < 0 or (self.num_frames is not None and k >= self.num_frames):
            last = f"0..{self.num_frames - 1}" if self.num_frames else "none"
            raise NotFound(f"frame {k} is not in this source (frames {last})")

    def rgb(self, k: int) -> np.ndarray:
        self._check(k)
        with self._lock:
            hit = self._rgb.get(k)
            if hit is not None:
                return hit
            if self._iter is None or k < self._next:
                self._reopen(k)
            while True:
                try:
                    frame = next(self._iter)
                except StopIteration:
                    self._iter = None
                    self.num_frames = self._next
                    raise NotFound(f"frame {k} is past the end of this source ({self._next} frames)") from None
                self._next = frame.index + 1
                self._rgb.put(frame.index, frame.rgb)
                if frame.index >= k:
                    return frame.rgb

    def _reopen(self, k: int) -> None:
        self.close()
        folder = Path(self.path).is_dir()
        # an image folder opens straight at file k; a video decodes forward from its start
        start = k if folder else 0
        self._source = open_source(self.path, start=start)
        self._iter = iter(self._source)
        self._next = start

    def jpeg(self, k: int, quality: int = 90) -> bytes:
        with self._lock:
            hit = self._jpeg.get(k)
        if hit is not None:
            return hit
        rgb = self.rgb(k)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise UnreadableInputError(f"cannot encode frame {k}")
        data = buf.tobytes()
        with self._lock:
            self._jpeg.put(k, data)
        return data

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
        self._source = None
        self._iter = None


# ---------------------------------------------------------------------------------------------
# Masks on the wire: an 8-bit index PNG (value = the segment's `index` in the JSON)
# ---------------------------------------------------------------------------------------------


def index_png(height: int, width: int, masks: Sequence[np.ndarray], values: Sequence[int]) -> bytes:
    out = np.zeros((height, width), dtype=np.uint8)
    for m, v in zip(masks, values):
        out[m] = v
    ok, buf = cv2.imencode(".png", out, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("cannot encode a mask PNG")
    return buf.tobytes()


@dataclass
class SegmentRecord:
    """A result segment kept compactly: its mask as COCO RLE."""

    id: int
    category: int
    label: str
    score: float
    isthing: bool
    rle: dict
    bbox: list[int]
    area: int

    def to_segment(self) -> Segment:
        from ..io.rle import decode_rle

        return Segment(self.id, self.category, self.label, self.score, decode_rle(self.rle).astype(bool),
                       self.isthing)


@dataclass
class FrameRecord:
    index: int
    pts: float | None
    name: str | None
    height: int
    width: int
    segments: list[SegmentRecord]
    png: bytes  # index map: value i+1 = segments[i] (painted in score order, as the writers do)

    @classmethod
    def from_result(cls, r: FrameResult) -> FrameRecord:
        segs = list(r.segments)[:255]
        position = {id(s): i for i, s in enumerate(segs)}
        order = paint_order(segs)
        png = index_png(r.height, r.width, [s.mask for s in order], [position[id(s)] + 1 for s in order])
        records = [SegmentRecord(int(s.id), int(s.category), s.label, float(s.score), bool(s.isthing), s.rle,
                                 s.bbox_xywh, s.area) for s in segs]
        return cls(r.index, r.pts, r.name, r.height, r.width, records, png)

    def to_result(self) -> FrameResult:
        return FrameResult(self.index, self.pts, self.height, self.width, [s.to_segment() for s in self.segments],
                           None, self.name)

    def summary(self) -> dict:
        return {"frame": self.index, "segments": [
            {"index": i + 1, "id": s.id, "label": s.label, "category": s.category, "score": round(s.score, 4),
             "isthing": s.isthing, "bbox": s.bbox, "area": s.area} for i, s in enumerate(self.segments)]}


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------


@dataclass
class PromptAction:
    obj_id: int
    frame: int
    point: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None


class PromptBook:
    """Every prompt in the order given (undo pops the last one); decoded masks per frame."""

    def __init__(self):
        self.actions: list[PromptAction] = []
        self.masks: dict[int, dict[int, ObjectMask]] = {}  # frame -> object id -> mask (decoded)
        self.version = 0

    def objects(self) -> list[int]:
        return sorted({a.obj_id for a in self.actions})

    def frames(self) -> list[int]:
        return sorted({a.frame for a in self.actions})

    def on_frame(self, frame: int, obj_id: int | None = None) -> dict[int, tuple[list, list]]:
        out: dict[int, tuple[list, list]] = {}
        for a in self.actions:
            if a.frame != frame or (obj_id is not None and a.obj_id != obj_id):
                continue
            points, boxes = out.setdefault(a.obj_id, ([], []))
            if a.point is not None:
                points.append(a.point)
            if a.box is not None:
                boxes.append(a.box)
        return out

    def groups(self, start: int = 0, end: int | None = None) -> list[tuple[int, int, list, list]]:
        """(object, frame, points, boxes) per (object, frame) in first-given order, within [start, end)."""
        order: list[tuple[int, int]] = []
        data: dict[tuple[int, int], tuple[list, list]] = {}
        for a in self.actions:
            if a.frame < start or (end is not None and a.frame >= end):
                continue
            key = (a.obj_id, a.frame)
            if key not in data:
                order.append(key)
                data[key] = ([], [])
            if a.point is not None:
                data[key][0].append(a.point)
            if a.box is not None:
                data[key][1].append(a.box)
        return [(o, f, *data[(o, f)]) for o, f in order]

    def describe(self) -> list[dict]:
        objs: dict[int, list] = {}
        for o, f, points, boxes in self.groups():
            objs.setdefault(o, []).append({"frame": f, "points": [list(p) for p in points],
                                           "boxes": [list(b) for b in boxes]})
        return [{"id": o, "prompts": objs[o]} for o in sorted(objs)]


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    id: str
    source_id: int
    task: str  # vos, vis, vps, vss, or image-<task> for single images
    start: int
    end: int | None
    mode: str
    command: list[str]
    labelled: bool
    classes: list[str]
    num_things: int
    category_ids: list[int] | None
    retrack_from: int | None = None
    note: str | None = None  # why the command's results would differ from these (None: it reproduces them)
    status: str = "running"  # running, done, error, cancelled
    error: str | None = None
    total: int | None = None
    pushed: int = 0
    frames: dict[int, FrameRecord] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    info: dict = field(default_factory=dict)  # name, width, height, fps, num_frames for VideoInfo
    cancel: threading.Event = field(default_factory=threading.Event)
    events: list[dict] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def emit(self, event: dict) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_events(self, after: int, timeout: float) -> list[dict]:
        """Events after the first `after` (blocks up to `timeout` seconds for new ones)."""
        with self.cond:
            if len(self.events) <= after and self.status == "running":
                self.cond.wait(timeout)
            return self.events[after:]

    def summary(self) -> dict:
        elapsed = self.seconds if self.status != "running" else time.time() - self.started
        return {"id": self.id, "source": self.source_id, "task": self.task, "status": self.status,
                "error": self.error, "start": self.start, "end": self.end, "mode": self.mode,
                "retrack_from": self.retrack_from, "total": self.total, "pushed": self.pushed,
                "frames_done": len(self.frames), "seconds": round(elapsed, 2), "notices": self.notices[-20:],
                "labelled": self.labelled, "command": shlex.join(self.command),
                "exact_command": self.note is None, "note": self.note}

    def tracks(self) -> list[dict]:
        """Per track id: label, mean score, first/last frame, frame count and spans of consecutive frames."""
        per: dict[int, dict] = {}
        for k in sorted(self.frames):
            for s in self.frames[k].segments:
                t = per.setdefault(s.id, {"id": s.id, "labels": Counter(), "scores": [], "frames": []})
                t["labels"][(s.label, s.category)] += 1
                t["scores"].append(s.score)
                t["frames"].append(k)
        out = []
        for tid in sorted(per):
            t = per[tid]
            (label, category), _ = t["labels"].most_common(1)[0]
            spans, frames = [], t["frames"]
            for k in frames:
                if spans and k == spans[-1][1] + 1:
                    spans[-1][1] = k
                else:
                    spans.append([k, k])
            out.append({"id": tid, "label": label, "category": category,
                        "score": round(float(np.mean(t["scores"])), 4), "first": frames[0], "last": frames[-1],
                        "frames": len(frames), "spans": spans})
        return out


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


@dataclass
class Source:
    id: int
    path: str  # server-side only
    shown: str  # how the command line names it
    name: str
    kind: str  # video, folder, image
    width: int
    height: int
    fps: float | None
    num_frames: int | None
    uploaded: bool
    frames: FrameStore
    prompter: PromptSegmenter
    prompts: PromptBook = field(default_factory=PromptBook)
    run: Run | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)

    def describe(self) -> dict:
        return {"id": self.id, "name": self.name, "kind": self.kind, "width": self.width, "height": self.height,
                "fps": self.fps, "num_frames": self.frames.num_frames, "uploaded": self.uploaded,
                "shown": self.shown}


def _kind(path: Path) -> str:
    if path.is_dir():
        return "folder"
    return "image" if path.suffix.lower() in IMAGE_EXTENSIONS else "video"


def expand_input(path: str | None) -> list[str]:
    """The files the app may serve for its INPUT argument: a video, an image, or a folder. A
    folder's images are one source (the frames of one video, as every segcli command reads a
    folder) and each of its videos is a source of its own."""
    if path is None:
        return []
    p = Path(path).expanduser()
    if not p.exists():
        raise InputNotFoundError(f"no such file or folder: {path}")
    if not p.is_dir():
        return [str(p)]
    from ..pipeline.reader import list_images

    videos = sorted(str(f) for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                    and f.suffix.lower() in VIDEO_EXTENSIONS)
    images = [str(p)] if list_images(p) else []
    if not images and not videos:
        raise UnreadableInputError(f"no images or videos in folder {path}")
    return images + videos


@dataclass
class AppConfig:
    weights: str
    input: str | None = None
    scale: tuple[int, int] | None = None  # --size
    size_arg: str | None = None
    device: str = "auto"
    precision: str | None = None
    cache_mb: float = DEFAULT_CACHE_MB
    max_upload_mb: float = 512.0
    vocab_args: list[str] = field(default_factory=list)  # as the command line gives the vocabulary
    labelled: bool = False  # the user named a vocabulary: objects get labels


class AppState:
    """Everything the server serves. `seg` is the loaded Segmenter (one model for every request)."""

    def __init__(self, seg, config: AppConfig):
        self.seg = seg
        self.config = config
        self.cache = FeatureCache(config.cache_mb)
        self.sources: dict[int, Source] = {}
        self.exports: dict[str, Path] = {}
        self.labelled = config.labelled
        self.vocab_args = list(config.vocab_args)
        self._lock = threading.RLock()
        self._next_id = 1
        self._tmp = Path(tempfile.mkdtemp(prefix="segcli-app-"))
        self._run_thread: threading.Thread | None = None
        self.current_run: Run | None = None
        self.uploads = 0
        for path in expand_input(config.input):
            self.add_source(path, shown=path)

    # ---- sources ---------------------------------------------------------------------------
    def add_source(self, path: str, shown: str, uploaded: bool = False) -> Source:
        src = open_source(path)
        try:
            info = src.info
        finally:
            src.close()
        kind = _kind(Path(path))
        pre = self.seg.cfg.preprocess
        scale = self.config.scale or (pre.image_scale if kind == "image" else pre.video_scale)
        with self._lock:
            sid = self._next_id
            self._next_id += 1
            source = Source(sid, path, shown, info.name, kind, info.width, info.height, info.fps, info.num_frames,
                            uploaded, FrameStore(path, info.num_frames), PromptSegmenter(self.seg, scale, self.cache))
            self.sources[sid] = source
        return source

    def source(self, sid: int) -> Source:
        s = self.sources.get(sid)
        if s is None:
            raise NotFound(f"no source {sid}")
        return s

    def begin_upload(self, filename: str) -> Path:
        """A fresh path under the app's temp folder for an upload named `filename` (its suffix must be
        an image's or a video's; the name is kept for output file names, made safe)."""
        base = Path(filename or "").name
        stem, suffix = Path(base).stem, Path(base).suffix.lower()
        if suffix not in IMAGE_EXTENSIONS and suffix not in VIDEO_EXTENSIONS:
            raise UsageError(f"upload {base!r}: expected an image ({', '.join(sorted(IMAGE_EXTENSIONS))}) or a "
                             f"video ({', '.join(sorted(VIDEO_EXTENSIONS))})")
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip(".") or "upload"
        with self._lock:
            if self.uploads >= MAX_UPLOADS:
                raise ConflictError(f"at most {MAX_UPLOADS} uploads per app session")
            self.uploads += 1
            folder = self._tmp / "uploads" / str(self.uploads)
        folder.mkdir(parents=True)
        return folder / f"{stem[:80]}{suffix}"

    def finish_upload(self, target: Path, size: int) -> Source:
        """Open an upload written at `target` as a new source (removed again when it is unreadable)."""
        try:
            if size == 0:
                raise UsageError(f"upload {target.name!r} is empty")
            return self.add_source(str(target), shown=target.name, uploaded=True)
        except BaseException:
            self.discard_upload(target)
            raise

    def discard_upload(self, target: Path) -> None:
        shutil.rmtree(target.parent, ignore_errors=True)

    # ---- prompts -----------------------------------------------------------------------------
    def _decode_frame(self, source: Source, frame: int, obj_ids: Sequence[int] | None = None) -> dict:
        """(Re)decode objects `obj_ids` (all when None) on `frame`; returns the timing."""
        book = source.prompts
        wanted = book.on_frame(frame)
        if obj_ids is not None:
            wanted = {o: v for o, v in wanted.items() if o in obj_ids}
        current = book.masks.setdefault(frame, {})
        for oid in list(current):
            if oid not in book.on_frame(frame):
                del current[oid]
        if not wanted:
            if not current:
                book.masks.pop(frame, None)
            return {"features_ms": 0.0, "decode_ms": 0.0, "cached": True}
        masks, timing = source.prompter.segment((source.id, frame), lambda: source.frames.rgb(frame), wanted,
                                                labelled=self.labelled, size=(source.width, source.height))
        for m in masks:
            current[m.obj_id] = m
        return timing.as_dict()

    def add_prompt(self, sid: int, frame: int, obj_id: int, point=None, box=None) -> dict:
        source = self.source(sid)
        if isinstance(obj_id, bool) or not isinstance(obj_id, int) or not 1 <= obj_id <= 255:
            raise PromptError(f"object id {obj_id!r}: must be an integer from 1 to 255")
        if (point is None) == (box is None):
            raise PromptError("a prompt is one point [x, y] or one box [x1, y1, x2, y2]")
        source.frames._check(frame)
        from ..pipeline.prompts import validate_boxes, validate_points

        if point is not None:
            point = tuple(float(v) for v in point)
            if len(point) != 2:
                raise PromptError("a point is [x, y]")
            validate_points([point], source.width, source.height)
        else:
            box = tuple(float(v) for v in box)
            if len(box) != 4:
                raise PromptError("a box is [x1, y1, x2, y2]")
            x1, y1, x2, y2 = box
            box = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
            validate_boxes([box], source.width, source.height)
        with source.lock:
            limit = self.seg.cfg.test.num_proposals
            ids = set(source.prompts.objects()) | {obj_id}
            if len(ids) > limit:
                raise PromptError(f"{len(ids)} objects: the model tracks at most {limit} objects in a video")
            action = PromptAction(obj_id, frame, point, box)
            source.prompts.actions.append(action)
            try:
                timing = self._decode_frame(source, frame, [obj_id])
            except BaseException:
                source.prompts.actions.pop()
                raise
            source.prompts.version += 1
            view = self.prompt_view(sid, frame)
        view["timing"] = timing
        return view

    def undo(self, sid: int) -> dict:
        source = self.source(sid)
        with source.lock:
            if not source.prompts.actions:
                raise PromptError("nothing to undo")
            action = source.prompts.actions.pop()
            self._decode_frame(source, action.frame, [action.obj_id])
            source.prompts.version += 1
            view = self.prompt_view(sid, action.frame)
        return view

    def clear(self, sid: int, obj_id: int | None = None) -> dict:
        source = self.source(sid)
        with source.lock:
            book = source.prompts
            frames = {a.frame for a in book.actions if obj_id is None or a.obj_id == obj_id}
            book.actions = [a for a in book.actions if obj_id is not None and a.obj_id != obj_id]
            for f in frames:
                self._decode_frame(source, f, [])
            book.version += 1
        return self.state(sid)

    def prompt_view(self, sid: int, frame: int) -> dict:
        """The prompted objects' masks on `frame` (decoding any that are stale)."""
        source = self.source(sid)
        with source.lock:
            book = source.prompts
            have = book.masks.get(frame, {})
            stale = [o for o in book.on_frame(frame) if o not in have]
            if stale:
                self._decode_frame(source, frame, stale)
            masks = book.masks.get(frame, {})
            segments = [{"index": m.obj_id, "id": m.obj_id, "label": m.label, "category": m.category,
                         "score": round(m.score, 4), "bbox": m.bbox_xywh, "area": m.area}
                        for _, m in sorted(masks.items())]
            prompts = book.on_frame(frame)
        return {"frame": frame, "version": book.version, "segments": segments,
                "prompts": {str(o): {"points": [list(p) for p in v[0]], "boxes": [list(b) for b in v[1]]}
                            for o, v in sorted(prompts.items())},
                "mask": f"/api/sources/{sid}/prompts/{frame}/mask.png?v={book.version}"}

    def prompt_png(self, sid: int, frame: int) -> bytes:
        source = self.source(sid)
        source.frames._check(frame)
        self.prompt_view(sid, frame)
        with source.lock:
            masks = source.prompts.masks.get(frame, {})
            items = sorted(masks.items())
        return index_png(source.height, source.width, [m.mask for _, m in items], [o for o, _ in items])

    def state(self, sid: int) -> dict:
        source = self.source(sid)
        with source.lock:
            book = source.prompts
            return {"source": source.describe(), "objects": book.describe(), "prompt_frames": book.frames(),
                    "version": book.version, "run": source.run.summary() if source.run else None,
                    "labelled": self.labelled}

    # ---- vocabulary --------------------------------------------------------------------------
    def set_vocabulary(self, text: str | None, stuff: str | None = None) -> dict:
        """Label objects with this vocabulary (its CLIP text embeddings computed once, then cached);
        an empty text turns labels off (class-agnostic objects, as `segcli vos` without --vocab)."""
        if self.busy():
            raise ConflictError("a run is in progress: change the vocabulary when it has finished")
        if not text or not text.strip():
            self.labelled = False
            self.vocab_args = []
        else:
            from ..vocab.parse import parse_vocab

            vocab = parse_vocab(text, stuff or None)
            use_vocabulary(self.seg, self.config.weights, vocab)
            self.labelled = True
            self.vocab_args = ["--vocab", text] + (["--stuff", stuff] if stuff else [])
        for source in self.sources.values():
            with source.lock:
                source.prompts.masks.clear()  # labels are recomputed when a frame is viewed
                source.prompts.version += 1
        return self.vocabulary()

    def vocabulary(self) -> dict:
        v = self.seg.vocabulary
        agnostic = bool(getattr(self.seg, "class_agnostic", False))
        return {"labelled": self.labelled, "classes": [] if agnostic else v.names,
                "num_things": 0 if agnostic else v.num_things, "args": shlex.join(self.vocab_args)}

    def _ensure_classes(self) -> None:
        """vis/vps need class embeddings: a model loaded class-agnostic gets the default vocabulary
        (the one `segcli vis` would use without --vocab)."""
        if getattr(self.seg, "class_agnostic", False):
            from ..api import planned_vocabulary

            use_vocabulary(self.seg, self.config.weights, planned_vocabulary(self.config.weights, None))

    # ---- runs -------------------------------------------------------------------------------
    def busy(self) -> bool:
        return self.current_run is not None and self.current_run.status == "running"

    def run(self, rid: str) -> Run:
        for s in self.sources.values():
            if s.run is not None and s.run.id == rid:
                return s.run
        if self.current_run is not None and self.current_run.id == rid:
            return self.current_run
        raise NotFound(f"no run {rid}")

    def start_run(self, sid: int, task: str, start: int = 0, end: int | None = None, mode: str = "online",
                  retrack_from: int | None = None) -> Run:
        """Start vos (from the prompted objects) or vis/vps/vss on a background thread; results
        arrive frame by frame in Run.frames and as events."""
        source = self.source(sid)
        if task not in RUN_TASKS:
            raise UsageError(f"unknown task {task!r}: choose {', '.join(RUN_TASKS)}")
        if mode not in RUN_MODES:
            raise UsageError(f"unknown mode {mode!r}: choose {', '.join(RUN_MODES)}")
        total = source.frames.num_frames
        if source.kind == "image":
            start, end, retrack_from = 0, None, None
        if retrack_from is not None:
            if task != "vos":
                raise UsageError("re-tracking goes with vos")
            prev = source.run
            if prev is None or prev.task != "vos" or prev.status != "done":
                raise UsageError("re-track needs a finished vos run to continue from")
            start = int(retrack_from)
            end = prev.end
        if start < 0 or (total is not None and start >= total):
            raise UsageError(f"start frame {start} is outside the video (0..{(total or 1) - 1})")
        if end is not None and (end <= start or (total is not None and end > total)):
            raise UsageError(f"end frame {end}: must be after the start frame {start} and at most {total}")
        with self._lock:
            if self.busy():
                raise ConflictError("a run is already in progress (cancel it first)")
            if task != "vos":
                self._ensure_classes()
            plan = self._plan(source, task, start, end, mode, retrack_from)
            run = plan["run"]
            self.current_run = run
            source.run = run
            thread = threading.Thread(target=self._execute, args=(source, run, plan), daemon=True,
                                      name=f"segcli-run-{run.id}")
            self._run_thread = thread
            thread.start()
        return run

    def _plan(self, source: Source, task: str, start: int, end: int | None, mode: str,
              retrack_from: int | None) -> dict:
        from ..pipeline.video import ObjectPrompt

        labelled = self.labelled if task == "vos" else True
        prompts: list[ObjectPrompt] = []
        carried: list[int] = []
        kept: dict[int, FrameRecord] = {}
        first = start  # the first frame of the range the results cover (a re-track continues a run)
        if task == "vos" or source.kind == "image":
            groups = source.prompts.groups(start, end)
            if task == "vos" and source.kind != "image":
                if not groups and retrack_from is None:
                    raise PromptError("nothing to track: click on an object first (left click: a point, drag: a box)")
                for o, f, points, boxes in groups:
                    prompts.append(ObjectPrompt(o, f, [tuple(p) for p in points], [tuple(b) for b in boxes]))
                if retrack_from is not None:
                    prev = source.run
                    first = prev.start
                    kept = {k: r for k, r in prev.frames.items() if k < start}
                    prompted_here = {o for o, f, _, _ in groups if f == start}
                    record = prev.frames.get(start)
                    for s in (record.segments if record else []):
                        if s.id not in prompted_here:
                            prompts.append(ObjectPrompt(s.id, start, mask=s.to_segment().mask))
                            carried.append(s.id)
                    if not prompts:
                        raise PromptError(f"nothing to re-track from frame {start}: no object there")
        vocab = self.seg.vocabulary
        use_classes = labelled and not getattr(self.seg, "class_agnostic", False)
        note = None
        if retrack_from is not None:
            note = (f"frames from {start} on were re-tracked from that frame; the command tracks the whole range "
                    "with every prompt in one run (its masks may differ slightly after the correction)")
        if source.kind == "image":
            kind = "prompts" if task == "vos" else {"vis": "instance", "vps": "panoptic", "vss": "semantic"}[task]
            command, note = self._image_command(source, kind)
            task_name = f"image-{kind}"
            use_classes = self.labelled if kind == "prompts" else True
        else:
            if retrack_from is None:
                command = self._video_command(source, task, start, end, mode, prompts)
            else:  # the one run that gives these results without the app: every prompt, the whole range
                command = self._video_command(source, task, first, end, mode, source.prompts.groups(first, end))
            task_name = task
        run = Run(uuid.uuid4().hex[:12], source.id, task_name, start, end, mode, command, use_classes,
                  vocab.names if use_classes else [], vocab.num_things if use_classes else 0,
                  (vocab.category_ids if use_classes else None), retrack_from=retrack_from, note=note)
        run.frames.update(kept)
        if carried:
            run.notices.append(f"re-tracking from frame {start}: objects {', '.join(map(str, carried))} continue "
                               "from their tracked masks on that frame")
        return {"run": run, "prompts": prompts, "labelled": labelled, "first": first}

    def _common_args(self) -> list[str]:
        c = self.config
        args = ["--weights", c.weights]
        if c.device != "auto":
            args += ["--device", c.device]
        if c.precision:
            args += ["--precision", c.precision]
        if c.size_arg:
            args += ["--size", c.size_arg]
        return args

    def _video_command(self, source: Source, task: str, start: int, end: int | None, mode: str, groups) -> list[str]:
        cmd = ["segcli", "vps" if task == "vss" else task, source.shown]
        if task == "vss":
            cmd.append("--semantic")
        if task == "vos":
            cur_obj, cur_frame = 1, start
            for g in groups:
                o, f, points, boxes = (g.obj_id, g.frame, g.points, g.boxes) if hasattr(g, "obj_id") else g
                if f < start:
                    continue
                if o != cur_obj:
                    cmd += ["--object", str(o)]
                    cur_obj = o
                if f != cur_frame:
                    cmd += ["--frame", str(f)]
                    cur_frame = f
                cmd += [a for p in points for a in ("--point", _fmt(p))]
                cmd += [a for b in boxes for a in ("--box", _fmt(b))]
            if self.labelled:
                cmd += self.vocab_args
        else:
            cmd += self.vocab_args
        cmd += self._common_args()
        if start:
            cmd += ["--start", str(start)]
        if end is not None and end != source.frames.num_frames:
            cmd += ["--end", str(end)]
        if mode != "auto":
            cmd += ["--mode", mode]
        return cmd

    def _image_command(self, source: Source, kind: str) -> tuple[list[str], str | None]:
        """(command, None) or (command, why it differs): `segcli image` makes one object per
        --point/--box, numbered points first, then boxes."""
        cmd = ["segcli", "image", source.shown]
        note = None
        if kind == "prompts":
            objects = sorted(source.prompts.on_frame(0).items())
            points = [(o, p) for o, (ps, _) in objects for p in ps]
            boxes = [(o, b) for o, (_, bs) in objects for b in bs]
            cmd += [a for _, p in points for a in ("--point", _fmt(p))]
            cmd += [a for _, b in boxes for a in ("--box", _fmt(b))]
            ids = [o for o, _ in points + boxes]
            if len(set(ids)) < len(ids):
                note = "segcli image makes one object per --point/--box: objects with several prompts come out split"
            elif ids != list(range(1, len(ids) + 1)):
                note = ("segcli image numbers objects 1, 2, ... points first, then boxes: its ids differ from "
                        "the page's")
            if self.labelled:
                cmd += self.vocab_args
        else:
            cmd += ["--task", kind] + self.vocab_args
        return cmd + self._common_args(), note

    def _execute(self, source: Source, run: Run, plan: dict) -> None:
        t0 = time.perf_counter()
        try:
            if source.kind == "image":
                self._execute_image(source, run)
            else:
                self._execute_video(source, run, plan)
            run.status = "done"
        except Cancelled:
            run.status = "cancelled"
        except SegcliError as exc:
            run.status, run.error = "error", str(exc)
        except Exception as exc:  # noqa: BLE001 - shown in the page, never a stuck spinner
            run.status, run.error = "error", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            run.seconds = time.perf_counter() - t0
            run.emit({"type": run.status, "run": run.summary(), "message": run.error})

    def _deliver(self, run: Run, result: FrameResult) -> None:
        record = FrameRecord.from_result(result)
        run.frames[record.index] = record
        run.emit({"type": "frame", **record.summary(), "done": len(run.frames)})

    def _execute_video(self, source: Source, run: Run, plan: dict) -> None:
        from ..pipeline.session import VideoSession
        from ..pipeline.video import VideoOptions

        threshold, max_objects = TASK_DEFAULTS[run.task]
        opts = VideoOptions(task=run.task, mode=run.mode, scale=self.config.scale, score_threshold=threshold,
                            max_objects=max_objects, label_objects=run.task == "vos" and plan["labelled"])
        src = open_source(source.path, start=run.start, end=run.end)
        try:
            info = src.info
            run.total = info.num_frames
            run.info = {"name": info.name, "width": info.width, "height": info.height, "fps": info.fps,
                        "num_frames": info.num_frames}
            if run.retrack_from is not None and info.num_frames is not None:  # the range of the run it continues
                run.info["num_frames"] = info.num_frames + run.start - plan["first"]
            # the session reads the range's first frame from info.start (older readers' SourceInfo lacks it)
            known = info if getattr(info, "start", None) == run.start else SimpleNamespace(**{**vars(info),
                                                                                              "start": run.start})
            session = VideoSession(self.seg, opts, info=known, notice=run.notices.append)
            for p in plan["prompts"]:
                session.add_prompt(p.obj_id, p.frame, p.points, p.boxes, p.mask)
            run.emit({"type": "start", "run": run.summary()})
            t0 = time.perf_counter()
            for frame in src:
                if run.cancel.is_set():
                    raise Cancelled()
                results = session.step(frame)
                run.pushed += 1
                elapsed = time.perf_counter() - t0
                run.emit({"type": "progress", "pushed": run.pushed, "total": run.total,
                          "fps": round(run.pushed / max(elapsed, 1e-9), 3)})
                for r in results:
                    self._deliver(run, r)
            for r in session.finish():
                self._deliver(run, r)
        finally:
            src.close()

    def _execute_image(self, source: Source, run: Run) -> None:
        from ..pipeline.image import ImageOptions, segment_image

        kind = run.task.removeprefix("image-")
        src = open_source(source.path)
        try:
            info = src.info
            run.total = 1
            run.info = {"name": info.name, "width": info.width, "height": info.height, "fps": None,
                        "num_frames": None}
            run.emit({"type": "start", "run": run.summary()})
            for fr in src:
                fr.index = 0
                if kind == "prompts":
                    objects = {}
                    for i, (o, f, points, boxes) in enumerate(source.prompts.groups()):
                        objects[o] = (points, boxes)
                    if not objects:
                        raise PromptError("nothing to segment: click on an object first")
                    opts = ImageOptions(objects=objects, label_objects=self.labelled, scale=self.config.scale)
                else:
                    threshold = 0.3 if kind == "instance" else 0.0
                    opts = ImageOptions(task=kind, scale=self.config.scale, score_threshold=threshold)
                result = segment_image(self.seg, fr, opts)
                run.pushed = 1
                self._deliver(run, result)
        finally:
            src.close()

    def cancel(self, rid: str) -> dict:
        run = self.run(rid)
        run.cancel.set()
        return run.summary()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background run (if any) has ended (tests, shutdown)."""
        thread = self._run_thread
        if thread is not None:
            thread.join(timeout)

    def result_view(self, sid: int, frame: int) -> dict:
        source = self.source(sid)
        run = source.run
        record = run.frames.get(frame) if run is not None else None
        if record is None:
            return {"frame": frame, "segments": [], "mask": None, "run": run.id if run else None}
        view = record.summary()
        view["mask"] = f"/api/sources/{sid}/results/{frame}/mask.png?run={run.id}"
        view["run"] = run.id
        return view

    def result_png(self, sid: int, frame: int) -> bytes:
        source = self.source(sid)
        run = source.run
        record = run.frames.get(frame) if run is not None else None
        if record is None:
            raise NotFound(f"no result for frame {frame} yet")
        return record.png

    # ---- export -----------------------------------------------------------------------------
    def export(self, sid: int, formats: Sequence[str]) -> dict:
        """Write the source's latest run with segcli's writers (segcli.io.open_writers) into a zip;
        returns its download URL, the files and the equivalent command line."""
        from ..io import abort_writers, close_writers, open_writers, parse_formats

        source = self.source(sid)
        run = source.run
        if run is None or not run.frames:
            raise UsageError("nothing to export yet: track the objects (or run vis/vps) first")
        if run.status == "running":
            raise ConflictError("the run is still going: export when it has finished")
        names = parse_formats(list(formats))
        if not names:
            raise UsageError("choose at least one output format")
        eid = uuid.uuid4().hex[:16]
        folder = self._tmp / "exports" / eid
        out = folder / "out"
        out.mkdir(parents=True)
        task = "image" if run.task.startswith("image-") else run.task
        inf = run.info
        vinfo = VideoInfo(inf["name"], inf["width"], inf["height"], inf.get("fps"), inf.get("num_frames"),
                          list(run.classes), run.num_things, task)
        writers = open_writers(names, str(out) + os.sep, vinfo, category_ids=run.category_ids)
        try:
            need_image = any(w.needs_image for w in writers)
            frames = self._frames_for(source, sorted(run.frames)) if need_image else None
            for k in sorted(run.frames):
                result = run.frames[k].to_result()
                if frames is not None:
                    result.image = frames(k)
                for w in writers:
                    w.write(result)
            close_writers(writers)
        except BaseException:
            abort_writers(writers)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
                       and not p.name.startswith("."))
        archive = folder / f"{vinfo.name}-{run.task}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for rel in files:
                z.write(out / rel, rel)
        self.exports[eid] = archive
        command = list(run.command)
        for n in names:
            command += ["-f", n]
        command += ["-o", "out/"]
        return {"id": eid, "url": f"/api/exports/{eid}", "filename": archive.name, "files": files,
                "formats": names, "command": shlex.join(command), "note": run.note}

    def _frames_for(self, source: Source, indices: list[int]) -> Callable[[int], np.ndarray]:
        """RGB of the given frames in increasing order (one forward pass over the source)."""
        src = open_source(source.path, start=indices[0] if source.kind == "folder" else 0)
        it = iter(src)
        state = {"frame": None}

        def get(k: int) -> np.ndarray:
            fr = state["frame"]
            while fr is None or fr.index < k:
                fr = next(it, None)
                if fr is None:
                    src.close()
                    raise UnreadableInputError(f"frame {k} of {source.name} could not be read again")
                if source.kind == "image":
                    fr.index = 0
                state["frame"] = fr
            return fr.rgb

        return get

    def export_path(self, eid: str) -> Path:
        path = self.exports.get(eid)
        if path is None or not path.is_file():
            raise NotFound(f"no export {eid}")
        return path

    # ---- info / shutdown ------------------------------------------------------------------------
    def info(self) -> dict:
        from .. import __version__
        from ..io import FORMATS

        return {"version": __version__, "weights": self.config.weights, "device": str(self.seg.device),
                "precision": self.seg.precision, "sources": [s.describe() for s in self.sources.values()],
                "vocabulary": self.vocabulary(), "formats": list(FORMATS), "tasks": list(RUN_TASKS),
                "modes": list(RUN_MODES), "cache": self.cache.stats(),
                "max_upload_mb": self.config.max_upload_mb, "busy": self.busy(),
                "run": self.current_run.summary() if self.current_run else None}

    def close(self) -> None:
        if self.current_run is not None:
            self.current_run.cancel.set()
        self.wait(5)
        for s in self.sources.values():
            s.frames.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


def upload_too_large(name: str, limit: int) -> UsageError:
    return UsageError(f"upload {name!r} is larger than the limit of {limit / 2**20:.0f} MB "
                      "(segcli app --max-upload-mb)")


def use_vocabulary(seg, weights: str, vocab) -> None:
    """Set `vocab`'s CLIP text embeddings on the loaded model (the cache makes repeats instant)."""
    from ..pipeline.engine import resolve_weights
    from ..vocab import cache, text

    source = resolve_weights(weights)
    if source.text_source is None:
        raise UsageError("this model has no CLIP text tower to embed a vocabulary with")
    embeddings, _ = cache.get_class_embeddings(vocab, text.resolve_text_source(source.text_source))
    seg.model.set_class_embeddings(embeddings)
    seg.vocabulary = vocab
    seg.class_agnostic = False


def _fmt(values) -> str:
    return ",".join(f"{float(v):g}" for v in values)
