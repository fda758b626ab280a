"""The push-style core that every caller drives: one `VideoSession` per video.

    session = VideoSession(seg, VideoOptions(task="vos"), info=source.info)
    session.add_prompt(1, frame=0, points=[(120, 80)])      # validated against the video now
    for frame in source:                                   # or a camera callback, a worker...
        for result in session.step(frame):                 # whatever became final
            write(result)
    for result in session.finish():                        # the rest; checks late prompts
        write(result)

The session holds every piece of per-video state (the clip splitter, the tracker, running
class scores, prompts, the exact/auto/online policy); the model (`Segmenter`) holds none, so one
loaded model serves many sessions one after the other (batch workers, the app).

Modes: `exact` keeps every clip's stride-4 logits and decides at the end with the class scores
averaged over the whole video (the official results); `online` decides each clip as soon as it is
decoded, with the running average (results stream, memory is flat); `auto` is exact while the kept
logits fit `exact_budget_mb`, and online from the first frame for a live source (its length is
unknown, so exact would show nothing until it ends). Clips follow the official `video_split`
(which holds back up to (clip_size + 1) * clip_size frames until it knows they are not near the
end); live sources use fixed clips instead so that each clip leaves as soon as it is full.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from ..errors import PromptError, UsageError
from ..results import FrameResult
from ..runtime import release_freed_memory
from .clips import OnlineClipSplitter
from .engine import Segmenter
from .options import ObjectPrompt, VideoOptions, check_prompt_frame, check_prompt_in_frame, validate_options
from .video import VideoSegmentation, _HeldClip


class Hooks:
    """Optional instrumentation (the benchmark's stage clock): no-ops by default."""

    def stage(self, name: str):
        """A context manager around each stage: "preprocess", "backbone", "decoder"."""
        return contextlib.nullcontext()

    def clip_decoded(self, out) -> None:
        """Called with each clip's HeadOutput (after association inputs are taken)."""


@dataclass
class SessionStats:
    frames_in: int = 0
    frames_out: int = 0
    clips: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_result_s: float | None = None  # from the first frame pushed to the first result out
    clip_latency_s: list[float] = field(default_factory=list)  # last frame of a clip pushed -> its results out


class VideoSession:
    """Segment one video pushed frame by frame.

    segmenter: the loaded model. options: VideoOptions (validated here). info: what is known of
    the video in advance (an object with width, height, num_frames and optionally live and
    start: a reader's SourceInfo); without it prompts are checked when their frame arrives.
    notice: called with one-line messages (mode switches, objects that found no proposal).
    hooks: instrumentation (see Hooks).
    """

    def __init__(self, segmenter: Segmenter, options: VideoOptions | None = None, info=None,
                 notice: Callable[[str], None] | None = None, hooks: Hooks | None = None):
        opts = validate_options(options or VideoOptions())
        prompts, opts.objects = list(opts.objects), []
        if opts.open_vocab and segmenter.seen is None:
            raise UsageError("the open-vocabulary ensemble needs the seen/unseen split of the vocabulary "
                             "(Segmenter.load(..., open_vocab=True))")
        self.seg = segmenter
        self.opts = opts
        self.info = info
        self.notice = notice or (lambda message: None)
        self.hooks = hooks or Hooks()
        self.stats = SessionStats()
        self.live = bool(getattr(info, "live", False))
        self._state = VideoSegmentation(segmenter, opts, self.notice, self.hooks)
        vcfg = segmenter.cfg.video
        size = opts.clip_size or vcfg.clip_size
        small = opts.clip_size or vcfg.clip_size_small
        self._splitter = OnlineClipSplitter(size, small, vcfg.small_clip_thr, vcfg.whole_clip_thr,
                                            exact=not self.live)
        self._online = opts.mode == "online" or (opts.mode == "auto" and self.live)
        if opts.mode == "auto" and self.live:
            self.notice("live source: running online (each clip's results leave as soon as it is decoded)")
        self._held: list[_HeldClip] = []
        self._held_bytes = 0
        self._size: tuple[int, int] | None = (info.width, info.height) if info is not None else None
        self._last_index: int | None = None  # last frame pushed
        self._decided_upto = -1  # frames up to this index are in processed clips: too late for prompts
        self._seen_indices: set[int] = set()
        self._finished = False
        for p in prompts:
            self.add_prompt(p.obj_id, p.frame, p.points, p.boxes, p.mask)

    # ---- prompts ---------------------------------------------------------------------------
    @property
    def prompts(self) -> list[ObjectPrompt]:
        return list(self.opts.objects)

    def add_prompt(self, obj_id: int = 1, frame: int = 0, points=(), boxes=(), mask: np.ndarray | None = None
                   ) -> ObjectPrompt:
        """Points (x, y), boxes (x1, y1, x2, y2) in original-frame pixels, or a boolean mask of the
        frame's size, for object `obj_id` on source frame `frame`. Several prompts of one object on
        one frame are united. Raises PromptError (outside the frame, wrong mask size, a frame out
        of the video or already segmented) exactly as the CLI reports it."""
        if self.opts.task != "vos":
            raise UsageError(f"prompts go with the vos task, not {self.opts.task}")
        if self._finished:
            raise PromptError("the session is finished: no more prompts")
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or not 1 <= obj_id <= 255:
            raise PromptError(f"object id {obj_id!r}: must be an integer from 1 to 255")
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
            raise PromptError(f"prompt frame {frame!r}: must be a frame index >= 0")
        points = [tuple(float(v) for v in p) for p in points]
        boxes = [tuple(float(v) for v in b) for b in boxes]
        if any(len(p) != 2 for p in points) or any(len(b) != 4 for b in boxes):
            raise PromptError("points are (x, y) and boxes (x1, y1, x2, y2)")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim != 2:
                raise PromptError(f"a mask prompt is one (H, W) array, got shape {mask.shape}")
            mask = mask.astype(bool)
            if not mask.any():
                raise PromptError(f"the mask of object {obj_id} is empty")
        if not points and not boxes and mask is None:
            raise PromptError(f"object {obj_id}: a prompt needs points, boxes or a mask")
        check_prompt_frame(frame, self.info)
        if frame <= self._decided_upto:
            raise PromptError(f"prompt frame {frame} is already segmented: add prompts before its clip is final")
        if (points or boxes) and not self.seg.has_prompts:
            raise PromptError("these weights have no interactive-prompt branch (a checkpoint of the official "
                              "video-demo config): points and boxes need the all-tasks checkpoint; a --mask works")
        if self._size is not None:
            self._check_in_frame(obj_id, points, boxes, mask, *self._size)
        limit = self.seg.cfg.test.num_proposals
        ids = {o.obj_id for o in self.opts.objects} | {obj_id}
        if len(ids) > limit:
            raise PromptError(f"{len(ids)} objects: the model tracks at most {limit} objects in a video "
                              f"(its {limit} best proposals are matched to them)")
        prompt = ObjectPrompt(int(obj_id), int(frame), points, boxes, mask)
        self.opts.objects.append(prompt)
        self._state.add_object(prompt)
        return prompt

    _check_in_frame = staticmethod(check_prompt_in_frame)

    # ---- frames ----------------------------------------------------------------------------
    def step(self, frame) -> list[FrameResult]:
        """Push one frame: a reader Frame (index, pts, rgb, name) or an RGB uint8 (H, W, 3) array
        (numbered after the previous one). Returns the results that became final (often none:
        they come out clip by clip, in frame order)."""
        if self._finished:
            raise UsageError("step() after finish()")
        frame = self._as_frame(frame)
        if self.opts.task == "vos" and not self.opts.objects:
            raise PromptError("vos needs a prompt before the first frame: --point X,Y, --box X1,Y1,X2,Y2 "
                              "or --mask FILE")
        self.stats.frames_in += 1
        self._last_index = frame.index
        self._seen_indices.add(frame.index)
        return self._run_clips(self._splitter.push(frame))

    def finish(self) -> list[FrameResult]:
        """End of the video: the remaining clips, then every held clip (exact mode). Raises
        PromptError for a prompt on a frame the video never reached."""
        if self._finished:
            return []
        self._finished = True
        out = self._run_clips(self._splitter.finish())
        for held in self._held:
            out += self._emit(held)
        self._held = []
        self._check_prompt_frames()
        return out

    def run(self, frames: Iterable) -> Iterator[FrameResult]:
        """Pull-style convenience: push every frame of `frames`, then finish."""
        for frame in frames:
            yield from self.step(frame)
        yield from self.finish()

    # ---- internals -------------------------------------------------------------------------
    def _as_frame(self, frame):
        from .reader import Frame

        if isinstance(frame, np.ndarray):
            index = 0 if self._last_index is None else self._last_index + 1
            frame = Frame(index, None, frame, f"{index:05d}")
        rgb = getattr(frame, "rgb", None)
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise UsageError("a frame is an RGB uint8 array of shape (H, W, 3)")
        h, w = rgb.shape[:2]
        if self._size is None:
            self._size = (w, h)
            for o in self.opts.objects:
                self._check_in_frame(o.obj_id, o.points, o.boxes, o.mask, w, h)
        elif self._size != (w, h):
            raise UsageError(f"frame {frame.index} is {w}x{h}, the video is {self._size[0]}x{self._size[1]}")
        if self._last_index is not None and frame.index <= self._last_index:
            raise UsageError(f"frame {frame.index} comes after frame {self._last_index}: frames go in order")
        return frame

    def _run_clips(self, clips) -> list[FrameResult]:
        out: list[FrameResult] = []
        for clip in clips:
            item = self._state.process(clip)
            release_freed_memory()  # the clip's temporaries are freed now (segcli.runtime)
            self.stats.clips += 1
            self._decided_upto = max(self._decided_upto, clip.items[-1].index)
            if self._online:
                out += self._emit(item)
                continue
            self._held.append(item)
            self._held_bytes += item.nbytes
            if self.opts.mode == "auto" and self._held_bytes > self.opts.exact_budget_mb * 2**20:
                self.notice(f"video longer than the exact-mode budget ({self.opts.exact_budget_mb:.0f} MB of mask "
                            "logits): continuing in online mode")
                self._online = True
                for held in self._held:
                    out += self._emit(held)
                self._held = []
        return out

    def _emit(self, held: _HeldClip) -> list[FrameResult]:
        results = list(self._state.emit(held))
        now = time.perf_counter()
        if results and self.stats.first_result_s is None:
            self.stats.first_result_s = now - self.stats.started
        self.stats.clip_latency_s.append(now - held.pushed_at)
        self.stats.frames_out += len(results)
        return results

    def _check_prompt_frames(self) -> None:
        last = self._last_index
        for o in self.opts.objects:
            if o.frame in self._seen_indices:
                continue
            if last is None or o.frame > last:
                end = "no frame" if last is None else f"last frame {last}"
                raise PromptError(f"prompt frame {o.frame} is beyond the end of the video ({end})")
            raise PromptError(f"prompt frame {o.frame} was not processed (skipped by --every/--fps or missing)")
