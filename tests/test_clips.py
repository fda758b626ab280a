"""segcli.pipeline.clips: the official video_split, the clip-size rule, and streaming splitters."""

from __future__ import annotations

import pytest

from segcli.pipeline.clips import (
    OnlineClipSplitter,
    clip_ranges,
    clip_ranges_from_config,
    iter_clips,
    iter_fixed_clips,
    video_split,
)


@pytest.mark.parametrize(
    "total,size,ends",
    [  # every row of the table in spec §7.2 (from running the official function)
        (15, 3, [3, 6, 9, 12, 15]),
        (16, 3, [3, 6, 9, 12, 14, 16]),
        (10, 3, [3, 6, 8, 10]),
        (4, 3, [3, 4]),
        (1, 3, [1]),
        (2, 3, [2]),
        (17, 5, [5, 9, 13, 17]),
        (16, 5, [5, 10, 15, 16]),
        (21, 5, [5, 9, 13, 17, 21]),
        (7, 2, [2, 4, 6, 7]),
    ],
)
def test_video_split_table(total, size, ends):
    assert video_split(total, size) == ends


def test_video_split_overlap_and_errors():
    # total' = 9, size' = 2 -> ends 2,4,6,8,9 (diff 1 < 5: the last end moves by one) -> +1 each
    assert video_split(10, 3, overlap=1) == [3, 5, 7, 9, 10]
    assert clip_ranges(10, 3, overlap=1) == [(0, 3), (2, 5), (4, 7), (6, 9), (8, 10)]
    with pytest.raises(ValueError):
        video_split(0, 3)
    with pytest.raises(ValueError):
        video_split(5, 2, overlap=2)


def test_golden_clip_ranges(bundle):
    det = bundle.config["detector"]
    total = bundle.inputs["vid_frames_raw_rgb"].shape[0]
    expected = [tuple(int(v) for v in r) for r in bundle.outputs["vid_clip_frame_ranges"]]
    assert clip_ranges_from_config(total, det) == expected
    assert (
        clip_ranges(
            total, det["clip_size"], det["clip_size_small"], det["small_clip_thr"], det["whole_clip_thr"]
        )
        == expected
    )


def test_clip_size_rule():
    # YouTube-VIS config: clip_size 5, clip_size_small 3, small_clip_thr 15
    assert clip_ranges(15, 5, 3, 15) == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15)]  # <= thr: small clips
    assert clip_ranges(16, 5, 3, 15) == [(0, 5), (5, 10), (10, 15), (15, 16)]
    assert clip_ranges(8, 5, 3, 15, whole_clip_thr=8) == [(0, 8)]
    assert clip_ranges(9, 5, 3, 15, whole_clip_thr=8) == [(0, 3), (3, 6), (6, 9)]


CONFIGS = [  # (clip_size, clip_size_small, small_clip_thr, whole_clip_thr): demo, VIPSeg, YTVIS, odd ones
    (3, 3, 10, 0),
    (2, 3, 15, 0),
    (5, 3, 15, 0),
    (4, 2, 0, 0),
    (6, 3, 12, 5),
    (1, 1, 0, 0),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_online_exact_splitter_reproduces_clip_ranges(cfg):
    clip_size, small, thr, whole = cfg
    bound = max(thr, whole, (clip_size + 1) * clip_size) + 1
    for total in range(1, 70):
        splitter = OnlineClipSplitter(clip_size, small, thr, whole, exact=True)
        clips = []
        max_pending = 0
        for i in range(total):
            clips += splitter.push(i)
            max_pending = max(max_pending, splitter.pending)
        clips += splitter.finish()
        assert [(c.start, c.end) for c in clips] == clip_ranges(total, clip_size, small, thr, whole), total
        assert [x for c in clips for x in c.items] == list(range(total))
        assert max_pending <= bound  # memory does not grow with the video length


def test_online_exact_releases_clips_early():
    splitter = OnlineClipSplitter(3, 3, 10, 0)
    released = []
    for i in range(40):
        released += splitter.push(i)
    assert len(released) >= 10  # most clips leave long before the end of the stream
    assert splitter.pending <= 13


def test_fixed_clips_for_live_input():
    clips = list(iter_fixed_clips(range(11), 4))
    assert [(c.start, c.end, len(c)) for c in clips] == [(0, 4, 4), (4, 8, 4), (8, 11, 3)]
    assert clips[1].items == [4, 5, 6, 7]
    assert list(iter_fixed_clips([], 4)) == []
    # a fixed clip is released as soon as it is full
    splitter = OnlineClipSplitter(2, exact=False)
    assert splitter.push("a") == []
    assert [c.items for c in splitter.push("b")] == [["a", "b"]]
    assert [c.items for c in splitter.finish()] == []


def test_iter_clips_generator_matches_official():
    clips = list(iter_clips(iter(range(16)), 3, 3, 10))
    assert [(c.start, c.end) for c in clips] == clip_ranges(16, 3, 3, 10)
    with pytest.raises(RuntimeError):
        splitter = OnlineClipSplitter(3)
        splitter.finish()
        splitter.push(1)
