"""The streaming video engine on the golden frames: exact mode reproduces the official video
results; online mode streams with the running state; auto switches when over budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcli.pipeline.engine import Segmenter
from segcli.pipeline.reader import Frame
from segcli.pipeline.video import ObjectPrompt, VideoOptions, segment_video


@pytest.fixture(scope="module")
def segmenter(bundle):
    emb = torch.from_numpy(bundle.outputs["cls_embed_file"])
    return Segmenter.load(str(bundle.path), device="cpu", precision="fp32", embeddings=emb)


def frames(bundle):
    return [Frame(i, i / 25, rgb.copy(), f"{i:05d}") for i, rgb in enumerate(bundle.inputs["vid_frames_raw_rgb"])]


def label_map(result, shape, void):
    out = np.full(shape, void)
    for s in result.segments:
        out[s.mask] = s.category
    return out


def official_labels(bundle, t):
    pan = bundle.outputs["vid_pan_seg"][t]
    void = bundle.config["classes"]["num_classes"]
    return np.where(pan == void, void, pan % bundle.config["INSTANCE_OFFSET"])


def test_exact_vps_matches_official(bundle, segmenter):
    void = bundle.config["classes"]["num_classes"]
    results = list(segment_video(segmenter, frames(bundle), VideoOptions(task="vps", mode="exact")))
    assert [r.index for r in results] == list(range(len(bundle.inputs["vid_frames_raw_rgb"])))
    for t, r in enumerate(results):
        ref = official_labels(bundle, t)
        assert (label_map(r, ref.shape, void) != ref).mean() <= 1e-4
        # things keep one id per query slot in every frame
        assert all(1 <= s.id <= bundle.config["head"]["num_queries"] for s in r.segments)


def test_exact_vis_tracks_are_official_tubes(bundle, segmenter):
    out = bundle.outputs
    opts = VideoOptions(task="vis", mode="exact", score_threshold=0.0, max_objects=1000)
    results = list(segment_video(segmenter, frames(bundle), opts))
    ref_masks, ref_labels = out["vid_ins_masks"], out["vid_ins_labels"]
    tracks = {}
    for t, r in enumerate(results):
        for s in r.segments:
            tracks.setdefault((s.id, s.category), {})[t] = s.mask
    assert tracks
    for (_, label), per_frame in tracks.items():
        candidates = [k for k in range(len(ref_labels)) if ref_labels[k] == label]
        assert any(all((ref_masks[t, k] != m).mean() <= 1e-4 for t, m in per_frame.items()) for k in candidates)


def test_online_streams_with_running_state(bundle, segmenter):
    void = bundle.config["classes"]["num_classes"]
    det = bundle.config["detector"]
    held = max(det["small_clip_thr"], det["whole_clip_thr"], (det["clip_size"] + 1) * det["clip_size"])
    base = frames(bundle)
    # long enough for the exact clip splitter (which holds up to `held` frames) to release clips early
    feed = base * (held // len(base) + 2)
    for i, f in enumerate(feed):
        feed[i] = Frame(i, i / 25, f.rgb.copy(), f"{i:05d}")
    consumed = []

    def reader():
        for f in feed:
            consumed.append(f.index)
            yield f

    stream = segment_video(segmenter, reader(), VideoOptions(task="vps", mode="online"))
    first = next(stream)
    assert first.index == 0 and len(consumed) < len(feed)  # results flow before the video is read
    results = [first, *stream]
    assert [r.index for r in results] == list(range(len(feed)))
    # on the original 7 frames, the last clip is decided with the full average, as officially
    short = list(segment_video(segmenter, frames(bundle), VideoOptions(task="vps", mode="online")))
    last_start = int(bundle.outputs["vid_clip_frame_ranges"][-1][0])
    for t in range(last_start, len(short)):
        ref = official_labels(bundle, t)
        assert (label_map(short[t], ref.shape, void) != ref).mean() <= 1e-4


def test_auto_switches_to_online_over_budget(bundle, segmenter):
    notices = []
    opts = VideoOptions(task="vps", mode="auto", exact_budget_mb=0.01)
    results = list(segment_video(segmenter, frames(bundle), opts, notice=notices.append))
    assert len(results) == len(bundle.inputs["vid_frames_raw_rgb"])
    assert len(notices) == 1 and "online" in notices[0]


def test_vos_exact_matches_official(bundle, segmenter):
    inp, out = bundle.inputs, bundle.outputs
    objects = [ObjectPrompt(int(i), 0, mask=m) for i, m in zip(inp["vos_instance_ids"], inp["vos_first_frame_masks"])]
    results = list(segment_video(segmenter, frames(bundle), VideoOptions(task="vos", mode="exact", objects=objects)))
    for t, r in enumerate(results):
        seg = np.zeros(out["vos_seg_maps"][t].shape, np.int32)
        for s in r.segments:
            seg[s.mask] = s.id
        assert (seg != out["vos_seg_maps"][t]).mean() <= 1e-4


def test_vos_correction_rematches_from_that_frame(bundle, segmenter):
    inp = bundle.inputs
    first = inp["vos_first_frame_masks"][0]
    later = np.zeros_like(first)
    later[: first.shape[0] // 2, : first.shape[1] // 2] = True
    objects = [ObjectPrompt(1, 0, mask=first), ObjectPrompt(1, 4, mask=later)]
    state_a = list(segment_video(segmenter, frames(bundle), VideoOptions(task="vos", mode="exact",
                                                                         objects=objects[:1])))
    state_b = list(segment_video(segmenter, frames(bundle), VideoOptions(task="vos", mode="exact", objects=objects)))
    for t in range(4):  # before the correction nothing changes
        assert [s.mask.tolist() for s in state_a[t].segments] == [s.mask.tolist() for s in state_b[t].segments]
    ids_b = {s.id for r in state_b[4:] for s in r.segments}
    assert ids_b <= {1}


def test_vps_score_threshold_drops_segments(bundle, segmenter):
    results = list(segment_video(segmenter, frames(bundle)[:3], VideoOptions(task="vps", score_threshold=1.0)))
    assert len(results) == 3 and not any(r.segments for r in results)


@pytest.mark.parametrize("task", ["vis", "vps", "vos"])
def test_exact_shortcuts_change_no_result(bundle, segmenter, monkeypatch, task):
    """Classifying only the last prediction and upsampling only kept queries are exact: the
    official work (every prediction classified, every query upsampled) gives the same frames."""
    objects = [ObjectPrompt(1, 0, points=[(40.0, 30.0)])] if task == "vos" else []
    opts = VideoOptions(task=task, mode="exact", score_threshold=0.0, max_objects=1000, objects=objects)
    head = segmenter.model.panoptic_head
    calls = []
    classify = head.forward_logit
    monkeypatch.setattr(head, "forward_logit", lambda emb: calls.append(1) or classify(emb))
    fast = list(segment_video(segmenter, frames(bundle), opts))
    fast_calls = len(calls)
    monkeypatch.setattr(segmenter, "shortcuts", False)
    assert head.classify_every_layer
    calls.clear()
    plain = list(segment_video(segmenter, frames(bundle), opts))
    layers = len(head.transformer_decoder.layers) + 1
    assert len(calls) == layers * fast_calls  # the plain run did classify every prediction
    assert [r.index for r in fast] == [r.index for r in plain]
    assert sum(len(r.segments) for r in fast) > 0
    for a, b in zip(fast, plain):
        assert [(s.id, s.category, s.score) for s in a.segments] == [(s.id, s.category, s.score) for s in b.segments]
        assert all(np.array_equal(s.mask, t.mask) for s, t in zip(a.segments, b.segments))


def test_vos_prompts_reuse_the_clips_pixel_decoder(bundle, segmenter, monkeypatch):
    """Point and box prompts on a frame are decoded with that frame's slice of the clip's
    pixel-decoder outputs: every frame goes through the pixel decoder once, and the masks are
    those of recomputing it for the prompted frame alone."""
    n = len(bundle.inputs["vid_frames_raw_rgb"])
    h, w = bundle.inputs["vid_frames_raw_rgb"].shape[1:3]
    objects = [ObjectPrompt(1, 0, points=[(w * 0.4, h * 0.5)]),
               ObjectPrompt(2, n - 1, boxes=[(w * 0.1, h * 0.1, w * 0.6, h * 0.7)])]
    opts = VideoOptions(task="vos", mode="exact", objects=objects)
    pd = segmenter.model.panoptic_head.pixel_decoder
    batches = []
    forward = pd.forward
    monkeypatch.setattr(pd, "forward", lambda feats: batches.append(feats[0].shape[0]) or forward(feats))
    reused = list(segment_video(segmenter, frames(bundle), opts))
    assert sum(batches) == n  # no extra pixel-decoder pass for the two prompted frames

    decode_clip = segmenter.decode_clip
    monkeypatch.setattr(segmenter, "decode_clip",
                        lambda feats, t, keep_pixel=False: _without_pixel(decode_clip(feats, t)))
    batches.clear()
    recomputed = list(segment_video(segmenter, frames(bundle), opts))
    assert sum(batches) == n + 2  # the prompted frames were decoded again, alone
    assert sum(len(r.segments) for r in reused) > 0
    for a, b in zip(reused, recomputed):
        assert [s.id for s in a.segments] == [s.id for s in b.segments]
        for s, t in zip(a.segments, b.segments):
            assert (s.mask != t.mask).mean() <= 1e-4


def _without_pixel(out):
    out.pixel = None
    return out
