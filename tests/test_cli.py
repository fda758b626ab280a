"""End-to-end CLI runs on the sample videos with the synthetic model (tests/synthetic.py), read back
by the formats' real consumers, and the failure contract (one stderr line, distinct exit codes,
nothing written). One run on the golden frames matches the official panoptic maps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import run_cli
from PIL import Image
from pycocotools import mask as mask_util

REPO = Path(__file__).resolve().parents[1]
SHAPES = str(REPO / "samples" / "shapes.mp4")
PHOTO = str(REPO / "samples" / "photo.png")


pytestmark = pytest.mark.usefixtures("segcli_home")  # shared: embeddings are cached once


run = run_cli  # in-process, (exit code, stdout, stderr)


@pytest.fixture
def tiny(model_dir):
    return model_dir


def test_vis_end_to_end_writes_every_format(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["vis", SHAPES, "--weights", tiny, "--score-threshold", "0", "--max-objects", "5", "--end",
                        "6", "-q", "-f", "ytvis", "-f", "davis", "-f", "overlay", "-f", "jsonl", "-f", "mask-video",
                        "-f", "summary", "-o", f"{out}/"], capsys)
    assert code == 0, err
    # jsonl: one line per frame, RLEs decode with pycocotools to masks of the frame size
    lines = (out / "shapes.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(6))
    first = json.loads(lines[0])
    assert first["objects"], "the tiny model reports objects with threshold 0"
    for obj in first["objects"]:
        m = mask_util.decode(obj["rle"])
        assert m.shape == (192, 320) and int(m.sum()) == obj["area"] > 0
    ids = {o["id"] for line in lines for o in json.loads(line)["objects"]}
    assert len(ids) == 5 and ids != set(range(1, 6))  # the 5 best tracks: query slots, not 1..5
    # ytvis: one entry per track, one RLE-or-null per frame
    ytvis = json.loads((out / "shapes.ytvis.json").read_text())
    assert {e["video_id"] for e in ytvis} == {1}
    assert all(len(e["segmentations"]) == 6 for e in ytvis)
    assert len(ytvis) >= len(ids)
    masks = [[mask_util.decode(o["rle"]).astype(bool) for o in json.loads(line)["objects"]] for line in lines]
    union = [np.logical_or.reduce(m) if m else np.zeros((192, 320), bool) for m in masks]
    summary = json.loads((out / "shapes.summary.json").read_text())
    assert summary["frames"] == 6 and {t["id"] for t in summary["tracks"]} == ids
    # davis: one palette PNG per frame; its indices are the tracks' DAVIS indices, compact 1..K (the
    # summary lists them), painted where the objects are
    davis_index = {t["id"]: t["davis_index"] for t in summary["tracks"]}
    assert sorted(davis_index.values()) == list(range(1, len(ids) + 1))
    pngs = sorted((out / "shapes").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(6)]
    for t, png in enumerate(pngs):
        with Image.open(png) as im:
            assert im.mode == "P"
            index = np.array(im)
        assert set(np.unique(index)) - {0} <= set(davis_index.values())
        assert np.array_equal(index > 0, union[t])
    # overlay and mask video decode with the input's frame count; the id maps hold the track ids
    with av.open(str(out / "shapes.overlay.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 6
    with av.open(str(out / "shapes.ids.mkv")) as c:
        maps = [f.to_ndarray() for f in c.decode(video=0)]
    assert len(maps) == 6 and set(np.unique(maps[0])) - {0} <= ids
    assert all(np.array_equal(m > 0, u) for m, u in zip(maps, union))
    assert all(0 <= t["first_frame"] <= t["last_frame"] < 6 for t in summary["tracks"])


def test_track_ids_are_stable_query_slots(segmenter, tiny, tmp_path, capsys):
    code, out, err = run(["vis", SHAPES, "--weights", tiny, "--score-threshold", "0", "--end", "9",
                          "--mode", "exact", "-q"], capsys)
    assert code == 0, err
    frames = [json.loads(line) for line in out.splitlines()]
    labels = {}
    for fr in frames:
        for o in fr["objects"]:
            assert labels.setdefault(o["id"], o["label"]) == o["label"]  # an id keeps its class
            assert 1 <= o["id"] <= segmenter.model.cfg.head.num_queries
    assert len(labels) > 1 and len(set(labels.values())) > 1  # several tracks, of several classes


def test_vocab_labels_and_cache_hit(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEGCLI_HOME", str(tmp_path / "home"))
    args = ["vis", SHAPES, "--vocab", "cat,dog|puppy", "--weights", tiny, "--score-threshold", "0", "--end", "3"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "class embeddings for 2 classes: computed" in err
    labels = {o["label"] for line in out.splitlines() for o in json.loads(line)["objects"]}
    assert labels and labels <= {"cat", "dog"}
    code, out2, err = run(args, capsys)
    assert code == 0 and "class embeddings for 2 classes: loaded from cache" in err
    assert out2 == out


def test_vps_on_golden_frames_matches_official_panoptic(bundle, tmp_path, capsys):
    """Reader (PNG folder) + preprocessing + model + MinVIS + panoptic fusion + writer, end to end."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, rgb in enumerate(bundle.inputs["vid_frames_raw_rgb"]):
        Image.fromarray(rgb).save(frames / f"{i:05d}.png")
    out = tmp_path / "out"
    code, _, err = run(["vps", frames, "--weights", bundle.path, "--mode", "exact", "-q", "-f", "panoptic",
                        "-o", f"{out}/"], capsys)
    assert code == 0, err
    pred = json.loads((out / "frames_panoptic" / "pred.json").read_text())
    ann = pred["annotations"][0]["annotations"]
    ref = bundle.outputs["vid_pan_seg"]
    num_classes = bundle.config["classes"]["num_classes"]
    offset = bundle.config["INSTANCE_OFFSET"]
    for t, frame_ann in enumerate(ann):
        png = np.array(Image.open(out / "frames_panoptic" / "pan_pred" / "frames" / frame_ann["file_name"]))
        png = png.astype(np.int64)
        ids = png[..., 0] + 256 * png[..., 1] + 65536 * png[..., 2]
        labels = np.full(ids.shape, num_classes)
        for s in frame_ann["segments_info"]:
            labels[ids == s["id"]] = s["category_id"] - 1
        ref_labels = np.where(ref[t] == num_classes, num_classes, ref[t] % offset)
        assert (labels != ref_labels).mean() <= 1e-4


