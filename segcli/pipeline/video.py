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

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PromptError, UsageError
from ..results import FrameResult, Segment
from .clips import iter_clips
from .engine import Segmenter
from .postprocess import LazyMasks, match_first_frame, select_proposals, upsample_masks
from .preprocess import FrameMeta, preprocess_frames
from .tasks import InstanceTracks, instance_segments, panoptic_frame_segments, semantic_segments

TASKS = ("vis", "vps", "vss", "vos")
MODES = ("auto", "exact", "online")


@dataclass
class ObjectPrompt:
    """One object to track in `vos`: prompts on `frame` in original-frame pixels."""

    obj_id: int
    frame: int = 0
    points: list[tuple[float, float]] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    mask: np.ndarray | None = None  # bool (H, W) at the original size


@dataclass
class VideoOptions:
    task: str = "vis"
    mode: str = "auto"
    scale: tuple[int, int] | None = None  # (w, h) resize limits; default: the model's video scale
    clip_size: int | None = None
    score_threshold: float = 0.3
    max_objects: int = 100
    open_vocab: bool = False  # CLIP mask-pooling ensemble (needs Segmenter.seen)
    keep_images: bool = False  # keep RGB frames in the results (overlay writer)
    exact_budget_mb: float = 2048.0
    objects: list[ObjectPrompt] = field(default_factory=list)  # vos
    label_objects: bool = False  # vos: label each object with the vocabulary


@dataclass
class _HeldClip:
    frames: list  # reader Frames (rgb dropped unless kept)
    metas: list[FrameMeta]
    masks: torch.Tensor  # (Q, T, h4, w4) re-ordered stride-4 logits

    @property
    def nbytes(self) -> int:
        return self.masks.numel() * self.masks.element_size() + sum(
            f.rgb.nbytes for f in self.frames if getattr(f, "rgb", None) is not None)


