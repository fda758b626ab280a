"""davis (indexed PNG) and panoptic (RGB-id PNG + JSON) writers, read back with PIL.

The evaluators' own checks on these files are in test_evaluators.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_io_rle import expected_ids, make_video

from segcli.errors import OutputError, UsageError
from segcli.io import base, open_writers
from segcli.io.davis import DavisWriter
from segcli.io.panoptic import PanopticWriter
from segcli.io.rle import voc_palette_bytes
from segcli.results import FrameResult, Segment

Image = pytest.importorskip("PIL.Image")

VOC_HEAD = bytes([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128])  # indices 0..4


def _pngs(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _read(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "P"
        return np.array(im)


def _remap(ids: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    out = np.zeros(ids.shape, np.int64)
    for track, index in mapping.items():
        out[ids == track] = index
    return out


def test_davis_indexed_pngs(tmp_path):
    info, frames = make_video()  # vps: tracks 1 (dog) and 3 (road) from frame 0, 2 (car) from frame 2
    (writer,) = open_writers(["davis"], str(tmp_path) + "/", info)
    assert writer.target == tmp_path / "clip"  # <out>/<sequence>/<frame>.png
    for f in frames:
        writer.write(f)
    assert not (tmp_path / "clip").exists()  # nothing at the final path before close
    writer.close()
    assert _pngs(tmp_path / "clip") == [f"{i:05d}.png" for i in range(len(frames))]
    mapping = {1: 1, 3: 2, 2: 3}  # first appearance, ties by track id
    for f in frames:
        with Image.open(tmp_path / "clip" / f"{f.index:05d}.png") as im:
            assert im.mode == "P" and im.size == (37, 24)
            palette = bytes(im.getpalette())
            assert palette[:15] == VOC_HEAD
            assert palette == voc_palette_bytes()  # the full 256-colour VOC map
            assert np.array_equal(np.array(im), _remap(expected_ids(f), mapping))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]  # no temp folder left


def _slot_video(ids_per_frame, size=(16, 20)):
    """Frames whose segments have the given track ids (query slots), one disjoint stripe each."""
    h, w = size
    frames = []
    for index, ids in enumerate(ids_per_frame):
        segs = []
        for tid in ids:
            m = np.zeros(size, bool)
            m[:, tid % w] = True
            segs.append(Segment(tid, 0, "dog", 0.5, m))
        frames.append(FrameResult(index, index / 10, h, w, segs))
    return frames


def test_davis_indices_compact_stable_and_match_the_summary(tmp_path):
    info, _ = make_video(task="vis")
    info.width, info.height = 20, 16
    frames = _slot_video([[29, 27], [28, 27], [29, 5], [40]])
    writers = open_writers(["davis", "summary"], str(tmp_path), info)
    for f in frames:
        for w in writers:
            w.write(f)
    for w in writers:
        w.close()
    expected = {27: 1, 29: 2, 28: 3, 5: 4, 40: 5}  # frame 0: 27 < 29; frame 1: 28; frame 2: 5; frame 3: 40
    for f in frames:
        png = _read(tmp_path / "clip" / f"{f.index:05d}.png")
        for seg in f.segments:
            assert set(np.unique(png[seg.mask])) == {expected[seg.id]}
        assert set(np.unique(png)) - {0} == {expected[s.id] for s in f.segments}
    summary = json.loads((tmp_path / "clip.summary.json").read_text())
    assert {t["id"]: t["davis_index"] for t in summary["tracks"]} == expected


def test_davis_vos_keeps_the_given_object_ids(tmp_path):
    info, _ = make_video(task="vos")
    info.width, info.height = 20, 16
    frames = _slot_video([[3], [1, 3], [7]])
    (writer,) = open_writers(["davis"], str(tmp_path), info)
    for f in frames:
        writer.write(f)
    writer.close()
    for f in frames:
        png = _read(tmp_path / "clip" / f"{f.index:05d}.png")
        assert set(np.unique(png)) - {0} == {s.id for s in f.segments}


def test_davis_max_objects_leaves_later_objects_out(tmp_path):
    info, _ = make_video(task="vis")
    info.width, info.height = 20, 16
    frames = _slot_video([[10, 11], [12, 10], [13]])
    hidden = np.zeros((16, 20), bool)
    hidden[:, 10] = True  # object 12 (left out) covers object 10 with a higher score
    frames[1].segments[0] = Segment(12, 0, "dog", 0.99, hidden | frames[1].segments[0].mask)
    notices = []
    writers = open_writers(["davis", "summary"], str(tmp_path), info, davis_max_objects=2, notice=notices.append)
    for f in frames:
        for w in writers:
            w.write(f)
    for w in writers:
        w.close()
    assert len(notices) == 1 and "2 objects" in notices[0] and "12, 13" in notices[0]
    pngs = [_read(tmp_path / "clip" / f"{i:05d}.png") for i in range(3)]
    assert set(np.unique(pngs[0])) == {0, 1, 2}
    assert set(np.unique(pngs[1])) == {0, 1} and (pngs[1][:, 10] == 1).all()  # 10 stays visible
    assert not pngs[2].any()
    summary = json.loads((tmp_path / "clip.summary.json").read_text())
    assert {t["id"]: t["davis_index"] for t in summary["tracks"]} == {10: 1, 11: 2, 12: None, 13: None}
    with pytest.raises(UsageError):
        open_writers(["davis"], str(tmp_path / "x"), info, davis_max_objects=300)


def test_davis_more_than_255_objects(tmp_path):
    info, _ = make_video(task="vis")
    info.width, info.height = 300, 2
    segs = [Segment(1000 + k, 0, "dog", 0.5, np.eye(1, 300, k, dtype=bool).repeat(2, 0)) for k in range(256)]
    frame = FrameResult(0, 0.0, 2, 300, segs)
    writer = DavisWriter(tmp_path / "many", info)
    with pytest.raises(OutputError, match="255"):
        with writer:
            writer.write(frame)
    assert list(tmp_path.iterdir()) == []
    writer = DavisWriter(tmp_path / "many", info, base.WriterOptions(davis_max_objects=255, notice=lambda m: None))
    with writer:
        writer.write(frame)
    png = _read(tmp_path / "many" / "00000.png")
    assert png.max() == 255 and png[0, 255] == 0  # object 256 left out


def test_davis_named_frames_and_big_ids(tmp_path):
    info, frames = make_video(frames=2)
    frames[0].name, frames[1].name = "cat_a", "cat_b"
    writer = DavisWriter(tmp_path / "seq", info)
    for f in frames:
        writer.write(f)
    writer.close()
    assert _pngs(tmp_path / "seq") == ["cat_a.png", "cat_b.png"]

    info, frames = make_video(big_ids=True, task="vos")  # vos: the ids as given, 300 does not fit
    writer = DavisWriter(tmp_path / "big", info)
    with pytest.raises(OutputError, match="255"):
        with writer:
            for f in frames:
                writer.write(f)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]
    info, frames = make_video(big_ids=True)  # vps: compact indices, track id 300 is object 4
    writer = DavisWriter(tmp_path / "big", info)
    with writer:
        for f in frames:
            writer.write(f)
    assert set(np.unique(_read(tmp_path / "big" / "00004.png"))) == {0, 1, 2, 4}


def _check_segments_info(ann, ids, frame, cat_ids):
    info_ids = [s["id"] for s in ann["segments_info"]]
    assert sorted(info_ids) == sorted(set(np.unique(ids)) - {0})
    for s in ann["segments_info"]:
        assert set(s) == {"id", "category_id", "iscrowd", "isthing", "area", "bbox"}
        m = ids == s["id"]
        ys, xs = np.nonzero(m)
        assert s["area"] == int(m.sum())
        assert s["bbox"] == [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        seg = next(x for x in frame.segments if x.id == s["id"])
        assert s["category_id"] == cat_ids[seg.category] and s["isthing"] == int(seg.isthing)
        assert s["iscrowd"] == 0


def _rgb_ids(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        rgb = np.array(im).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def test_panoptic_video_pngs_and_json(tmp_path):
    info, frames = make_video(big_ids=True)
    # segments with no visible pixel (empty, or hidden under a higher score) must not be listed
    frames[4].segments.append(Segment(70000, 0, "dog", 0.1, np.zeros((24, 37), bool)))
    frames[4].segments.append(Segment(8, 0, "dog", 0.01, frames[4].segments[0].mask.copy()))
    (writer,) = open_writers(["panoptic"], str(tmp_path), info, category_ids=[5, 6, 200])
    assert writer.target == tmp_path / "clip_panoptic"
    for f in frames:
        writer.write(f)
    writer.close()

    root = tmp_path / "clip_panoptic"
    assert _pngs(root) == ["pan_pred", "pred.json"]
    pred = json.loads((root / "pred.json").read_text())
    assert list(pred) == ["annotations", "categories"]
    assert pred["categories"] == [
        {"id": 5, "name": "dog", "isthing": 1, "color": pred["categories"][0]["color"]},
        {"id": 6, "name": "car", "isthing": 1, "color": pred["categories"][1]["color"]},
        {"id": 200, "name": "road", "isthing": 0, "color": pred["categories"][2]["color"]},
    ]
    (video,) = pred["annotations"]  # VIPSeg layout: one entry per video, frames inside
    assert video["video_id"] == "clip" and len(video["annotations"]) == len(frames)
    for f, ann in zip(frames, video["annotations"]):
        assert ann["file_name"] == f"{f.index:05d}.png" and ann["image_id"] == f"{f.index:05d}"
        ids = _rgb_ids(root / "pan_pred" / "clip" / ann["file_name"])
        assert np.array_equal(ids, expected_ids(f))
        _check_segments_info(ann, ids, f, [5, 6, 200])
    assert 300 in [s["id"] for s in video["annotations"][4]["segments_info"]]  # ids > 255 survive
    assert {8, 70000}.isdisjoint(s["id"] for s in video["annotations"][4]["segments_info"])


def test_panoptic_images_use_the_coco_layout(tmp_path):
    info, frames = make_video(frames=3, task="image")
    info.name = "photos"
    for f, stem in zip(frames, ["000000000139", "000000000285", "000000000632"]):
        f.name, f.pts = stem, None
    (writer,) = open_writers(["panoptic"], str(tmp_path), info)
    for f in frames:
        writer.write(f)
    writer.close()
    root = tmp_path / "photos_panoptic"
    assert _pngs(root) == ["pred", "pred.json"]
    assert _pngs(root / "pred") == [f"{f.name}.png" for f in frames]
    pred = json.loads((root / "pred.json").read_text())
    assert list(pred) == ["annotations", "categories"]
    assert [a["image_id"] for a in pred["annotations"]] == [139, 285, 632]  # integers, COCO's ids
    for f, ann in zip(frames, pred["annotations"]):
        assert list(ann) == ["image_id", "file_name", "segments_info"] and ann["file_name"] == f"{f.name}.png"
        ids = _rgb_ids(root / "pred" / ann["file_name"])
        assert np.array_equal(ids, expected_ids(f))
        _check_segments_info(ann, ids, f, [1, 2, 3])


def test_panoptic_replaces_an_earlier_segcli_folder_whole(tmp_path):
    info, frames = make_video(frames=3)
    old = tmp_path / "clip_panoptic"
    writer = PanopticWriter(old, info)
    for f in frames[:1]:
        writer.write(f)
    writer.close()
    (old / "pan_pred" / "clip" / "00000.png").write_bytes(b"old")  # (changed files are segcli's still)
    writer = PanopticWriter(old, info)
    for f in frames:
        writer.write(f)
    assert (old / "pan_pred" / "clip" / "00000.png").read_bytes() == b"old"  # untouched until close
    writer.close()
    assert _pngs(old / "pan_pred" / "clip") == ["00000.png", "00001.png", "00002.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_panoptic"]


def test_empty_frame_gives_background_only(tmp_path):
    info, _ = make_video()
    writer = DavisWriter(tmp_path / "e", info)
    writer.write(FrameResult(0, 0.0, 24, 37, []))
    writer.close()
    with Image.open(tmp_path / "e" / "00000.png") as im:
        assert im.mode == "P" and not np.array(im).any()
