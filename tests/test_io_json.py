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
from test_io_rle import CLASSES, make_info, make_video

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
#
# COCO's evaluator contract (pycocotools coco.py COCO.loadRes / cocoeval.py COCOeval):
# - the results file is a JSON list; loadRes asserts
#   ``set(annsImgIds) == (set(annsImgIds) & set(self.getImgIds()))``: every ``image_id`` must be an
#   (integer) id of the ground truth's ``images``;
# - a result with ``segmentation`` gets ``area = maskUtils.area(segm)`` and ``bbox`` from
#   ``maskUtils.toBbox`` (unless it has its own ``bbox``), ``counts`` may be a str;
# - COCOeval matches results and GT per (image_id, category_id) by mask IoU.
# The ground truth below is painted in numpy and encoded by the test itself (uncompressed,
# column-major runs), so nothing of the writer under test is in it.


def paint(shape, h, w) -> np.ndarray:
    """("box", y0, y1, x0, x1) or ("disc", cy, cx, r) -> bool HxW."""
    yy, xx = np.mgrid[:h, :w]
    if shape[0] == "box":
        _, y0, y1, x0, x1 = shape
        return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
    _, cy, cx, r = shape
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: run lengths over the column-major pixels, starting with zeros."""
    flat = mask.T.reshape(-1).astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    total = sum(counts)
    if total != mask.size:  # the sentinel run
        counts[-1] -= total - mask.size
    counts = [c for i, c in enumerate(counts) if c > 0 or i == 0]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


# image file name, COCO id, (height, width), objects: (shape, category name, score)
IMAGES = [
    ("000000000139.jpg", 139, (40, 50), [(("box", 4, 20, 5, 30), "dog", 0.9), (("disc", 28, 35, 8), "car", 0.8)]),
    ("000000000285.jpg", 285, (36, 44), [(("disc", 15, 15, 10), "dog", 0.7)]),
    ("000000000632.jpg", 632, (40, 50), [(("box", 20, 38, 2, 48), "road", 0.6), (("box", 2, 12, 30, 45), "car", 0.95)]),
]
CAT_IDS = {"dog": 18, "car": 3, "road": 149}  # COCO's ids, not the vocabulary's positions


def coco_ground_truth(images=IMAGES, perturb=False) -> dict:
    anns = []
    for k, (file_name, image_id, (h, w), objects) in enumerate(images):
        for j, (shape, name, _) in enumerate(objects):
            if perturb and k == 0 and j == 0:
                shape = ("box", 4, 20, 14, 39)  # moved 9 px: IoU 16/34 < 0.5
            if perturb and k == 2 and j == 1:
                name = "dog"  # another class
            m = paint(shape, h, w)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": CAT_IDS[name],
                         "segmentation": uncompressed_rle(m), "area": int(m.sum()), "iscrowd": 0,
                         "bbox": [float(v) for v in _box(m)]})
    return {"images": [{"id": i, "file_name": f, "height": hw[0], "width": hw[1]} for f, i, hw, _ in images],
            "annotations": anns, "categories": [{"id": v, "name": k} for k, v in CAT_IDS.items()]}


def _box(m):
    ys, xs = np.nonzero(m)
    return [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def image_results(images=IMAGES, stems=None) -> tuple:
    """(info, frames) as `segcli image` gives them: index = position, name = file stem."""
    classes = list(CAT_IDS)
    info = make_info(50, 40, task="image")
    info.classes, info.num_things, info.name = classes, 2, "images"
    frames = []
    for index, (file_name, _, (h, w), objects) in enumerate(images):
        segs = [Segment(j + 1, classes.index(name), name, score, paint(shape, h, w), name != "road")
                for j, (shape, name, score) in enumerate(objects)]
        stem = file_name.rsplit(".", 1)[0] if stems is None else stems[index]
        frames.append(FrameResult(index, None, h, w, segs, None, stem))
    return info, frames


def coco_evaluate(gt_path, results_path) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(results_path))  # the real loadRes: asserts the image ids
        ev = COCOeval(gt, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def test_coco_rle_scores_against_an_independent_ground_truth(tmp_path):
    gt_path = tmp_path / "instances.json"
    gt_path.write_text(json.dumps(coco_ground_truth()))
    info, frames = image_results()
    path = tmp_path / "res.json"
    (writer,) = open_writers(["coco-rle"], str(path), info, category_ids=list(CAT_IDS.values()))
    _write_all(writer, frames)
    results = json.loads(path.read_text())
    assert [r["image_id"] for r in results] == [139, 139, 285, 632, 632]  # numeric stems -> COCO ids
    for r in results:
        assert set(r) == {"image_id", "id", "category_id", "score", "segmentation"}
        assert isinstance(r["image_id"], int) and isinstance(r["segmentation"]["counts"], str)
    assert coco_evaluate(gt_path, path) == pytest.approx(1.0)

    perturbed = tmp_path / "perturbed.json"  # one object moved, one relabelled
    perturbed.write_text(json.dumps(coco_ground_truth(perturb=True)))
    assert coco_evaluate(perturbed, path) < 0.8

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(path))
    for ann, (frame, seg) in zip(dt.loadAnns(dt.getAnnIds()), [(f, s) for f in frames for s in f.segments]):
        assert ann["area"] == seg.area  # mask area (no bbox in the file, see coco_rle.py)
        assert list(ann["bbox"]) == seg.bbox_xywh

    # the old ids (positions 0, 1, 2) are refused by loadRes itself: the check above is live
    wrong = tmp_path / "positions.json"
    wrong.write_text(json.dumps([dict(r, image_id=[139, 285, 632].index(r["image_id"])) for r in results]))
    with pytest.raises(AssertionError, match="do not correspond"):
        coco_evaluate(gt_path, wrong)


def test_coco_rle_image_ids_from_a_dataset_json(tmp_path):
    named = [("cat.jpg", 42, *IMAGES[0][2:]), ("sub/sofa.png", 7, *IMAGES[1][2:])]
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(coco_ground_truth(named)))
    info, frames = image_results(named, stems=["cat", "sofa"])
    path = tmp_path / "res.json"
    (writer,) = open_writers(["coco-rle"], str(path), info, dataset=str(gt_path))  # category ids too
    _write_all(writer, frames)
    results = json.loads(path.read_text())
    assert [r["image_id"] for r in results] == [42, 42, 7]
    assert [r["category_id"] for r in results] == [18, 3, 18]
    assert coco_evaluate(gt_path, path) == pytest.approx(1.0)

    (writer,) = open_writers(["coco-rle"], str(tmp_path / "x.json"), info, dataset=str(gt_path))
    frames[1].name = "lamp"
    writer.write(frames[0])
    with pytest.raises(UsageError, match="'lamp' is not in the dataset JSON"):
        writer.write(frames[1])
    writer.abort()


def test_coco_rle_image_id_fallbacks(tmp_path):
    # numeric stem -> its number; any other stem -> the image's position in the run
    info, frames = image_results(IMAGES, stems=["000000000139", "beach", "000000000002"])
    (writer,) = open_writers(["coco-rle"], str(tmp_path / "a.json"), info, category_ids=[1, 2, 3])
    _write_all(writer, frames)
    assert [r["image_id"] for r in json.loads((tmp_path / "a.json").read_text())] == [139, 139, 1, 2, 2]
    # two images that would share an id are refused, not merged
    info, frames = image_results(IMAGES, stems=["beach", "000000000000", "x"])  # position 0 and stem 0
    (writer,) = open_writers(["coco-rle"], str(tmp_path / "b.json"), info, category_ids=[1, 2, 3])
    writer.write(frames[0])
    with pytest.raises(UsageError, match="image id 0"):
        writer.write(frames[1])
    writer.abort()


def test_coco_rle_video_frames_use_the_source_frame_number(tmp_path):
    info, frames = make_video(frames=3, start=5)  # --start 5
    path = tmp_path / "v.json"
    _write_all(CocoRleWriter(path, info), frames)
    assert sorted({r["image_id"] for r in json.loads(path.read_text())}) == [5, 6, 7]


def test_coco_rle_empty_video_is_an_empty_list(tmp_path):
    info, _ = make_video()
    path = tmp_path / "empty.json"
    CocoRleWriter(path, info).close()
    assert json.loads(path.read_text()) == []


# -- ytvis ------------------------------------------------------------------------------------
# The YouTube-VIS evaluator's contract (its ytvos.py loadRes and the GT layout in
# docs/formats.md): a JSON list, ``video_id`` in the GT's ``videos``, ``segmentations`` one
# item (RLE or null) per frame of the video, in frame order. AP is checked in test_evaluators.py.


def test_ytvis_layout(tmp_path):
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
    for r, track in ((by_cat[1], 1), (by_cat[2], 2), (by_cat[3], 3)):
        for f, s in zip(frames, r["segmentations"]):
            seg = next((x for x in f.segments if x.id == track), None)
            assert (s is None) == (seg is None)
            if seg is not None:
                assert np.array_equal(_decode(s), seg.mask)


def test_ytvis_segmentations_are_indexed_by_source_frame(tmp_path):
    info, frames = make_video(frames=4, start=5)  # --start 5 --end 9
    del frames[1]  # frame 6 not processed (a future --every)
    path = tmp_path / "s.json"
    _write_all(YtvisWriter(path, info), frames)
    dog = next(r for r in json.loads(path.read_text()) if r["category_id"] == 1)
    assert len(dog["segmentations"]) == 9  # last index + 1
    assert [s is not None for s in dog["segmentations"]] == [False] * 5 + [True, False, True, True]
    assert np.array_equal(_decode(dog["segmentations"][5]), frames[0].segments[0].mask)


def _ytvis_dataset(videos):
    return {"videos": [{"id": vid, "width": 37, "height": 24, "length": len(names),
                        "file_names": [f"{folder}/{n}.jpg" for n in names]} for vid, folder, names in videos],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}


def test_ytvis_video_id_and_frames_from_a_dataset_json(tmp_path):
    gt = tmp_path / "valid.json"
    stems = [f"{k:05d}" for k in range(0, 30, 5)]  # annotated every 5th frame: 00000, 00005, ...
    gt.write_text(json.dumps(_ytvis_dataset([(4, "a1b2c3", ["00000"]), (9, "clip", stems)])))
    info, frames = make_video(frames=12)  # frames 0..11 of clip.mp4, names 00000..00011
    for f in frames:
        f.name = f"{f.index:05d}"
    path = tmp_path / "r.json"
    notices = []
    (writer,) = open_writers(["ytvis"], str(path), info, dataset=str(gt), notice=notices.append)
    _write_all(writer, frames)
    results = json.loads(path.read_text())
    assert {r["video_id"] for r in results} == {9}
    assert all(len(r["segmentations"]) == 6 for r in results)  # the dataset's length
    dog = next(r for r in results if r["category_id"] == 1)
    assert [s is not None for s in dog["segmentations"]] == [True, True, True, False, False, False]
    assert np.array_equal(_decode(dog["segmentations"][2]), frames[10].segments[0].mask)  # 00010
    assert notices and "9 frames" in notices[0]

    (writer,) = open_writers(["ytvis"], str(path), info, dataset=str(gt), video_id=4)  # explicit id wins
    assert writer.video_id == 4
    info.name = "unknown"
    with pytest.raises(UsageError, match="'unknown' is not in the dataset JSON"):
        open_writers(["ytvis"], str(path), info, dataset=str(gt))


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
