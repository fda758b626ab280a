"""The streaming video engine. On the golden frames, exact mode reproduces the official video results
(golden bundle); streaming, the auto policy, vos re-prompting and the exact shortcuts are checked
on the synthetic model (no ../shared needed)."""

from __future__ import annotations

import numpy as np
import pytest

from segcli.pipeline.reader import Frame
from segcli.pipeline.video import ObjectPrompt, VideoOptions, segment_video


def label_map(result, shape, void):
    out = np.full(shape, void)
    for s in result.segments:
        out[s.mask] = s.category
    return out


def official_labels(bundle, t):
    pan = bundle.outputs["vid_pan_seg"][t]
    void = bundle.config["classes"]["num_classes"]
    return np.where(pan == void, void, pan % bundle.config["INSTANCE_OFFSET"])


def same_results(a, b) -> bool:
    return [r.index for r in a] == [r.index for r in b] and all(
        [(s.id, s.category, s.score) for s in x.segments] == [(s.id, s.category, s.score) for s in y.segments]
        and all(np.array_equal(s.mask, t.mask) for s, t in zip(x.segments, y.segments)) for x, y in zip(a, b))


# ---- golden numerics -------------------------------------------------------------------------
@pytest.mark.xdist_group("golden_runs")  # one worker computes the shared runs (tests/conftest.py)
def test_exact_vps_matches_official(bundle, golden_runs):
    void = bundle.config["classes"]["num_classes"]
    results = golden_runs.get(**golden_runs.EXACT_VPS)
    assert [r.index for r in results] == list(range(len(bundle.inputs["vid_frames_raw_rgb"])))
    for t, r in enumerate(results):
        ref = official_labels(bundle, t)
        assert (label_map(r, ref.shape, void) != ref).mean() <= 1e-4
        # things keep one id per query slot in every frame
        assert all(1 <= s.id <= bundle.config["head"]["num_queries"] for s in r.segments)


@pytest.mark.xdist_group("golden_runs")  # one worker computes the shared runs (tests/conftest.py)
def test_exact_vis_tracks_are_official_tubes(bundle, golden_runs):
    out = bundle.outputs
    results = golden_runs.get(**golden_runs.EXACT_VIS)
    ref_masks, ref_labels = out["vid_ins_masks"], out["vid_ins_labels"]
    tracks = {}
    for t, r in enumerate(results):
        for s in r.segments:
            tracks.setdefault((s.id, s.category), {})[t] = s.mask
    assert tracks
    for (_, label), per_frame in tracks.items():
        candidates = [k for k in range(len(ref_labels)) if ref_labels[k] == label]
        assert any(all((ref_masks[t, k] != m).mean() <= 1e-4 for t, m in per_frame.items()) for k in candidates)


def test_online_decides_the_last_clip_with_the_full_average(bundle, golden_segmenter):
    """On the 7 golden frames the last clip is decided online with the average of every clip, as
    the official (whole-video) decision is."""
    void = bundle.config["classes"]["num_classes"]
    short = list(segment_video(golden_segmenter, bundle.frames(), VideoOptions(task="vps", mode="online")))
    last_start = int(bundle.outputs["vid_clip_frame_ranges"][-1][0])
    assert last_start < len(short)
    for t in range(last_start, len(short)):
        ref = official_labels(bundle, t)
        assert (label_map(short[t], ref.shape, void) != ref).mean() <= 1e-4


def test_vos_exact_matches_official(bundle, golden_segmenter):
    inp, out = bundle.inputs, bundle.outputs
    objects = [ObjectPrompt(int(i), 0, mask=m) for i, m in zip(inp["vos_instance_ids"], inp["vos_first_frame_masks"])]
    results = list(segment_video(golden_segmenter, bundle.frames(),
                                 VideoOptions(task="vos", mode="exact", objects=objects)))
    for t, r in enumerate(results):
        seg = np.zeros(out["vos_seg_maps"][t].shape, np.int32)
        for s in r.segments:
            seg[s.mask] = s.id
        assert (seg != out["vos_seg_maps"][t]).mean() <= 1e-4


# ---- the synthetic model -----------------------------------------------------------------------
def test_online_streams_with_running_state(segmenter, shapes_frames):
    cfg = segmenter.cfg.video
    held = max(cfg.small_clip_thr, cfg.whole_clip_thr, (cfg.clip_size + 1) * cfg.clip_size)
    base = shapes_frames()
    # longer than the exact clip splitter holds back (`held` frames), so clips can leave early
    feed = [Frame(i, i / 24, base[i % len(base)].rgb.copy(), f"{i:05d}") for i in range(held + 4)]
    consumed = []

    def reader():
        for f in feed:
            consumed.append(f.index)
            yield f

    opts = VideoOptions(task="vps", mode="online", scale=(96, 64))
    stream = segment_video(segmenter, reader(), opts)
    first = next(stream)
    assert first.index == 0 and len(consumed) < len(feed)  # results flow before the video is read
    results = [first, *stream]
    assert [r.index for r in results] == list(range(len(feed)))
    assert sum(len(r.segments) for r in results) > 0