def test_vos_point_writes_davis_pngs(tiny, tmp_path, capsys):
    out = tmp_path / "vos"
    code, _, err = run(["vos", SHAPES, "--point", "100,90", "--weights", tiny, "--end", "7", "-q", "-o", f"{out}/"],
                       capsys)
    assert code == 0, err
    pngs = sorted((out / "shapes").glob("*.png"))
    assert len(pngs) == 7
    for p in pngs:
        with Image.open(p) as im:
            assert im.mode == "P" and im.size == (320, 192)
            assert set(np.unique(np.array(im))) <= {0, 1}
            assert im.getpalette()[3:6] == [128, 0, 0]


def test_vos_multi_object_mask_and_later_frame_prompts(tiny, tmp_path, capsys):
    first = np.zeros((192, 320), np.uint8)
    first[20:80, 30:120] = 1
    first[100:180, 200:300] = 2
    mask = tmp_path / "first.png"
    im = Image.fromarray(first, mode="L").convert("P")
    im.save(mask)
    out = tmp_path / "vos"
    # objects 1 and 2 from the mask and 3 from a box on frame 0; object 3 re-prompted on frame 4
    code, stdout, err = run(["vos", SHAPES, "--mask", mask, "--weights", tiny, "--end", "6", "-f", "jsonl",
                             "--object", "3", "--box", "10,10,60,60", "--frame", "4", "--point", "250,150",
                             "-o", out / "r.jsonl"], capsys)
    assert code == 0, err
    frames = [json.loads(line) for line in (out / "r.jsonl").read_text().splitlines()]
    assert [fr["frame"] for fr in frames] == list(range(6))
    # the ids a notice says found no proposal: "objects 1, 2 found no free ..." / "... (ids 3, 4): ..."
    explained = set()
    for m in re.finditer(r"objects ([\d, ]+) found no|\(ids ([\d, ]+)\)", err):
        explained |= {int(v) for v in (m.group(1) or m.group(2)).split(",")}
    for oid in (1, 2, 3):
        missing = [fr["frame"] for fr in frames if oid not in {o["id"] for o in fr["objects"]}]
        # every prompted object is tracked on every frame from its prompt on, or a notice says why
        assert not missing or oid in explained, (oid, missing, err)
    assert all({o["id"] for o in fr["objects"]} <= {1, 2, 3} for fr in frames)


