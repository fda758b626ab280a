"""jsonl, coco-rle and ytvis writers, read back with pycocotools."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from test_io_rle import CLASSES, make_video

from segcli.errors import UsageError
from segcli.io import open_writers
from segcli.io.coco_rle import CocoRleWriter
from segcli.io.jsonl import JsonlWriter
from segcli.io.ytvis import YtvisWriter
from segcli.results import FrameResult, Segment


def _decode(rle: dict) -> np.ndarray:
    assert isinstance(rle["counts"], str)
    return mask_util.decode(rle).astype(bool)


def _write_all(writer, frames):
    for frame in frames:
        writer.write(frame)
    writer.close()


# -- jsonl ------------------------------------------------------------------------------------


def test_jsonl_file(tmp_path):
    info, frames = make_video()
    path = tmp_path / "clip.jsonl"
    _write_all(JsonlWriter(path, info), frames)
    lines = path.read_text().splitlines()
    assert len(lines) == len(frames)
    for frame, line in zip(frames, lines):
        rec = json.loads(line)
        assert list(rec) == ["frame", "pts", "width", "height", "objects"]
        assert rec["frame"] == frame.index and rec["pts"] == pytest.approx(frame.pts)
        assert (rec["width"], rec["height"]) == (37, 24)
        assert [o["id"] for o in rec["objects"]] == [s.id for s in frame.segments]
        for obj, seg in zip(rec["objects"], frame.segments):
            assert set(obj) == {"id", "category_id", "label", "score", "isthing", "bbox", "area", "rle"}
            assert obj["category_id"] == seg.category + 1 and obj["label"] == seg.label
            assert obj["score"] == pytest.approx(seg.score) and obj["isthing"] == seg.isthing
            assert obj["rle"]["size"] == [24, 37]
            assert np.array_equal(_decode(obj["rle"]), seg.mask)
            assert obj["area"] == int(mask_util.area(obj["rle"])) == seg.area
            assert obj["bbox"] == [int(v) for v in mask_util.toBbox(obj["rle"])]


def test_jsonl_stdout_streams_per_line(capsys):
    info, frames = make_video(frames=3)
    (writer,) = open_writers([], None, info)  # no format, no -o: jsonl on stdout
    assert isinstance(writer, JsonlWriter) and writer.target is None
    writer.write(frames[0])
    first = capsys.readouterr().out  # flushed before close
    assert first.count("\n") == 1 and json.loads(first)["frame"] == 0
    writer.write(frames[1])
    writer.write(frames[2])
    writer.close()
    rest = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["frame"] for line in rest] == [1, 2]


# -- coco-rle ---------------------------------------------------------------------------------


def _coco_gt(info, frames) -> COCO:
    anns = []
    for frame in frames:
        for seg in frame.segments:
            m = mask_util.encode(np.asfortranarray(seg.mask, dtype=np.uint8))
            anns.append({"id": len(anns) + 1, "image_id": frame.index, "category_id": seg.category + 1,
                         "segmentation": m, "area": float(mask_util.area(m)),
                         "bbox": list(mask_util.toBbox(m)), "iscrowd": 0})
    gt = COCO()
    gt.dataset = {"images": [{"id": f.index, "width": info.width, "height": info.height} for f in frames],
                  "annotations": anns,
                  "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def test_coco_rle_loads_and_evaluates_with_pycocotools(tmp_path):
    info, frames = make_video()
    path = tmp_path / "clip.coco.json"
    _write_all(CocoRleWriter(path, info), frames)
    results = json.loads(path.read_text())
    expected = [(f, s) for f in frames for s in f.segments]
    assert len(results) == len(expected)
    for res, (frame, seg) in zip(results, expected):
        assert set(res) == {"image_id", "id", "category_id", "score", "segmentation"}
        assert (res["image_id"], res["id"], res["category_id"]) == (frame.index, seg.id, seg.category + 1)
        assert np.array_equal(_decode(res["segmentation"]), seg.mask)

    gt = _coco_gt(info, frames)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(str(path))
        ev = COCOeval(gt, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for ann, (frame, seg) in zip(dt.loadAnns(dt.getAnnIds()), expected):
        assert ann["area"] == seg.area  # mask area (no bbox in the file, see coco_rle.py)
        assert list(ann["bbox"]) == seg.bbox_xywh
    assert ev.stats[0] == pytest.approx(1.0)  # our masks against themselves: AP 1


def test_coco_rle_empty_video_is_an_empty_list(tmp_path):
    info, _ = make_video()
    path = tmp_path / "empty.json"
    CocoRleWriter(path, info).close()
    assert json.loads(path.read_text()) == []


# -- ytvis ------------------------------------------------------------------------------------


def ytvis_load_res(gt: dict, results: list) -> list:
    """What the YouTube-VIS API's loadRes does with a results list (asserts and derived fields)."""
    assert isinstance(results, list)
    video_ids = {v["id"] for v in gt["videos"]}
    assert {r["video_id"] for r in results} <= video_ids, "results for videos not in the GT"
    length = {v["id"]: v["length"] for v in gt["videos"]}
    out = []
    for i, r in enumerate(results):
        assert len(r["segmentations"]) == length[r["video_id"]]
        r = dict(r, id=i + 1, iscrowd=0)
        r["areas"] = [None if s is None else float(mask_util.area(s)) for s in r["segmentations"]]
        r["bboxes"] = [None if s is None else list(mask_util.toBbox(s)) for s in r["segmentations"]]
        out.append(r)
    return out


