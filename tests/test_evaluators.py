"""segcli's files against what the field's evaluators do with them, unmodified.

Each ground truth here is painted in numpy and encoded by the test itself, independently of
the writer under test, and each test also scores a perturbed ground truth (or the old, wrong
ids) to show that the check can fail.

- COCO panoptic: panopticapi's ``pq_compute`` is not on PyPI (only a third-party repackage,
  panopticapi-lite, whose evaluation.py is the official file); ``pq_like`` below re-does the
  checks and the matching of ``panopticapi/evaluation.py`` (cocodataset/panopticapi), and the
  real ``pq_compute`` runs too when ``panopticapi`` can be imported.
- YouTube-VIS: the official API (youtubevos/cocoapi, ``PythonAPI/pycocotools/ytvos.py`` and
  ``ytvoseval.py``) is not on PyPI either; ``ytvis_ap`` runs pycocotools' COCOeval over videos
  with the spatio-temporal mask IoU, which is what ytvoseval does, after the steps of
  ``YTVOS.loadRes``.
- DAVIS 2017 (davisvideochallenge/davis2017-evaluation): ``davis_j`` reads the PNGs the way
  ``Results.read_masks`` does (object ``k`` = pixels with index ``k``, ``k`` = 1..the largest
  index of the sequence) and applies ``DAVISEvaluation``'s checks.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.optimize import linear_sum_assignment
from test_io_json import paint, uncompressed_rle
from test_io_rle import make_info

from segcli.io import FORMATS, close_writers, open_writers
from segcli.results import FrameResult, Segment

# ---------------------------------------------------------------------------------------------
# COCO panoptic (images)


def id_to_rgb_independent(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def rgb2id(rgb: np.ndarray) -> np.ndarray:  # panopticapi/utils.py rgb2id: R + 256 G + 256^2 B
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


PAN_CATS = [{"id": 1, "name": "person", "isthing": 1}, {"id": 3, "name": "car", "isthing": 1},
            {"id": 184, "name": "sky", "isthing": 0}]
# file name, id, size, objects painted in order (later on top): (shape, category id, score)
PAN_IMAGES = [
    ("000000000139.jpg", 139, (30, 40), [(("box", 0, 10, 0, 40), 184, 0.5), (("box", 5, 25, 3, 15), 1, 0.8),
                                         (("disc", 12, 12, 5), 3, 0.9)]),
    ("000000000785.jpg", 785, (30, 40), [(("box", 0, 30, 0, 40), 184, 0.4), (("disc", 15, 25, 9), 1, 0.95)]),
]


def panoptic_ground_truth(root, perturb=False) -> tuple:
    """GT PNGs and JSON in the COCO-panoptic layout, painted here; -> (json path, PNG folder)."""
    folder = root / "gt"
    folder.mkdir()
    annotations = []
    for k, (file_name, image_id, (h, w), objects) in enumerate(PAN_IMAGES):
        ids = np.zeros((h, w), np.int64)
        segments = []
        for j, (shape, cat, _) in enumerate(objects):
            if perturb and k == 0 and j == 2:
                cat = 1  # the car is called a person
            if perturb and k == 1 and j == 1:
                shape = ("disc", 15, 8, 9)  # the person moved 17 px
            gid = 1000 * (k + 1) + 7 * j + 3  # any ids: the GT's own
            ids[paint(shape, h, w)] = gid
            segments.append({"id": gid, "category_id": cat, "iscrowd": 0})
        for s in segments:
            m = ids == s["id"]
            ys, xs = np.nonzero(m)
            s["area"] = int(m.sum())
            s["bbox"] = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        png = file_name.replace(".jpg", ".png")
        Image.fromarray(id_to_rgb_independent(ids)).save(folder / png)
        annotations.append({"image_id": image_id, "file_name": png, "segments_info": segments})
    doc = {"images": [{"id": i, "file_name": f, "height": hw[0], "width": hw[1]} for f, i, hw, _ in PAN_IMAGES],
           "annotations": annotations, "categories": PAN_CATS}
    path = root / ("gt_perturbed.json" if perturb else "gt.json")
    path.write_text(json.dumps(doc))
    return path, folder


def panoptic_frames():
    names = [c["name"] for c in PAN_CATS]
    info = make_info(40, 30, task="image")
    info.classes, info.num_things, info.name = names, 2, "val"
    frames = []
    for index, (file_name, _, (h, w), objects) in enumerate(PAN_IMAGES):
        segs = []
        for j, (shape, cat, score) in enumerate(objects):
            c = [x["id"] for x in PAN_CATS].index(cat)
            segs.append(Segment(j + 1, c, names[c], score, paint(shape, h, w), bool(PAN_CATS[c]["isthing"])))
        frames.append(FrameResult(index, None, h, w, segs, None, file_name[:-4]))
    return info, frames


def pq_like(gt_json_file, pred_json_file, gt_folder, pred_folder=None) -> float:
    """panopticapi evaluation.py pq_compute, re-done: the same checks, in the same places, and PQ."""
    gt_json = json.loads(open(gt_json_file).read())
    pred_json = json.loads(open(pred_json_file).read())
    if pred_folder is None:  # pq_compute: pred_folder = pred_json_file.replace('.json', '')
        pred_folder = str(pred_json_file).replace(".json", "")
    assert os.path.isdir(pred_folder), "Folder with predicted segmentations doesn't exist"
    categories = {c["id"]: c for c in gt_json["categories"]}
    # pq_compute: {el['image_id']: el for el in pred_json['annotations']} -> the COCO layout, where
    # each top-level annotation is one image ('no prediction for the image with id' otherwise)
    pred_annotations = {a["image_id"]: a for a in pred_json["annotations"]}
    stats = {cid: [0.0, 0, 0, 0] for cid in categories}  # iou sum, tp, fp, fn
    for gt_ann in gt_json["annotations"]:
        assert gt_ann["image_id"] in pred_annotations, f"no prediction for the image with id: {gt_ann['image_id']}"
        pred_ann = pred_annotations[gt_ann["image_id"]]
        pan_gt = rgb2id(np.array(Image.open(os.path.join(gt_folder, gt_ann["file_name"]))))
        pan_pred = rgb2id(np.array(Image.open(os.path.join(pred_folder, pred_ann["file_name"]))))
        gt_segs = {s["id"]: s for s in gt_ann["segments_info"]}
        pred_segs = {s["id"]: dict(s) for s in pred_ann["segments_info"]}
        labels, counts = np.unique(pan_pred, return_counts=True)
        unseen = set(pred_segs)
        for label, count in zip(labels.tolist(), counts.tolist()):
            if label == 0:
                continue
            assert label in pred_segs, f"segment with ID {label} is presented in PNG and not presented in JSON"
            pred_segs[label]["area"] = count  # pq_compute takes the PNG's area, not the JSON's
            unseen.discard(label)
            assert pred_segs[label]["category_id"] in categories, "segment has unknown category_id"
        assert not unseen, f"segment IDs {sorted(unseen)} are presented in JSON and not presented in PNG"
        pairs = {}
        for g, p in zip(pan_gt.reshape(-1).tolist(), pan_pred.reshape(-1).tolist()):
            pairs[g, p] = pairs.get((g, p), 0) + 1
        gt_hit, pred_hit = set(), set()
        for (g, p), inter in pairs.items():
            if g not in gt_segs or p not in pred_segs or gt_segs[g]["iscrowd"]:
                continue
            if gt_segs[g]["category_id"] != pred_segs[p]["category_id"]:
                continue
            union = pred_segs[p]["area"] + gt_segs[g]["area"] - inter - pairs.get((0, p), 0)
            if inter / union > 0.5:
                st = stats[gt_segs[g]["category_id"]]
                st[0] += inter / union
                st[1] += 1
                gt_hit.add(g)
                pred_hit.add(p)
        for g, s in gt_segs.items():
            if g not in gt_hit and not s["iscrowd"]:
                stats[s["category_id"]][3] += 1
        for p, s in pred_segs.items():
            if p not in pred_hit and pairs.get((0, p), 0) / s["area"] <= 0.5:
                stats[s["category_id"]][2] += 1
    pqs = [iou / (tp + 0.5 * fp + 0.5 * fn) for iou, tp, fp, fn in stats.values() if tp + fp + fn]
    return sum(pqs) / len(pqs)


def _write_panoptic(tmp_path):
    info, frames = panoptic_frames()
    writers = open_writers(["panoptic"], str(tmp_path / "out"), info, category_ids=[1, 3, 184])
    for f in frames:
        writers[0].write(f)
    close_writers(writers)
    return tmp_path / "out" / "val_panoptic" / "pred.json"


def test_panoptic_images_pass_pq_compute_checks_and_score(tmp_path):
    gt_json, gt_folder = panoptic_ground_truth(tmp_path)
    pred_json = _write_panoptic(tmp_path)
    pred = json.loads(pred_json.read_text())
    for ann in pred["annotations"]:  # the COCO layout: integer image ids, the GT's
        assert isinstance(ann["image_id"], int) and set(ann) >= {"image_id", "file_name", "segments_info"}
    assert pq_like(gt_json, pred_json, gt_folder) == pytest.approx(1.0)
    (tmp_path / "p").mkdir()
    perturbed, perturbed_folder = panoptic_ground_truth(tmp_path / "p", perturb=True)
    assert pq_like(perturbed, pred_json, perturbed_folder) < 0.8
    # what segcli wrote for images before is refused: the video layout (annotations[0].annotations)
    # has no top-level image_id (pq_compute's KeyError), and string ids match no GT image
    old = tmp_path / "old"
    (old / "pred").mkdir(parents=True)
    (old / "pred.json").write_text(json.dumps({"annotations": [{"video_id": "val", "annotations": pred["annotations"]}],
                                               "categories": pred["categories"]}))
    with pytest.raises(KeyError, match="image_id"):
        pq_like(gt_json, old / "pred.json", gt_folder)
    (old / "pred.json").write_text(json.dumps({"annotations": [dict(a, image_id=f"{a['image_id']:012d}")
                                                               for a in pred["annotations"]]}))
    with pytest.raises(AssertionError, match="no prediction for the image with id"):
        pq_like(gt_json, old / "pred.json", gt_folder)


def test_panoptic_images_with_the_real_pq_compute(tmp_path):
    evaluation = pytest.importorskip("panopticapi.evaluation")  # not on PyPI: runs where installed
    gt_json, gt_folder = panoptic_ground_truth(tmp_path)
    pred_json = _write_panoptic(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        results = evaluation.pq_compute(str(gt_json), str(pred_json), gt_folder=str(gt_folder))
    assert results["All"]["pq"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# YouTube-VIS


def video_iou(d: list, g: list) -> float:
    """Spatio-temporal mask IoU: intersections and unions summed over the frames."""
    inter = union = 0.0
    for a, b in zip(d, g):
        if a is not None and b is not None:
            i = float(mask_util.area(mask_util.merge([_rle(a), _rle(b)], intersect=True)))
            inter += i
            union += float(mask_util.area(_rle(a))) + float(mask_util.area(_rle(b))) - i
        elif a is not None or b is not None:
            union += float(mask_util.area(_rle(a if a is not None else b)))
    return inter / union if union else 0.0


def _rle(r: dict) -> dict:
    if isinstance(r["counts"], list):
        return mask_util.frPyObjects(r, *r["size"])
    return {"size": r["size"], "counts": r["counts"].encode() if isinstance(r["counts"], str) else r["counts"]}


class VideoEval(COCOeval):
    """COCOeval with videos as images and the spatio-temporal IoU (what ytvoseval.py changes)."""

    def computeIoU(self, imgId, catId):  # noqa: N802 - COCOeval's name
        gts, dts = self._gts[imgId, catId], self._dts[imgId, catId]
        if not gts or not dts:
            return []
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")
        dts = [dts[i] for i in order][: self.params.maxDets[-1]]
        return np.array([[video_iou(d["segmentations"], g["segmentations"]) for g in gts] for d in dts])


def _mean_area(segs):
    areas = [float(mask_util.area(_rle(s))) for s in segs if s is not None]
    return sum(areas) / len(areas) if areas else 0.0


def ytvis_ap(gt: dict, results: list) -> float:
    """YTVOS.loadRes's checks on a results list, then AP over the videos."""
    assert isinstance(results, list), "results in not an array of objects"
    video_ids = {v["id"] for v in gt["videos"]}
    assert {r["video_id"] for r in results} <= video_ids, "Results do not correspond to current coco set"
    length = {v["id"]: v["length"] for v in gt["videos"]}
    dts = []
    for i, r in enumerate(results):
        assert len(r["segmentations"]) == length[r["video_id"]], "one segmentation per frame of the video"
        dts.append({"id": i + 1, "image_id": r["video_id"], "category_id": r["category_id"], "score": r["score"],
                    "segmentations": r["segmentations"], "area": _mean_area(r["segmentations"]), "iscrowd": 0})
    gts = [{"id": a["id"], "image_id": a["video_id"], "category_id": a["category_id"],
            "segmentations": a["segmentations"], "area": _mean_area(a["segmentations"]), "iscrowd": 0}
           for a in gt["annotations"]]
    images = [{"id": v["id"]} for v in gt["videos"]]
    coco_gt, coco_dt = COCO(), COCO()
    coco_gt.dataset = {"images": images, "annotations": gts, "categories": gt["categories"]}
    coco_dt.dataset = {"images": images, "annotations": dts, "categories": gt["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = VideoEval(coco_gt, coco_dt, "bbox")  # "bbox": no mask conversion; computeIoU is ours
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


# two videos: (folder name, video id, number of frames, tracks: (track id, category id, shape per frame or None))
VIDEOS = [
    ("0b6f9105fc", 3, 6, [(27, 1, lambda t: ("box", 2, 12, 2 + 3 * t, 14 + 3 * t)),
                          (29, 2, lambda t: ("disc", 20, 30 - 2 * t, 6) if t >= 2 else None)]),
    ("7e5d0a4c81", 8, 5, [(31, 1, lambda t: ("box", 10, 28, 5, 20)), (40, 2, lambda t: ("disc", 8, 35, 5))]),
]
YT_CATS = [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]


def ytvis_ground_truth(perturb=False) -> dict:
    videos, anns = [], []
    for v, (folder, vid, n, tracks) in enumerate(VIDEOS):
        videos.append({"id": vid, "width": 50, "height": 32, "length": n,
                       "file_names": [f"{folder}/{k:05d}.jpg" for k in range(n)]})
        for j, (_, cat, shape_at) in enumerate(tracks):
            segs = []
            for t in range(n):
                shape = shape_at(t)
                if perturb and v == 0 and j == 0 and shape is not None:
                    shape = ("box", 18, 28, 30, 45)  # somewhere else
                segs.append(None if shape is None else uncompressed_rle(paint(shape, 32, 50)))
            anns.append({"id": len(anns) + 1, "video_id": vid, "category_id": cat, "segmentations": segs,
                         "iscrowd": 0})
    return {"videos": videos, "annotations": anns, "categories": YT_CATS}


def ytvis_frames(v: int, start: int = 0):
    folder, _, n, tracks = VIDEOS[v]
    info = make_info(50, 32, n - start, name=folder, task="vis")
    info.classes, info.num_things = ["person", "dog"], 2
    frames = []
    for t in range(start, n):
        segs = [Segment(tid, cat - 1, "", 0.9 - 0.1 * j, paint(shape_at(t), 32, 50))
                for j, (tid, cat, shape_at) in enumerate(tracks) if shape_at(t) is not None]
        frames.append(FrameResult(t, t / 25, 32, 50, segs, None, f"{t:05d}"))
    return info, frames


def _ytvis_results(tmp_path, v, **kwargs) -> list:
    info, frames = ytvis_frames(v, kwargs.pop("start", 0))
    path = tmp_path / f"{v}.json"
    (writer,) = open_writers(["ytvis"], str(path), info, **kwargs)
    for f in frames:
        writer.write(f)
    writer.close()
    return json.loads(path.read_text())


def test_ytvis_concatenated_videos_score_with_ids_from_the_dataset_json(tmp_path):
    gt = ytvis_ground_truth()
    dataset = tmp_path / "valid.json"
    dataset.write_text(json.dumps(gt))
    results = _ytvis_results(tmp_path, 0, dataset=str(dataset)) + _ytvis_results(tmp_path, 1, dataset=str(dataset))
    assert [r["video_id"] for r in results] == [3, 3, 8, 8]  # "0b6f9105fc/00000.jpg" -> video 3
    assert ytvis_ap(gt, results) == pytest.approx(1.0)
    assert ytvis_ap(ytvis_ground_truth(perturb=True), results) < 0.8
    # one id for every video (what segcli wrote before: video_id 1 always) does not score
    same = [dict(r, video_id=3) for r in results[:2]] + [dict(r, video_id=3, segmentations=r["segmentations"] + [None])
                                                        for r in results[2:]]
    assert ytvis_ap(gt, same) < 0.6
    # explicit ids (WriterOptions.video_id) give the same file
    explicit = _ytvis_results(tmp_path, 0, video_id=3) + _ytvis_results(tmp_path, 1, video_id=8)
    assert explicit == results


def test_ytvis_start_offset_keeps_frame_k_at_position_k(tmp_path):
    gt = ytvis_ground_truth()
    for a in gt["annotations"]:  # objects of video 8 only from frame 2 on, the part processed
        if a["video_id"] == 8:
            a["segmentations"][:2] = [None, None]
    gt["annotations"] = [a for a in gt["annotations"] if a["video_id"] == 8]
    gt["videos"] = [v for v in gt["videos"] if v["id"] == 8]
    results = _ytvis_results(tmp_path, 1, start=2, video_id=8)  # --start 2: frames 2, 3, 4
    assert all(len(r["segmentations"]) == 5 and r["segmentations"][:2] == [None, None] for r in results)
    assert ytvis_ap(gt, results) == pytest.approx(1.0)
    shifted = [dict(r, segmentations=r["segmentations"][2:] + [None, None]) for r in results]  # frame 2 at 0
    assert ytvis_ap(gt, shifted) < 0.5


# ---------------------------------------------------------------------------------------------
# DAVIS 2017


def davis_read(folder, frames: list[str]) -> np.ndarray:
    """Results.read_masks: the PNGs of a sequence as (K, T, H, W) objects, K = the largest index."""
    masks = np.stack([np.array(Image.open(folder / f"{f}.png")) for f in frames])
    k = int(masks.max())
    return np.stack([masks == i for i in range(1, k + 1)]) if k else np.zeros((0, *masks.shape), bool)


def j_score(gt: np.ndarray, res: np.ndarray) -> float:
    """db_eval_iou averaged over frames (both empty: 1)."""
    scores = []
    for g, r in zip(gt, res):
        union = np.logical_or(g, r).sum()
        scores.append(1.0 if union == 0 else np.logical_and(g, r).sum() / union)
    return float(np.mean(scores))


def davis_j(gt: np.ndarray, res: np.ndarray, task: str) -> float:
    """DAVISEvaluation._evaluate_unsupervised / _semisupervised's checks, then mean J."""
    if task == "unsupervised":
        assert res.shape[0] <= 20, "there is an index higher than the maximum number (20) of proposals allowed"
        if res.shape[0] < gt.shape[0]:
            res = np.concatenate([res, np.zeros((gt.shape[0] - res.shape[0], *res.shape[1:]), bool)])
        j = np.array([[j_score(g, r) for g in gt] for r in res])
        rows, cols = linear_sum_assignment(-j)
        return float(j[rows, cols].mean())
    assert res.shape[0] == gt.shape[0], "there is an index higher than the number of objects in the sequence"
    return float(np.mean([j_score(g, r) for g, r in zip(gt, res)]))


DAVIS_SHAPES = {27: lambda t: ("box", 2, 14, 3 + 2 * t, 15 + 2 * t), 28: lambda t: ("disc", 20, 35, 6),
                29: lambda t: ("box", 24, 30, 2, 20) if t >= 1 else None}


def davis_frames(task, ids=(27, 28, 29), n=4):
    info = make_info(48, 32, n, name="bear", task=task)
    info.classes, info.num_things = (["bear"], 1) if task != "vos" else ([], 0)
    frames = []
    for t in range(n):
        segs = [Segment(i, 0 if task != "vos" else -1, "", 0.5 + 0.1 * j, paint(DAVIS_SHAPES[s](t), 32, 48))
                for j, (i, s) in enumerate(zip(ids, DAVIS_SHAPES)) if DAVIS_SHAPES[s](t) is not None]
        frames.append(FrameResult(t, t / 25, 32, 48, segs, None, f"{t:05d}"))
    return info, frames


def davis_gt(n=4, perturb=False) -> np.ndarray:
    objects = []
    for s, shape_at in DAVIS_SHAPES.items():
        masks = []
        for t in range(n):
            shape = shape_at(t)
            if perturb and s == 28:
                shape = ("disc", 8, 40, 6)
            masks.append(np.zeros((32, 48), bool) if shape is None else paint(shape, 32, 48))
        objects.append(np.stack(masks))
    return np.stack(objects)


def _write_davis(tmp_path, task, ids):
    info, frames = davis_frames(task, ids)
    writers = open_writers(["davis"], str(tmp_path), info)
    for f in frames:
        writers[0].write(f)
    close_writers(writers)
    return tmp_path / "bear"


def test_davis_unsupervised_from_vis_track_ids(tmp_path):
    folder = _write_davis(tmp_path, "vis", (27, 28, 29))  # query slots, as vis gives them
    res = davis_read(folder, [f"{t:05d}" for t in range(4)])
    assert res.shape[0] == 3 and all(res[k].any() for k in range(3))  # objects 1..3, none empty
    assert davis_j(davis_gt(), res, "unsupervised") == pytest.approx(1.0)
    assert davis_j(davis_gt(perturb=True), res, "unsupervised") < 0.75
    # the track ids themselves as indices (what segcli wrote before) are refused
    old = np.stack([np.array(Image.open(folder / f"{t:05d}.png")) for t in range(4)])
    old = np.select([old == 1, old == 2, old == 3], [27, 28, 29], 0)
    with pytest.raises(AssertionError, match="maximum number"):
        davis_j(davis_gt(), np.stack([old == i for i in range(1, old.max() + 1)]), "unsupervised")


def test_davis_semi_supervised_from_vos_object_ids(tmp_path):
    folder = _write_davis(tmp_path, "vos", (1, 2, 3))  # --object 1/2/3: the first-frame mask's ids
    res = davis_read(folder, [f"{t:05d}" for t in range(4)])
    assert davis_j(davis_gt(), res, "semi-supervised") == pytest.approx(1.0)
    assert davis_j(davis_gt(perturb=True), res, "semi-supervised") < 0.75


# ---------------------------------------------------------------------------------------------
# One frame numbering in every format


def test_every_format_numbers_frames_by_the_source_frame(tmp_path):
    info, frames = davis_frames("vps", n=9)
    frames = frames[5:]  # --start 5
    for f in frames:
        f.image = np.full((32, 48, 3), 80, np.uint8)
    info.num_frames = len(frames)
    writers = open_writers(list(FORMATS), str(tmp_path), info)
    for f in frames:
        for w in writers:
            w.write(f)
    close_writers(writers)
    jsonl = [json.loads(line) for line in (tmp_path / "bear.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in jsonl] == [5, 6, 7, 8]
    assert [r["pts"] for r in jsonl] == pytest.approx([0.2, 0.24, 0.28, 0.32])
    assert sorted(p.name for p in (tmp_path / "bear").glob("*.png")) == [f"{i:05d}.png" for i in range(5, 9)]
    pred = json.loads((tmp_path / "bear_panoptic" / "pred.json").read_text())
    assert [a["file_name"] for a in pred["annotations"][0]["annotations"]] == [f"{i:05d}.png" for i in range(5, 9)]
    coco = json.loads((tmp_path / "bear.coco.json").read_text())
    assert sorted({r["image_id"] for r in coco}) == [5, 6, 7, 8]
    ytvis = json.loads((tmp_path / "bear.ytvis.json").read_text())
    assert all(len(r["segmentations"]) == 9 and r["segmentations"][:5] == [None] * 5 for r in ytvis)
    for name in ("bear.ids.mkv", "bear.overlay.mp4"):
        with av.open(str(tmp_path / name)) as c:
            times = [float(fr.pts * fr.time_base) for fr in c.decode(video=0)]
        assert times == pytest.approx([r["pts"] for r in jsonl], abs=5e-4)
    summary = json.loads((tmp_path / "bear.summary.json").read_text())
    assert summary["frames"] == 4 and {t["first_frame"] for t in summary["tracks"]} == {5}
