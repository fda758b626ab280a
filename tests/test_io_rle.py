"""segcli.io.rle helpers, plus the synthetic video the other test_io_* files import.

``make_video`` builds a small deterministic clip: a "dog" box (track 1) moving right, a "car"
disc (track 2) absent on the first two frames and overlapping the dog later with a higher
score, and a "road" stuff band (track 3).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

from segcli.io import rle
from segcli.results import FrameResult, Segment, VideoInfo

CLASSES = ["dog", "car", "road"]


def make_info(width=37, height=24, frames=6, name="clip", fps=10.0, task="vps") -> VideoInfo:
    return VideoInfo(name=name, width=width, height=height, fps=fps, num_frames=frames, classes=list(CLASSES),
                     num_things=2, task=task)


def make_video(width=37, height=24, frames=6, big_ids=False, with_image=True, start=0, task="vps"):
    """-> (info, [FrameResult]); with big_ids, track 2 is id 300 from frame 3 on; ``start``:
    the source frame number of the first result (as with --start), pts = index / 10."""
    info = make_info(width, height, frames, task=task)
    yy, xx = np.mgrid[:height, :width]
    out = []
    for i in range(frames):
        dog = np.zeros((height, width), bool)
        dog[3:11, 2 + 2 * i:12 + 2 * i] = True
        road = np.zeros((height, width), bool)
        road[height - 6:, :] = True
        segs = [Segment(1, 0, "dog", 0.7 + 0.02 * i, dog, True)]
        if i >= 2:
            car = (yy - 9) ** 2 + (xx - (26 - 2 * i)) ** 2 <= 16
            car_id = 300 if big_ids and i >= 3 else 2
            segs.append(Segment(car_id, 1, "car", 0.9, car, True))
        segs.append(Segment(3, 2, "road", 0.6, road, False))
        image = None
        if with_image:
            image = np.zeros((height, width, 3), np.uint8)
            image[..., 0] = (xx * 255 // max(width - 1, 1)).astype(np.uint8)
            image[..., 1] = (yy * 255 // max(height - 1, 1)).astype(np.uint8)
            image[..., 2] = (40 * i) % 256
        out.append(FrameResult(index=start + i, pts=(start + i) / 10, height=height, width=width, segments=segs,
                               image=image))
    return info, out


def expected_ids(frame: FrameResult) -> np.ndarray:
    """Reference id map: higher score on top (written independently of rle.id_map)."""
    ids = np.zeros((frame.height, frame.width), np.int64)
    best = np.full((frame.height, frame.width), -np.inf)
    for seg in frame.segments:
        take = seg.mask & (seg.score > best)
        ids[take] = seg.id
        best[take] = seg.score
    return ids


# ---------------------------------------------------------------------------------------------


def test_encode_matches_the_documented_example():
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    enc = rle.encode_mask(mask)
    assert enc == {"size": [4, 5], "counts": "5220003"}
    assert isinstance(enc["counts"], str)
    assert json.loads(json.dumps(enc)) == enc
    assert mask_util.area(enc) == 6
    assert list(mask_util.toBbox(enc)) == [1, 1, 3, 2]
    assert rle.rle_area(enc) == 6 and rle.rle_bbox(enc) == [1.0, 1.0, 3.0, 2.0]


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (24, 37), (50, 64)])
def test_round_trip_through_pycocotools(shape):
    rng = np.random.default_rng(sum(shape))
    masks = [rng.random(shape) > 0.5, np.zeros(shape, bool), np.ones(shape, bool),
             (rng.random(shape[::-1]) > 0.7).T,  # column-major, as the GPU path hands masks over
             (rng.random((shape[0], 2 * shape[1])) > 0.5)[:, ::2],  # strided
             (rng.random(shape) > 0.5).astype(np.uint8)]  # 0/1 bytes
    for m in masks:
        enc = rle.encode_mask(m)
        assert enc["size"] == list(shape)
        back = mask_util.decode({"size": enc["size"], "counts": enc["counts"].encode()})
        assert back.dtype == np.uint8 and np.array_equal(back.astype(bool), m)
        assert np.array_equal(rle.decode_rle(enc), m.astype(bool))
        assert rle.rle_area(enc) == int(m.sum())


def test_decode_accepts_bytes_and_uncompressed_counts():
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    assert np.array_equal(rle.decode_rle({"size": [4, 5], "counts": b"5220003"}), mask)
    # uncompressed: column-major runs starting with background
    assert np.array_equal(rle.decode_rle({"size": [4, 5], "counts": [5, 2, 2, 2, 2, 2, 5]}), mask)


def test_voc_palette():
    pal = rle.voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    expected = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
                (128, 128, 128), (64, 0, 0), (192, 0, 0)]
    assert [tuple(int(v) for v in c) for c in pal[:10]] == expected
    assert tuple(pal[255]) == (224, 224, 192)
    assert rle.voc_palette_bytes()[:6] == bytes([0, 0, 0, 128, 0, 0]) and len(rle.voc_palette_bytes()) == 768


def test_id_rgb_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 1 + 2 * 256 + 3 * 65536, 256**3 - 1]], np.int64)
    rgb = rle.id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    assert tuple(rgb[1, 2]) == (1, 2, 3)
    assert np.array_equal(rle.rgb_to_id(rgb), ids)
    with pytest.raises(ValueError):
        rle.id_to_rgb(np.array([256**3]))


def test_id_map_higher_score_on_top_and_dtype():
    _, frames = make_video()
    for frame in frames:
        ids = rle.id_map(frame)
        assert ids.dtype == np.uint8
        assert np.array_equal(ids, expected_ids(frame))
    _, frames = make_video(big_ids=True)
    assert rle.id_map(frames[4]).dtype == np.uint16
    with pytest.raises(ValueError):
        rle.id_map(frames[4], max_id=255)


def test_id_colors_are_deterministic_and_distinct():
    colors = [rle.id_color(i) for i in range(1, 21)]
    assert colors == [rle.id_color(i) for i in range(1, 21)]
    assert len(set(colors)) == 20
    assert all(0 <= c <= 255 for rgb in colors for c in rgb)


# -- each mask encoded once, each id map painted once (issue "speed") -------------------------


def test_segment_caches_area_box_and_rle():
    mask = np.zeros((6, 7), bool)
    mask[1:4, 2:6] = True
    seg = Segment(1, 0, "dog", 0.5, mask)
    assert (seg.area, seg.bbox_xywh) == (12, [2, 1, 4, 3])
    assert seg.rle == rle.encode_mask(mask) and seg.rle is seg.rle
    box = seg.bbox_xywh
    box[0] = 99  # callers get their own list
    assert seg.bbox_xywh == [2, 1, 4, 3]
    seg.mask = np.ones((6, 7), bool)  # a new mask: recomputed
    assert (seg.area, seg.bbox_xywh, rle.rle_area(seg.rle)) == (42, [0, 0, 7, 6], 42)
    assert Segment(1, 0, "dog", 0.5, mask, True) == Segment(1, 0, "dog", 0.5, mask)  # fields only


def test_writers_share_one_encoding_and_one_id_map_per_frame(tmp_path, monkeypatch):
    import segcli.results as results
    from segcli.io import FORMATS, close_writers, open_writers

    encoded, painted = [], []
    real_encode, real_order = rle.encode_mask, results.paint_order
    monkeypatch.setattr(rle, "encode_mask", lambda m: encoded.append(1) or real_encode(m))
    monkeypatch.setattr(results, "paint_order", lambda segs: painted.append(1) or real_order(segs))
    info, frames = make_video(frames=4)
    reference = [[(s.area, s.bbox_xywh, real_encode(s.mask)) for s in f.segments] for f in frames]
    reference_ids = [expected_ids(f) for f in frames]
    encoded.clear()
    writers = open_writers(list(FORMATS), str(tmp_path), info)
    for f in frames:
        for w in writers:
            w.write(f)
    close_writers(writers)
    assert len(encoded) == sum(len(f.segments) for f in frames)  # jsonl, coco-rle and ytvis share it
    assert len(painted) == len(frames)  # davis, panoptic, mask-video and overlay share it
    for f, ref, ids in zip(frames, reference, reference_ids):
        assert [(s.area, s.bbox_xywh, s.rle) for s in f.segments] == ref  # the same values as before
        assert np.array_equal(f.id_map(), ids) and not f.id_map().flags.writeable
    f = frames[0]
    f.segments.append(Segment(9, 0, "dog", 0.99, np.ones((24, 37), bool)))  # changed segments: repainted
    assert (f.id_map() == 9).all()