def test_vos_prompt_errors(tiny, tmp_path, capsys):
    cases = [
        (["--point", "999,10"], 7, "outside"),
        (["--point", "10"], 7, "--point"),
        (["--point", "10,10:neg"], 7, "negative"),
        (["--frame", "500", "--point", "10,10"], 7, "beyond"),
    ]
    for extra, code_expected, words in cases:
        out = tmp_path / "never"
        code, _, err = run(["vos", SHAPES, "--weights", tiny, "-o", f"{out}/", *extra], capsys)
        assert code == code_expected, (extra, err)
        assert words in err and err.count("\n") == 1 and "Traceback" not in err
        assert not out.exists() or not any(out.iterdir())
    code, _, err = run(["vos", SHAPES, "--weights", tiny, "--point", "10,10", "--frame", "3"], capsys)
    assert code == 2 and "none follows" in err
    bad = tmp_path / "small.png"
    Image.fromarray(np.ones((10, 10), np.uint8), mode="L").convert("P").save(bad)
    code, _, err = run(["vos", SHAPES, "--weights", tiny, "--mask", bad, "-o", f"{tmp_path}/m/"], capsys)
    assert code == 7 and "mask" in err


def test_image_panoptic_and_prompt(tiny, tmp_path, capsys):
    code, out, err = run(["image", PHOTO, "--weights", tiny, "-q"], capsys)
    assert code == 0, err
    rec = json.loads(out)
    assert rec["width"] == 320 and rec["height"] == 192
    code, out, err = run(["image", PHOTO, "--weights", tiny, "-q", "--point", "160,100", "--box", "10,10,100,90"],
                         capsys)
    assert code == 0, err
    objs = json.loads(out)["objects"]
    assert [o["id"] for o in objs] == [1, 2]


def test_bad_input_contract(tiny, tmp_path, capsys):
    earlier = tmp_path / "keep.jsonl"
    earlier.write_text("precious\n")
    not_video = tmp_path / "notavideo.mp4"
    not_video.write_bytes(b"this is not a video")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is needed")
    cases = [
        (["vis", tmp_path / "missing.mp4", "--weights", tiny, "-o", earlier], 3),
        (["vis", not_video, "--weights", tiny, "-o", earlier], 4),
        (["vis", empty_dir, "--weights", tiny, "-o", earlier], 4),
        (["vis", SHAPES, "--weights", tiny, "-f", "nosuchformat", "-o", earlier], 2),
        (["vis", SHAPES, "--weights", tiny, "--vocab", " , ", "-o", earlier], 8),
        (["vis", SHAPES, "--weights", tiny, "-f", "davis", "-o", f"{blocker}/sub/"], 5),
        (["vis", SHAPES, "--weights", tmp_path / "nope.safetensors", "-o", earlier], 6),
    ]
    for args, expected in cases:
        code, out, err = run(args, capsys)
        assert code == expected, (args, err)
        assert err.startswith("segcli: error: ") and err.count("\n") == 1, err
        assert earlier.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "empty", "keep.jsonl", "notavideo.mp4"]


def test_info_and_help(capsys):
    code, out, _ = run(["info"], capsys)
    assert code == 0 and "segcli" in out and "torch" in out and "omg-seg-convl" in out
    code, out, _ = run(["vos", "--help"], capsys)
    assert code == 0 and "negative" in out.lower()