def _video_iou(dt: dict, gt: dict) -> float:
    """Spatio-temporal mask IoU as YouTube-VIS evaluation computes it."""
    inter = union = 0.0
    for d, g in zip(dt["segmentations"], gt["segmentations"]):
        if d is not None and g is not None:
            i = float(mask_util.area(mask_util.merge([d, g], intersect=True)))
            inter += i
            union += float(mask_util.area(d)) + float(mask_util.area(g)) - i
        elif d is not None:
            union += float(mask_util.area(d))
        elif g is not None:
            union += float(mask_util.area(g))
    return inter / union if union else 0.0


def test_ytvis_layout_and_load(tmp_path):
    info, frames = make_video()
    path = tmp_path / "clip.ytvis.json"
    _write_all(YtvisWriter(path, info), frames)
    results = json.loads(path.read_text())
    assert isinstance(results, list) and len(results) == 3
    for r in results:
        assert list(r) == ["video_id", "category_id", "score", "segmentations"]
        assert r["video_id"] == 1 and len(r["segmentations"]) == len(frames)
    by_cat = {r["category_id"]: r for r in results}
    car = by_cat[2]["segmentations"]
    assert car[0] is None and car[1] is None and all(s is not None for s in car[2:])
    # track score = mean of the per-frame scores where present
    assert by_cat[1]["score"] == pytest.approx(np.mean([0.7 + 0.02 * i for i in range(6)]))
    assert by_cat[2]["score"] == pytest.approx(0.9)

    # ground truth in the YouTube-VIS layout, built from the same masks
    gt_anns = []
    for track_id, cat in [(1, 0), (2, 1), (3, 2)]:
        segs = []
        for f in frames:
            seg = next((s for s in f.segments if s.id == track_id), None)
            rle = None if seg is None else mask_util.encode(np.asfortranarray(seg.mask, dtype=np.uint8))
            segs.append(rle)
        gt_anns.append({"id": track_id, "video_id": 1, "category_id": cat + 1, "segmentations": segs,
                        "iscrowd": 0})
    gt = {"videos": [{"id": 1, "width": 37, "height": 24, "length": len(frames),
                      "file_names": [f"clip/{i:05d}.jpg" for i in range(len(frames))]}],
          "annotations": gt_anns, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}
    loaded = ytvis_load_res(gt, results)
    for r in loaded:
        g = next(a for a in gt_anns if a["category_id"] == r["category_id"])
        assert _video_iou(r, g) == pytest.approx(1.0)
        track = g["id"]
        for f, s, area, box in zip(frames, r["segmentations"], r["areas"], r["bboxes"]):
            seg = next((x for x in f.segments if x.id == track), None)
            if seg is None:
                assert s is None and area is None
            else:
                assert np.array_equal(_decode(s), seg.mask)
                assert area == seg.area and box == seg.bbox_xywh


def test_ytvis_category_mapping_video_id_and_class_changes(tmp_path):
    info, frames = make_video(frames=4)
    frames[3].segments[0] = Segment(1, 1, "car", 0.5, frames[3].segments[0].mask)  # track 1 turns "car"
    frames.append(FrameResult(4, 0.4, 24, 37, [Segment(9, -1, "", 0.4, np.ones((24, 37), bool))]))
    path = tmp_path / "m.json"
    (writer,) = open_writers(["ytvis"], str(path), info, category_ids=[18, 3, 100], video_id=7)
    _write_all(writer, frames)
    results = json.loads(path.read_text())
    keys = [(r["video_id"], r["category_id"]) for r in results]
    assert keys == [(7, 3), (7, 18), (7, 3), (7, 100), (7, 0)]  # sorted by track id, then category id
    dog_as_car, dog = results[0], results[1]
    assert [s is not None for s in dog["segmentations"]] == [True, True, True, False, False]
    assert [s is not None for s in dog_as_car["segmentations"]] == [False, False, False, True, False]
    assert dog_as_car["score"] == pytest.approx(0.5)
    assert results[-1]["segmentations"][:4] == [None] * 4  # class-agnostic: category id 0

    with pytest.raises(UsageError):
        open_writers(["ytvis"], str(tmp_path / "x.json"), info, category_ids=[1, 2])
