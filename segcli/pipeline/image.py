"""Single images through the same model: panoptic / instance / semantic results, or the
SAM-like answer to point and box prompts (one mask per object)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UsageError
from ..results import FrameResult, Segment
from .engine import Segmenter
from .options import IMAGE_TASKS, ImageOptions  # noqa: F401  (re-exported)
from .postprocess import LazyMasks, upsample_masks
from .preprocess import preprocess_frames
from .prompts import prompt_batch
from .tasks import InstanceTracks, instance_segments, panoptic_frame_segments, semantic_segments


def segment_image(seg: Segmenter, frame, opts: ImageOptions) -> FrameResult:
    """frame: an object with .index, .pts, .rgb (H, W, 3 uint8) and .name."""
    if opts.task not in IMAGE_TASKS:
        raise UsageError(f"unknown image task '{opts.task}' (choose {', '.join(IMAGE_TASKS)})")
    pre = seg.cfg.preprocess
    scale = tuple(opts.scale or pre.image_scale)
    batch, metas = preprocess_frames([frame.rgb], scale, pre.pad_divisor, pre.mean, pre.std, device=seg.input_device)
    meta = metas[0]
    feats = seg.features(batch)
    h, w = meta.ori_shape
    image = frame.rgb if opts.keep_image else None
    if opts.objects:
        segments = _prompt_segments(seg, feats, meta, opts)
        return FrameResult(frame.index, frame.pts, h, w, segments, image, frame.name)

    out = seg.decode_clip(feats, 1)
    cls = out.cls_logits[0]
    masks_s4 = out.mask_logits[0, :, 0]
    if opts.open_vocab:
        padres = upsample_masks(masks_s4, meta.pad_shape, meta.pad_shape)
        sums, count = seg.model.clip_pool_sums(feats[-1].float().to(padres.device), padres[:, None])
        cls = seg.model.open_vocab_logits(cls, sums, count, torch.as_tensor(seg.seen), 0.4, 0.8)
    masks = LazyMasks(masks_s4, meta.pad_shape, meta.img_shape, meta.ori_shape)
    if not seg.shortcuts:  # the official work: every query upsampled to the frame
        masks = masks[:]
    vocab = seg.vocabulary
    if opts.task == "instance":
        tracks = InstanceTracks.select(cls, vocab.num_things, seg.cfg.test.max_per_image, opts.max_objects,
                                       opts.score_threshold)
        segments = instance_segments(tracks, masks, vocab)
    elif opts.task == "panoptic":
        segments = panoptic_frame_segments(cls, masks, vocab, seg.cfg.test, opts.score_threshold)
    else:
        segments = semantic_segments(cls, masks, vocab)
    return FrameResult(frame.index, frame.pts, h, w, segments, image, frame.name)


def _prompt_segments(seg: Segmenter, feats, meta, opts: ImageOptions) -> list[Segment]:
    norm, flags, owners = prompt_batch([(oid, p, b) for oid, (p, b) in sorted(opts.objects.items())],
                                       meta.scale_factor, meta.img_shape)
    out = seg.decode_prompts(feats, norm, flags)
    logits = upsample_masks(out.mask_logits[0, :, 0], meta.pad_shape, meta.img_shape, meta.ori_shape)
    binary = (logits.sigmoid() > 0.5).cpu().numpy()
    probs = out.cls_logits[0].softmax(-1)[:, :-1].cpu()
    objectness = out.iou_logits[0, :, 0].sigmoid().cpu()
    segments = []
    for oid in sorted(set(owners)):
        rows = [i for i, o in enumerate(owners) if o == oid]
        mask = np.logical_or.reduce(binary[rows])
        if opts.label_objects:
            p = probs[rows].mean(0)
            k = int(p.argmax())
            segments.append(Segment(oid, k, seg.vocabulary.names[k], float(p[k]), mask, seg.vocabulary.is_thing(k)))
        else:
            segments.append(Segment(oid, -1, "", float(objectness[rows].max()), mask))
    return segments