def test_auto_switches_to_online_over_budget(segmenter, shapes_frames):
    notices = []
    opts = VideoOptions(task="vps", mode="auto", exact_budget_mb=0.01, scale=(96, 64))
    results = list(segment_video(segmenter, shapes_frames(7), opts, notice=notices.append))
    assert [r.index for r in results] == list(range(7))
    assert len(notices) == 1 and "online" in notices[0]
    # under the budget it stays exact: the same results as mode="exact", and no notice
    quiet = []
    exact = list(segment_video(segmenter, shapes_frames(7), VideoOptions(task="vps", mode="exact", scale=(96, 64))))
    auto = list(segment_video(segmenter, shapes_frames(7), VideoOptions(task="vps", mode="auto", scale=(96, 64)),
                              notice=quiet.append))
    assert not quiet and same_results(auto, exact)


def test_vos_correction_rematches_from_that_frame(segmenter, shapes_frames):
    first = np.zeros((192, 320), bool)
    first[:96, :160] = True  # top-left quadrant on frame 0
    later = np.zeros_like(first)
    later[96:, :160] = True  # bottom-left quadrant on frame 4
    objects = [ObjectPrompt(1, 0, mask=first), ObjectPrompt(1, 4, mask=later)]
    state_a = list(segment_video(segmenter, shapes_frames(7),
                                 VideoOptions(task="vos", mode="exact", objects=objects[:1])))
    state_b = list(segment_video(segmenter, shapes_frames(7), VideoOptions(task="vos", mode="exact", objects=objects)))
    assert same_results(state_a[:4], state_b[:4])  # before the correction nothing changes
    for r in state_a + state_b:  # object 1 is reported on every frame, before and after the correction
        assert [s.id for s in r.segments] == [1], r.index
    # from frame 4 on it follows the proposal matched to the new mask: another one than before
    for a, b in zip(state_a[4:], state_b[4:]):
        assert not np.array_equal(a.segments[0].mask, b.segments[0].mask), a.index
    iou = [(b.segments[0].mask & later).sum() / (b.segments[0].mask | later).sum() for b in state_b[4:5]]
    iou_before = [(a.segments[0].mask & later).sum() / (a.segments[0].mask | later).sum() for a in state_a[4:5]]
    assert iou[0] > iou_before[0]  # the re-matched proposal fits the correction better


def test_vps_score_threshold_drops_segments(segmenter, shapes_frames):
    kept = list(segment_video(segmenter, shapes_frames(3), VideoOptions(task="vps", scale=(96, 64))))
    assert any(r.segments for r in kept)
    results = list(segment_video(segmenter, shapes_frames(3),
                                 VideoOptions(task="vps", score_threshold=1.0, scale=(96, 64))))
    assert len(results) == 3 and not any(r.segments for r in results)


@pytest.mark.parametrize("task", ["vis", "vps", "vos"])
def test_exact_shortcuts_change_no_result(segmenter, shapes_frames, monkeypatch, task):
    """Classifying only the last prediction and upsampling only kept queries are exact: the
    official work (every prediction classified, every query upsampled) gives the same frames."""
    objects = [ObjectPrompt(1, 0, points=[(100.0, 90.0)])] if task == "vos" else []
    opts = VideoOptions(task=task, mode="exact", score_threshold=0.0, max_objects=1000, objects=objects)
    head = segmenter.model.panoptic_head
    calls = []
    classify = head.forward_logit
    monkeypatch.setattr(head, "forward_logit", lambda emb: calls.append(1) or classify(emb))
    fast = list(segment_video(segmenter, shapes_frames(6), opts))
    fast_calls = len(calls)
    monkeypatch.setattr(segmenter, "shortcuts", False)
    calls.clear()
    opts.objects = list(objects)
    plain = list(segment_video(segmenter, shapes_frames(6), opts))
    layers = len(head.transformer_decoder.layers) + 1
    assert fast_calls > 0 and len(calls) == layers * fast_calls  # the plain run did classify every prediction
    assert sum(len(r.segments) for r in fast) > 0
    assert same_results(fast, plain)


def test_vos_prompts_reuse_the_clips_pixel_decoder(segmenter, shapes_frames, monkeypatch):
    """Point and box prompts on a frame are decoded with that frame's slice of the clip's
    pixel-decoder outputs: every frame goes through the pixel decoder once, and the masks are
    those of recomputing it for the prompted frame alone."""
    n = 6
    objects = [ObjectPrompt(1, 0, points=[(100.0, 90.0)]), ObjectPrompt(2, n - 1, boxes=[(30.0, 20.0, 190.0, 130.0)])]
    pd = segmenter.model.panoptic_head.pixel_decoder
    batches = []
    forward = pd.forward
    monkeypatch.setattr(pd, "forward", lambda feats: batches.append(feats[0].shape[0]) or forward(feats))
    reused = list(segment_video(segmenter, shapes_frames(n), VideoOptions(task="vos", mode="exact",
                                                                           objects=list(objects))))
    assert sum(batches) == n  # no extra pixel-decoder pass for the two prompted frames

    decode_clip = segmenter.decode_clip
    monkeypatch.setattr(segmenter, "decode_clip",
                        lambda feats, t, keep_pixel=False: _without_pixel(decode_clip(feats, t)))
    batches.clear()
    recomputed = list(segment_video(segmenter, shapes_frames(n), VideoOptions(task="vos", mode="exact",
                                                                               objects=list(objects))))
    assert sum(batches) == n + 2  # the prompted frames were decoded again, alone
    assert {s.id for s in reused[-1].segments} == {1, 2}
    for a, b in zip(reused, recomputed):
        assert [s.id for s in a.segments] == [s.id for s in b.segments]
        for s, t in zip(a.segments, b.segments):
            assert (s.mask != t.mask).mean() <= 1e-4


def _without_pixel(out):
    out.pixel = None
    return out