def test_vos_with_vocab_labels_each_object(tiny, capsys):
    code, out, err = run(["vos", SHAPES, "--point", "100,90", "--vocab", "ball,box", "--weights", tiny, "--end", "3",
                          "-q"], capsys)
    assert code == 0, err
    objs = [o for line in out.splitlines() for o in json.loads(line)["objects"]]
    assert objs and {o["id"] for o in objs} == {1}
    assert {o["label"] for o in objs} <= {"ball", "box"} and all(0 < o["score"] <= 1 for o in objs)
    code, out, err = run(["vos", SHAPES, "--point", "100,90", "--weights", tiny, "--end", "3", "-q"], capsys)
    assert code == 0, err
    objs = [o for line in out.splitlines() for o in json.loads(line)["objects"]]
    assert objs and all(o["label"] == "" for o in objs)


def test_stdin_video(tiny, capsys, monkeypatch):
    class Stdin:
        buffer = open(SHAPES, "rb")

    monkeypatch.setattr("sys.stdin", Stdin)
    try:
        code, out, err = run(["vis", "-", "--weights", tiny, "--score-threshold", "0", "--end", "3", "-q"], capsys)
    finally:
        Stdin.buffer.close()
    assert code == 0, err
    assert [json.loads(line)["frame"] for line in out.splitlines()] == [0, 1, 2]


def test_bench_command_prints_tables(tiny, capsys):
    """Each run is its own process (python -m segcli.bench SPEC RESULT); the tables print."""
    code, out, err = run(["bench", "--weights", tiny, "--size", "tiny", "--frames", "3", "--tasks", "vis",
                          "--variants", "fp32-eager", "--no-floors"], capsys)
    assert code == 0, err
    assert "frames/s" in out and "peakRSS" in out
    row = [line for line in out.splitlines() if line.startswith("vis  fp32-eager ")]
    assert row and "1.00x" in row[0].split(), out
    assert not any(line.startswith("FAILED") for line in out.splitlines()), out


def test_bench_repeat_interleaves_and_keeps_the_fastest_run(tiny, capsys, monkeypatch):
    """--repeat 2 runs the variants interleaved (a, b, a, b) and reports the fastest run of each;
    the accuracy table checks bf16 against the bound. The runs happen in this process (real runs,
    with the frame rates set by the test, so "fastest" is known)."""
    from segcli import bench

    fps = {("fp32-eager", 0): 3.0, ("bf16", 0): 1.0, ("fp32-eager", 1): 1.5, ("bf16", 1): 2.0}
    order = []

    def spawn(spec, run_dir):
        result = bench.run_worker(spec)
        result["fps"] = fps[(spec["variant"], order.count(spec["variant"]))]
        order.append(spec["variant"])
        return result

    monkeypatch.setattr(bench, "_spawn", spawn)
    code, out, err = run(["bench", "--weights", tiny, "--size", "tiny", "--frames", "3", "--tasks", "vis",
                          "--variants", "fp32-eager,bf16", "--repeat", "2", "--no-floors"], capsys)
    assert code == 0, err
    assert order == ["fp32-eager", "bf16", "fp32-eager", "bf16"]
    assert "fastest of 2 interleaved runs" in out
    runs = [line for line in out.splitlines() if line.strip().startswith("vis bf16: frames/s of each run")]
    assert runs and [float(v) for v in runs[0].split("run")[-1].split(",")] == [1.0, 2.0], out
    row = [line for line in out.splitlines() if line.startswith("vis  bf16 ")][0].split()
    assert "2.000" in row and "0.67x" in row, row  # the fastest bf16 run against the fastest reference
    assert [line for line in out.splitlines() if line.startswith("vis  bf16") and line.rstrip().endswith("ok")], out
    ref_row = [line for line in out.splitlines() if line.startswith("vis  fp32-eager ")][0].split()
    assert "3.000" in ref_row