class VideoSegmentation:
    """Per-video state: tracker, running logits, open-vocabulary sums, VOS assignment."""

    def __init__(self, seg: Segmenter, opts: VideoOptions, notice: Callable[[str], None] | None = None):
        if opts.task not in TASKS:
            raise UsageError(f"unknown video task '{opts.task}' (choose {', '.join(TASKS)})")
        if opts.mode not in MODES:
            raise UsageError(f"unknown mode '{opts.mode}' (choose {', '.join(MODES)})")
        if opts.task == "vos" and not opts.objects:
            raise PromptError("vos needs at least one prompt (--point, --box or --mask)")
        if opts.open_vocab and seg.seen is None:
            raise UsageError("the open-vocabulary ensemble needs the seen/unseen split of the vocabulary")
        from .tracker import ClipAssociator

        self.seg = seg
        self.opts = opts
        self.notice = notice or (lambda msg: None)
        self.cfg = seg.cfg
        self.scale = tuple(opts.scale or self.cfg.preprocess.video_scale)
        self.associator = ClipAssociator()
        self.ov_sum = None
        self.ov_count = None
        self._tracks_key = None
        self._tracks = None
        # vos: object masks decoded on their prompt frame, and the (query slot -> object id) list
        self.prompt_masks: dict[int, list[tuple[int, np.ndarray]]] = {}
        for obj in opts.objects:
            if obj.mask is not None:
                self.prompt_masks.setdefault(obj.frame, []).append((obj.obj_id, obj.mask.astype(bool)))
        self.assignment: list[tuple[int, int]] = []  # (query slot, object id) in painting order

    # ---- clip stage: model + association ---------------------------------------------------
    def process(self, clip) -> _HeldClip:
        frames = clip.items
        pre = self.cfg.preprocess
        batch, metas = preprocess_frames([f.rgb for f in frames], self.scale, pre.pad_divisor, pre.mean, pre.std)
        feats = self.seg.features(batch)
        # prompts on a frame of this clip reuse the clip's pixel-decoder outputs for that frame
        indices = {f.index for f in frames}
        prompted = self.opts.task == "vos" and any(o.mask is None and o.frame in indices for o in self.opts.objects)
        out = self.seg.decode_clip(feats, len(frames), keep_pixel=prompted)
        assoc = self.associator.add(out.cls_logits[0], out.iou_logits[0], out.query_feat[0], out.mask_logits[0])
        masks = assoc.per_query  # (Q, T, h4, w4)
        if self.opts.open_vocab:
            self._pool_clip_features(feats[-1], masks, metas[0])
        if prompted:
            self._decode_prompts(frames, feats, metas, out.pixel)
        if not self.opts.keep_images:
            for f in frames:
                f.rgb = None
        return _HeldClip(frames, metas, masks)

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
        from .prompts import prompt_boxes

        for t, frame in enumerate(frames):
            objs = [o for o in self.opts.objects if o.frame == frame.index and o.mask is None]
            if not objs:
                continue
            meta = metas[t]
            boxes, bps, owners = [], [], []
            for o in objs:
                b, bp = prompt_boxes(meta.scale_factor, o.points, o.boxes)
                boxes.append(b)
                bps.append(bp)
                owners += [o.obj_id] * len(b)
            h, w = meta.img_shape
            boxes_t = torch.cat(boxes, 0).float() / torch.tensor([w, h, w, h], dtype=torch.float32)
            frame_pixel = None if pixel is None else (pixel[0][t:t + 1], [m[t:t + 1] for m in pixel[1]])
            out = self.seg.decode_prompts([f[t:t + 1] for f in feats], boxes_t, torch.cat(bps), pixel=frame_pixel)
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
                segments = self._vos_segments(frame.index, cls, iou, masks)
            h, w = meta.ori_shape
            yield FrameResult(frame.index, frame.pts, h, w, segments, frame.rgb, frame.name)

    def _instance_tracks(self, cls: torch.Tensor) -> InstanceTracks:
        key = (self.associator.num_clips, id(cls))
        if self._tracks_key != key:
            self._tracks = InstanceTracks.select(cls, self.seg.vocabulary.num_things, self.cfg.test.max_per_image,
                                                 self.opts.max_objects, self.opts.score_threshold)
            self._tracks_key = key
        return self._tracks

    def _vos_segments(self, index: int, cls, iou, masks: LazyMasks) -> list[Segment]:
        if index in self.prompt_masks:
            self._match_objects(self.prompt_masks.pop(index), iou, masks)
        if not self.assignment:
            return []
        slots = [q for q, _ in self.assignment]
        binary = masks[torch.as_tensor(slots)].sigmoid() > 0.5
        id_map = np.zeros(masks.shape[1:], dtype=np.int32)
        for (q, oid), m in zip(self.assignment, binary.cpu().numpy()):
            id_map[m] = oid  # later (higher objectness) proposals overwrite earlier ones
        probs = cls.float().softmax(-1)[:, :-1].cpu()
        iou = iou.cpu()
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
                out.append(Segment(oid, -1, "", float(iou[q, 0].sigmoid()), mask))
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
            return
        prop_masks = masks[torch.as_tensor(proposals)].sigmoid() > 0.5
        gt = torch.from_numpy(np.stack([m for _, m in objects])).to(prop_masks.device)
        matched = match_first_frame(prop_masks, gt, ids)
        new = [(proposals[i], oid) for i, oid in matched.items()]
        # painting order: ascending objectness, so better proposals win overlaps
        score = iou[:, 0]
        self.assignment = sorted(keep + new, key=lambda a: float(score[a[0]]))


def segment_video(seg: Segmenter, frames: Iterable, opts: VideoOptions,
                  notice: Callable[[str], None] | None = None) -> Iterator[FrameResult]:
    """Segment a stream of reader frames (objects with .index, .pts, .rgb, .name); yields one
    FrameResult per frame, in order."""
    state = VideoSegmentation(seg, opts, notice)
    vcfg = seg.cfg.video
    size = opts.clip_size or vcfg.clip_size
    small = opts.clip_size or vcfg.clip_size_small
    clips = iter_clips(frames, size, small, vcfg.small_clip_thr, vcfg.whole_clip_thr, exact=True)
    online = opts.mode == "online"
    held: list[_HeldClip] = []
    held_bytes = 0
    budget = opts.exact_budget_mb * 2**20
    for clip in clips:
        item = state.process(clip)
        if online:
            yield from state.emit(item)
            continue
        held.append(item)
        held_bytes += item.nbytes
        if opts.mode == "auto" and held_bytes > budget:
            state.notice(f"video longer than the exact-mode budget ({opts.exact_budget_mb:.0f} MB of mask "
                         "logits): continuing in online mode")
            online = True
            for h in held:
                yield from state.emit(h)
            held = []
    for h in held:
        yield from state.emit(h)
