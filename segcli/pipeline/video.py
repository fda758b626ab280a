"""Streaming video segmentation: reader frames -> clips -> model -> tracker -> per-frame results.

Two modes (`VideoOptions.mode`):
  * exact  - the official semantics: every clip's stride-4 mask logits are kept (never the
    full-resolution masks), and per-frame decisions are taken at the end with the class and
    objectness logits averaged over the whole video. Memory grows with the video length.
  * online - each clip is finalised as soon as it is decoded, with the running average of
    the clips seen so far; results flow out while the video is read and memory stays flat.
  * auto (default) - exact while the kept logits fit `exact_budget_mb`, then online for the
    rest of the video (a one-line notice says so).
Both modes split clips exactly as the official video_split and associate clips with MinVIS, so
track ids (query slots) are stable; they differ only in which average the decisions use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PromptError
from ..results import FrameResult, Segment
from .engine import Segmenter
from .options import MODES, TASKS, ObjectPrompt, VideoOptions  # noqa: F401  (re-exported)
from .postprocess import LazyMasks, match_first_frame, paint_vos, select_proposals, upsample_masks
from .preprocess import FrameMeta, preprocess_frames
from .tasks import InstanceTracks, instance_segments, panoptic_frame_segments, semantic_segments


@dataclass
class _HeldClip:
    frames: list  # reader Frames (rgb dropped unless kept)
    metas: list[FrameMeta]
    masks: torch.Tensor  # (Q, T, h4, w4) re-ordered stride-4 logits
    pushed_at: float = 0.0  # perf_counter when the clip was complete (latency accounting)

    @property
    def nbytes(self) -> int:
        return self.masks.numel() * self.masks.element_size() + sum(
            f.rgb.nbytes for f in self.frames if getattr(f, "rgb", None) is not None)


class VideoSegmentation:
    """Per-video state: tracker, running logits, open-vocabulary sums, VOS assignment. Driven by
    segcli.pipeline.session.VideoSession, which validates options and prompts first."""

    def __init__(self, seg: Segmenter, opts: VideoOptions, notice: Callable[[str], None] | None = None,
                 hooks=None):
        from .session import Hooks
        from .tracker import ClipAssociator

        self.seg = seg
        self.opts = opts
        self.notice = notice or (lambda msg: None)
        self.hooks = hooks or Hooks()
        self.cfg = seg.cfg
        self.scale = tuple(opts.scale or self.cfg.preprocess.video_scale)
        self.associator = ClipAssociator()
        self.ov_sum = None
        self.ov_count = None
        self._tracks_key = None
        self._tracks = None
        # vos: object masks decoded on their prompt frame, and the (query slot -> object id) list
        self.prompt_masks: dict[int, list[tuple[int, np.ndarray]]] = {}
        self.assignment: list[tuple[int, int]] = []  # (query slot, object id) in painting order

    def add_object(self, obj: ObjectPrompt) -> None:
        """A validated prompt (VideoSession.add_prompt); mask prompts are ready as they are,
        points and boxes are decoded when the clip holding their frame is processed."""
        if obj.mask is not None:
            self.prompt_masks.setdefault(obj.frame, []).append((obj.obj_id, obj.mask.astype(bool)))

    # ---- clip stage: model + association ---------------------------------------------------
    def process(self, clip) -> _HeldClip:
        frames = clip.items
        pushed_at = time.perf_counter()
        pre = self.cfg.preprocess
        with self.hooks.stage("preprocess"):
            batch, metas = preprocess_frames([f.rgb for f in frames], self.scale, pre.pad_divisor, pre.mean, pre.std,
                                             device=self.seg.input_device)
        with self.hooks.stage("backbone"):
            feats = self.seg.features(batch)
        # prompts on a frame of this clip reuse the clip's pixel-decoder outputs for that frame
        indices = {f.index for f in frames}
        prompted = self.opts.task == "vos" and any(o.mask is None and o.frame in indices for o in self.opts.objects)
        with self.hooks.stage("decoder"):
            out = self.seg.decode_clip(feats, len(frames), keep_pixel=prompted)
        self.hooks.clip_decoded(out)
        assoc = self.associator.add(out.cls_logits[0], out.iou_logits[0], out.query_feat[0], out.mask_logits[0])
        masks = assoc.per_query  # (Q, T, h4, w4)
        if self.opts.open_vocab:
            self._pool_clip_features(feats[-1], masks, metas[0])
        if prompted:
            with self.hooks.stage("decoder"):
                self._decode_prompts(frames, feats, metas, out.pixel)
        if not self.opts.keep_images:
            for f in frames:
                f.rgb = None
        return _HeldClip(frames, metas, masks, pushed_at)

    def _pool_clip_features(self, feat_s32: torch.Tensor, masks: torch.Tensor, meta: FrameMeta) -> None:
        """Accumulate CLIP mask pooling frame by frame and in query chunks (bounded memory)."""
        model = self.seg.model
        for t in range(masks.shape[1]):
            for s in range(0, masks.shape[0], 32):
                padres = F.interpolate(masks[s:s + 32, t][None].float(), size=meta.pad_shape, mode="bilinear",
                                       align_corners=False)[0]
                sums, count = model.clip_pool_sums(feat_s32[t:t + 1].float().to(padres.device), padres[:, None])
                if self.ov_sum is None:
                    self.ov_sum = sums.new_zeros(masks.shape[0], sums.shape[1])
                    self.ov_count = count.new_zeros(masks.shape[0])
                self.ov_sum[s:s + 32] += sums
                self.ov_count[s:s + 32] += count

    def _decode_prompts(self, frames, feats, metas, pixel) -> None:
        """Points and boxes on a frame of this clip -> one mask per object (union of its prompts)."""
        from .prompts import prompt_batch

        for t, frame in enumerate(frames):
            objs = [o for o in self.opts.objects if o.frame == frame.index and o.mask is None]
            if not objs:
                continue
            meta = metas[t]
            boxes_t, flags, owners = prompt_batch([(o.obj_id, o.points, o.boxes) for o in objs], meta.scale_factor,
                                                  meta.img_shape)
            frame_pixel = None if pixel is None else (pixel[0][t:t + 1], [m[t:t + 1] for m in pixel[1]])
            out = self.seg.decode_prompts([f[t:t + 1] for f in feats], boxes_t, flags, pixel=frame_pixel)
            logits = upsample_masks(out.mask_logits[0, :, 0], meta.pad_shape, meta.img_shape, meta.ori_shape)
            binary = (logits.sigmoid() > 0.5).cpu().numpy()
            per_obj: dict[int, np.ndarray] = {}
            for i, oid in enumerate(owners):
                per_obj[oid] = binary[i] | per_obj.get(oid, np.zeros_like(binary[i]))
            self.prompt_masks.setdefault(frame.index, []).extend(per_obj.items())

    # ---- decision stage: per-frame results ---------------------------------------------------
    def video_cls(self) -> torch.Tensor:
        cls = self.associator.mean_cls()
        if self.opts.open_vocab:
            alpha, beta = 0.4, 0.8
            seen = torch.as_tensor(self.seg.seen, dtype=torch.bool)
            cls = self.seg.model.open_vocab_logits(cls, self.ov_sum, self.ov_count, seen, alpha, beta)
        return cls

    def emit(self, held: _HeldClip) -> Iterator[FrameResult]:
        cls = self.video_cls()
        iou = self.associator.mean_iou()
        vocab = self.seg.vocabulary
        probs = objectness = None  # vos: video-level class probabilities and objectness, once per clip
        for t, frame in enumerate(held.frames):
            meta = held.metas[t]
            masks = LazyMasks(held.masks[:, t], meta.pad_shape, meta.img_shape, meta.ori_shape)
            if not self.seg.shortcuts:  # the official work: every query upsampled to the frame
                masks = masks[:]
            task = self.opts.task
            if task == "vis":
                segments = instance_segments(self._instance_tracks(cls), masks, vocab)
            elif task == "vps":
                segments = panoptic_frame_segments(cls, masks, vocab, self.cfg.test, self.opts.score_threshold)
            elif task == "vss":
                segments = semantic_segments(cls, masks, vocab)
            else:
                if objectness is None:
                    objectness = iou[:, 0].float().sigmoid().tolist()
                    probs = cls.float().softmax(-1)[:, :-1].cpu() if self.opts.label_objects else None
                segments = self._vos_segments(frame.index, probs, objectness, iou, masks)
            h, w = meta.ori_shape
            yield FrameResult(frame.index, frame.pts, h, w, segments, frame.rgb, frame.name)

    def _instance_tracks(self, cls: torch.Tensor) -> InstanceTracks:
        key = (self.associator.num_clips, id(cls))
        if self._tracks_key != key:
            self._tracks = InstanceTracks.select(cls, self.seg.vocabulary.num_things, self.cfg.test.max_per_image,
                                                 self.opts.max_objects, self.opts.score_threshold)
            self._tracks_key = key
        return self._tracks

    def _vos_segments(self, index: int, probs, objectness: list[float], iou, masks: LazyMasks) -> list[Segment]:
        if index in self.prompt_masks:
            self._match_objects(self.prompt_masks.pop(index), iou, masks)
        if not self.assignment:
            return []
        slots = torch.as_tensor([q for q, _ in self.assignment])
        binary = masks[slots].sigmoid() > 0.5
        # the official painting (paint_vos): later (higher objectness) proposals overwrite earlier ones
        id_map = paint_vos(binary, {i: oid for i, (_, oid) in enumerate(self.assignment)}).cpu().numpy()
        out = []
        for q, oid in sorted(self.assignment, key=lambda a: a[1]):
            mask = id_map == oid
            if not mask.any():
                continue
            if self.opts.label_objects:
                k = int(probs[q].argmax())
                out.append(Segment(oid, k, self.seg.vocabulary.names[k], float(probs[q, k]), mask,
                                   self.seg.vocabulary.is_thing(k)))
            else:
                out.append(Segment(oid, -1, "", objectness[q], mask))
        return out

    def _match_objects(self, objects: list[tuple[int, np.ndarray]], iou, masks: LazyMasks) -> None:
        """Official protocol: the top proposals by objectness, Hungarian-matched by mask IoU to the
        objects' masks on this frame; objects given again on a later frame are re-matched there."""
        for oid, mask in objects:
            if mask.shape != tuple(masks.shape[1:]):
                raise PromptError(f"object {oid} mask is {mask.shape[1]}x{mask.shape[0]}, "
                                  f"the video is {masks.shape[2]}x{masks.shape[1]}")
        ids = [oid for oid, _ in objects]
        keep = [(q, o) for q, o in self.assignment if o not in ids]
        taken = {q for q, _ in keep}
        proposals = [q for q in select_proposals(iou, self.cfg.test.num_proposals).tolist() if q not in taken]
        if not proposals:
            self.notice(f"objects {', '.join(map(str, ids))} found no free proposal to track")
            return
        prop_masks = masks[torch.as_tensor(proposals)].sigmoid() > 0.5
        gt = torch.from_numpy(np.stack([m for _, m in objects])).to(prop_masks.device)
        matched = match_first_frame(prop_masks, gt, ids)
        new = [(proposals[i], oid) for i, oid in matched.items()]
        lost = sorted(set(ids) - {oid for _, oid in new})
        if lost:
            self.notice(f"{len(lost)} of {len(ids)} objects found no proposal to track (ids "
                        f"{', '.join(map(str, lost))}): the model has {len(proposals)} free proposals")
        # painting order: ascending objectness, so better proposals win overlaps
        score = iou[:, 0].tolist()  # one host copy, not a device sync per object
        self.assignment = sorted(keep + new, key=lambda a: score[a[0]])


def segment_video(seg: Segmenter, frames: Iterable, opts: VideoOptions,
                  notice: Callable[[str], None] | None = None, info=None) -> Iterator[FrameResult]:
    """Pull-style wrapper over VideoSession: segment an iterable of reader frames (objects with
    .index, .pts, .rgb, .name); yields one FrameResult per frame, in order."""
    from .session import VideoSession

    return VideoSession(seg, opts, info=info, notice=notice).run(frames)
