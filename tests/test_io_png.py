"""davis (indexed PNG) and panoptic (RGB-id PNG + JSON) writers, read back with PIL."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_io_rle import expected_ids, make_video

from segcli.errors import OutputError
from segcli.io import open_writers
from segcli.io.davis import DavisWriter
from segcli.io.panoptic import PanopticWriter
from segcli.io.rle import voc_palette_bytes
from segcli.results import FrameResult, Segment

Image = pytest.importorskip("PIL.Image")

VOC_HEAD = bytes([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128])  # indices 0..4


def test_davis_indexed_pngs(tmp_path):
    info, frames = make_video()
    (writer,) = open_writers(["davis"], str(tmp_path) + "/", info)
    assert writer.target == tmp_path / "clip"  # <out>/<sequence>/<frame>.png
    for f in frames:
        writer.write(f)
    assert not (tmp_path / "clip").exists()  # nothing at the final path before close
    writer.close()
    files = sorted(p.name for p in (tmp_path / "clip").iterdir())
    assert files == [f"{i:05d}.png" for i in range(len(frames))]
    for f in frames:
        with Image.open(tmp_path / "clip" / f"{f.index:05d}.png") as im:
            assert im.mode == "P" and im.size == (37, 24)
            palette = bytes(im.getpalette())
            assert palette[:15] == VOC_HEAD
            assert palette == voc_palette_bytes()  # the full 256-colour VOC map
            assert np.array_equal(np.array(im), expected_ids(f))  # indices = object ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]  # no temp folder left


def test_davis_named_frames_and_big_ids(tmp_path):
    info, frames = make_video(frames=2)
    frames[0].name, frames[1].name = "cat_a", "cat_b"
    writer = DavisWriter(tmp_path / "seq", info)
    for f in frames:
        writer.write(f)
    writer.close()
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == ["cat_a.png", "cat_b.png"]

    info, frames = make_video(big_ids=True)
    writer = DavisWriter(tmp_path / "big", info)
    with pytest.raises(OutputError, match="255"):
        with writer:
            for f in frames:
                writer.write(f)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


def test_panoptic_pngs_and_json(tmp_path):
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
    pred = json.loads((root / "pred.json").read_text())
    assert list(pred) == ["annotations", "categories"]
    assert pred["categories"] == [
        {"id": 5, "name": "dog", "isthing": 1, "color": pred["categories"][0]["color"]},
        {"id": 6, "name": "car", "isthing": 1, "color": pred["categories"][1]["color"]},
        {"id": 200, "name": "road", "isthing": 0, "color": pred["categories"][2]["color"]},
    ]
    (video,) = pred["annotations"]
    assert video["video_id"] == "clip" and len(video["annotations"]) == len(frames)
    for f, ann in zip(frames, video["annotations"]):
        assert ann["file_name"] == f"{f.index:05d}.png"
        with Image.open(root / "pan_pred" / "clip" / ann["file_name"]) as im:
            assert im.mode == "RGB"
            rgb = np.array(im).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        assert np.array_equal(ids, expected_ids(f))
        info_ids = [s["id"] for s in ann["segments_info"]]
        assert sorted(info_ids) == sorted(set(np.unique(ids)) - {0})
        for s in ann["segments_info"]:
            assert set(s) == {"id", "category_id", "iscrowd", "isthing", "area", "bbox"}
            m = ids == s["id"]
            ys, xs = np.nonzero(m)
            assert s["area"] == int(m.sum())
            assert s["bbox"] == [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
            seg = next(x for x in f.segments if x.id == s["id"])
            assert s["category_id"] == [5, 6, 200][seg.category] and s["isthing"] == int(seg.isthing)
            assert s["iscrowd"] == 0
    assert 300 in [s["id"] for s in video["annotations"][4]["segments_info"]]  # ids > 255 survive
    assert {8, 70000}.isdisjoint(s["id"] for s in video["annotations"][4]["segments_info"])


def test_panoptic_replaces_an_earlier_folder_whole(tmp_path):
    info, frames = make_video(frames=3)
    old = tmp_path / "clip_panoptic"
    (old / "pan_pred" / "clip").mkdir(parents=True)
    (old / "pan_pred" / "clip" / "99999.png").write_bytes(b"old")
    writer = PanopticWriter(old, info)
    for f in frames:
        writer.write(f)
    assert (old / "pan_pred" / "clip" / "99999.png").read_bytes() == b"old"  # untouched until close
    writer.close()
    assert sorted(p.name for p in (old / "pan_pred" / "clip").iterdir()) == ["00000.png", "00001.png",
                                                                            "00002.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_panoptic"]


def test_empty_frame_gives_background_only(tmp_path):
    info, _ = make_video()
    writer = DavisWriter(tmp_path / "e", info)
    writer.write(FrameResult(0, 0.0, 24, 37, []))
    writer.close()
    with Image.open(tmp_path / "e" / "00000.png") as im:
        assert im.mode == "P" and not np.array(im).any()
