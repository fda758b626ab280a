"""`segcli batch`: planning (inputs, names, prompts, manifest), the local engine through the installed
console script with a worker and the driver killed mid-run, a local Ray cluster with an actor killed
mid-run, dataset JSON round trips into one results file, and per-video outputs equal to single-video
runs. Uses the tiny golden model (skipped with a reason when it is absent)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from segcli.batch import state
from segcli.batch.items import Expander, WorkItem, assign_names, image_chunks, number_videos
from segcli.errors import InputNotFoundError, PromptError, UsageError

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "samples" / "shapes.mp4"
SIZE = "64x48"


# ---- helpers -------------------------------------------------------------------------------------
def make_video(path: Path, frames: int = 6, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=6)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        x0 = int(rng.integers(0, 16))
        for i in range(frames):
            a = np.full((h, w, 3), 40, np.uint8)
            a[8:28, x0 + 2 * i:x0 + 2 * i + 20] = (220, 40, 30)
            a[30:44, 36:58] = (30, 190, 40)
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def make_frames(folder: Path, frames: int = 5, seed: int = 0, w: int = 64, h: int = 48) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(frames):
        a = np.full((h, w, 3), 50, np.uint8)
        x = int(rng.integers(0, 30))
        a[10:30, x:x + 20] = (40, 40, 220)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), a)
    return folder


def manifest(out: Path) -> list[dict]:
    path = out / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def ok_names(records: list[dict]) -> list[str]:
    return sorted(r["name"] for r in records if r["status"] == "ok")


def temps(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if state.is_temp(p.name)] if out.exists() else []


def kill_worker_on(out: Path, name: str, timeout: float = 90.0) -> int | None:
    """SIGKILL the process writing video `name` (its temp folder under `out` has the pid in its
    name) as soon as it starts it. Returns the pid killed, None if the video never started."""
    stale = set(temps(out))  # left by a killed run (their writers may be zombies: not alive)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tmp in temps(out):
            pid = state.temp_pid(tmp)
            if tmp.startswith(f".{name}.") and tmp not in stale and pid and pid != os.getpid() and alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    return pid
                except ProcessLookupError:
                    pass
        if any(r["name"] == name for r in manifest(out)):
            return None
        time.sleep(0.02)
    return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    old = {k: os.environ.get(k) for k in ("SEGCLI_HOME", "HF_HUB_OFFLINE")}
    os.environ["SEGCLI_HOME"] = str(tmp_path_factory.mktemp("segcli_home"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield os.environ["SEGCLI_HOME"]
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def tiny(bundle, home):
    return str(bundle.path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A folder of videos: a long sample first (60 frames), four small generated ones, one corrupt."""
    d = tmp_path_factory.mktemp("videos")
    shutil.copy(SHAPES, d / "a_long.mp4")
    for i in range(4):
        make_video(d / f"g{i}.mp4", seed=i)
    (d / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    return d


def reference_vis(tiny: str, video: Path, out: Path) -> Path:
    """The single-video run (segcli.api, the path `segcli vis` takes) with one torch thread, as a
    batch worker on 2 cores runs."""
    import torch

    import segcli.api as api

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        api.run(str(video), task="vis", weights=tiny, output=f"{out}/", formats=["ytvis", "davis"], scale=(64, 48),
                device="cpu")
    finally:
        torch.set_num_threads(threads)
    return out


def same_vis_outputs(batch_dir: Path, ref_dir: Path, name: str) -> None:
    got = json.loads((batch_dir / f"{name}.ytvis.json").read_text())
    want = json.loads((ref_dir / f"{name}.ytvis.json").read_text())
    for entries in (got, want):
        for e in entries:
            e.pop("video_id")
    assert got == want
    pngs = sorted(p.name for p in (ref_dir / name).glob("*.png"))
    assert pngs and pngs == sorted(p.name for p in (batch_dir / name).glob("*.png"))
    for png in pngs:
        assert (batch_dir / name / png).read_bytes() == (ref_dir / name / png).read_bytes()


# ---- planning (no model) -------------------------------------------------------------------------
def test_inputs_folders_globs_lists_and_names(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for p in (a / "clip.mp4", b / "clip.mp4", a / "other.mkv", a / "notes.txt"):
        p.write_bytes(b"x")
    make_frames(a / "seq1", 2)
    make_frames(tmp_path / "frames_only", 2)
    lst = tmp_path / "list.csv"
    lst.write_text("path,name,video_id\nb/clip.mp4,,\nframes_only,custom,\n")
    ex = Expander("vis", output=tmp_path / "out")
    ex.add(str(a))  # two videos (not notes.txt) and a frame folder
    ex.add(str(tmp_path / "*" / "clip.mp4"))  # a glob: b/clip.mp4 is new, a/clip.mp4 a duplicate
    ex.add(str(lst))
    kinds = [(Path(i.path).name, i.kind) for i in ex.items]
    assert kinds == [("clip.mp4", "video"), ("other.mkv", "video"), ("seq1", "frames"), ("clip.mp4", "video"),
                     ("frames_only", "frames")]
    assign_names(ex.items, previous={})
    assert [i.name for i in ex.items] == ["a_clip", "other", "seq1", "b_clip", "custom"]
    # a rerun keeps earlier names for the same inputs, whatever comes first now
    items = list(reversed(ex.items))
    previous = {i.input: i.name for i in ex.items}
    for i in items:
        i.name = ""
    assign_names(items, previous)
    assert {i.input: i.name for i in items} == previous
    number_videos(ex.items, None)
    assert [i.video_id for i in ex.items] == [1, 2, 3, 4, 5]
    with pytest.raises(InputNotFoundError):
        Expander("vis").add(str(tmp_path / "nothing*.mp4"))


def test_dataset_json_inputs_and_image_ids(tmp_path):
    root = tmp_path / "valid" / "JPEGImages"
    make_frames(root / "vidA", 3)
    make_frames(root / "vidB", 2, seed=1)
    doc = {"videos": [{"id": 7, "file_names": [f"vidA/{i:05d}.jpg" for i in (0, 2)], "length": 2},
                      {"id": 3, "file_names": ["vidB/00000.jpg", "vidB/00001.jpg"], "length": 2}],
           "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "valid.json").write_text(json.dumps(doc))
    ex = Expander("vis")
    ex.add(str(tmp_path / "valid.json"))  # frames found under valid/JPEGImages/ next to it
    assert [(i.base, i.video_id, [Path(f).name for f in i.files]) for i in ex.items] == [
        ("vidB", 3, ["00000.jpg", "00001.jpg"]), ("vidA", 7, ["00000.jpg", "00002.jpg"])]
    with pytest.raises(UsageError, match="batch image"):
        Expander("vis").add(_coco(tmp_path))
    ex = Expander("image")
    ex.add(_coco(tmp_path))
    chunks = image_chunks(ex.images, 2, ex.dataset)
    assert [c.image_ids for c in chunks] == [[139, 285], [632]]
    # without a dataset: numeric stems are the ids (COCO naming), else positions
    imgs = [(Path(f"{n}.jpg"), f"{n}.jpg", None) for n in ("000000000042", "000000000007")]
    assert image_chunks(imgs, 10, None)[0].image_ids == [42, 7]
    imgs = [(Path(f"{n}.jpg"), f"{n}.jpg", None) for n in ("cat", "dog")]
    assert image_chunks(imgs, 10, None)[0].image_ids == [1, 2]


def _coco(tmp_path: Path) -> str:
    folder = tmp_path / "val2017"
    if not folder.exists():
        folder.mkdir()
        for n in (139, 285, 632):
            cv2.imwrite(str(folder / f"{n:012d}.jpg"), np.full((40, 56, 3), n % 255, np.uint8))
    doc = {"images": [{"id": n, "file_name": f"{n:012d}.jpg"} for n in (632, 139, 285)],
           "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]}
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(doc))
    return str(path)


def test_vos_prompt_files_and_masks(tmp_path):
    from segcli.batch.prompts import attach_prompts
    from segcli.io.png import save_indexed_png

    prompts, masks = tmp_path / "prompts", tmp_path / "masks"
    prompts.mkdir()
    (prompts / "a.json").write_text(json.dumps({"objects": [{"id": 1, "points": [[10, 12]]},
                                                            {"id": 2, "frame": 3, "box": [1, 2, 30, 40]}]}))
    (prompts / "bad.json").write_text(json.dumps({"objects": [{"id": 1, "points": [[10, 12, 5]]}]}))
    (masks / "c").mkdir(parents=True)
    m = np.zeros((48, 64), np.uint8)
    m[5:20, 5:20] = 1
    m[30:40, 30:50] = 2
    save_indexed_png(masks / "c" / "00000.png", m)  # DAVIS palette PNG
    items = [WorkItem(name=n, input=n, kind="video", path=f"{n}.mp4", base=n) for n in ("a", "bad", "c", "d")]
    items.append(WorkItem(name="e", input="e", kind="video", path="e.mp4", base="e",
                          row={"prompts": "--point 5,6 --object 2 --box 1,1,9,9", "_dir": str(tmp_path)}))
    attach_prompts(items, str(prompts), str(masks))
    a, bad, c, d, e = items
    assert [(p.obj_id, p.frame, p.points, p.boxes) for p in a.prompts] == [
        (1, 0, [(10.0, 12.0)], []), (2, 3, [], [(1.0, 2.0, 30.0, 40.0)])]
    assert bad.prompts is None and "expected 2" in bad.prompt_error
    assert [(p.obj_id, p.frame, int(p.mask.sum())) for p in c.prompts] == [(1, 0, 225), (2, 0, 200)]
    assert d.prompts is None and "no prompt for d" in d.prompt_error
    assert [(p.obj_id, p.points, p.boxes) for p in e.prompts] == [(1, [(5.0, 6.0)], []),
                                                                  (2, [], [(1.0, 1.0, 9.0, 9.0)])]
    with pytest.raises(PromptError):
        from segcli.batch.prompts import _parse_args

        _parse_args("--point 1,2:neg")


def test_manifest_survives_a_cut_line_and_reconciles(tmp_path):
    out = state.OutputFolder(tmp_path / "out")
    out.open()
    try:
        out.append({"input": "/x/a.mp4", "name": "a", "status": "failed", "error": "e", "finished": "1"})
        with open(out.root / state.MANIFEST, "a") as fh:
            fh.write('{"input": "/x/b.mp4", "na')  # a driver killed mid-line
        (out.root / "b").mkdir()
        marker = {"input": "/x/b.mp4", "name": "b", "status": "ok", "frames": 3, "finished": "2"}
        (out.root / "b" / state.MARKER).write_text(json.dumps(marker))
        (out.root / ".c.segcli-batch-abcdef-1-xyz.part").mkdir()
        out.load_manifest()
        assert out.failed("a") and not out.done("b")
        assert [r["name"] for r in out.reconcile(["a", "b"])] == ["b"]  # finished, its line was lost
        assert out.remove_stale_temps() == [".c.segcli-batch-abcdef-1-xyz.part"]
        out.load_manifest()
        assert out.done("b") and out.records["b"]["recovered"]
        lines = (out.root / state.MANIFEST).read_text().splitlines()
        assert json.loads(lines[-1])["name"] == "b"  # written on a line of its own
        with pytest.raises(Exception, match="another segcli batch"):
            state.OutputFolder(tmp_path / "out").open()
    finally:
        out.close()


def test_ray_missing_is_one_line(monkeypatch, tmp_path):
    from segcli.batch import BatchOptions, run_batch

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UsageError, match=r'pip install "segcli\[ray\]"'):
        run_batch(BatchOptions("vis", [str(tmp_path)], str(tmp_path / "out"), engine="ray"))


# ---- the local engine, through the installed console script --------------------------------------
def test_local_engine_killed_worker_and_driver_resume_exactly_once(tiny, videos, tmp_path):
    segcli_exe = shutil.which("segcli") or str(Path(sys.executable).with_name("segcli"))
    assert Path(segcli_exe).exists(), "the segcli console script is installed"
    out = tmp_path / "out"
    args = [segcli_exe, "batch", "vis", str(videos), "-o", str(out), "--workers", "2", "--weights", tiny,
            "--size", SIZE, "--device", "cpu", "-f", "ytvis", "-f", "davis"]
    env = dict(os.environ)

    # 1. the driver is killed (SIGKILL) once a video is recorded and the long one is under way
    driver = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        if manifest(out) and any(t.startswith(".a_long.") for t in temps(out)):
            break
        time.sleep(0.02)
    workers = {state.temp_pid(n) for n in temps(out)}
    driver.kill()
    driver.communicate()
    first = manifest(out)
    assert first and workers, "killed mid-run"
    deadline = time.monotonic() + 10  # orphaned workers notice and exit, leaving their video undone
    while any(alive(p) for p in workers if p) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if p and alive(p)]
    assert "a_long" not in ok_names(manifest(out))

    # 2. rerun, stopped with Ctrl-C (SIGINT) while the long video runs: exit 130, nothing half-written
    stopped = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    stopping = threading.Event()

    def read_stderr() -> None:
        for line in stopped.stderr:
            lines.append(line)
            if "stopping:" in line:
                stopping.set()

    reader = threading.Thread(target=read_stderr)
    reader.start()
    long_worker = _wait_started(out, "a_long", 120)
    workers = {state.temp_pid(t) for t in temps(out) if alive(state.temp_pid(t))}
    stop_while_frozen(long_worker, lambda: stopped.send_signal(signal.SIGINT), stopping)
    stopped.wait(timeout=120)
    reader.join()
    err = "".join(lines)
    assert stopped.returncode == 130, err
    assert "stopped:" in err and "rerun the same command to resume" in err
    assert temps(out) == [] and not [p for p in workers if p and alive(p)]
    assert "a_long" not in ok_names(manifest(out))

    # 3. rerun: it resumes; the worker on the long video is killed mid-video, the video is redone
    killed: list = []
    watcher = threading.Thread(target=lambda: killed.append(kill_worker_on(out, "a_long")))
    resumed = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    watcher.start()
    _, err = resumed.communicate(timeout=180)
    watcher.join()
    assert resumed.returncode == 11, err  # broken.mp4 failed, the others are done
    assert killed[0], "the long video's worker was killed"
    assert "a worker process died" in err, err.replace("\n", " | ")
    records = manifest(out)
    assert f"already in {out}" in err
    names = ["a_long", "g0", "g1", "g2", "g3"]
    assert ok_names(records) == names  # every video exactly once
    failed = [r for r in records if r["status"] == "failed"]
    assert [r["name"] for r in failed] == ["broken"] and "\n" not in failed[0]["error"]
    assert "broken" in err and "1 of 6 videos failed" in err
    assert temps(out) == [], (killed, err.replace("\n", " | "))

    # 4. a fourth run has nothing to do (in-process this time), still exit 11, manifest unchanged
    from segcli.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args[1:] + ["-q"])
    assert exc.value.code == 11
    assert manifest(out) == records

    # outputs: each equals a single-video run's; one results file with every video's tracks
    for name in ("a_long", "g2"):
        ref = reference_vis(tiny, videos / f"{name}.mp4", tmp_path / f"ref_{name}")
        same_vis_outputs(out / name, ref, name)
    results = json.loads((out / "results.json").read_text())
    index = json.loads((out / "videos.json").read_text())
    ids = {v["name"]: v["id"] for v in index["videos"]}
    assert sorted(ids) == names and len(set(ids.values())) == 5
    for e in results:
        assert e["video_id"] in ids.values()
    per_video = sum(len(json.loads((out / n / f"{n}.ytvis.json").read_text())) for n in names)
    assert len(results) == per_video
    assert sorted(p.name for p in (out / "davis").iterdir()) == names


# ---- a local Ray cluster -------------------------------------------------------------------------
# under pytest-xdist (--dist loadgroup, the README's command) the Ray tests share one worker: one
# local cluster per test run, not one per worker started at the same time
ON_RAY = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False,
                 logging_level="ERROR")
    yield ray
    ray.shutdown()


@ON_RAY
def test_ray_dataset_round_trip_with_a_killed_actor(ray_cluster, tiny, tmp_path):
    from segcli.batch import BatchOptions, run_batch

    root = tmp_path / "ytvis" / "JPEGImages"
    lengths = {"v1": 24, "v2": 4, "v3": 4, "v4": 5}  # v1 long enough to be seen running and killed
    for k, (name, n) in enumerate(lengths.items()):
        make_frames(root / name, n, seed=k)
    (root / "v4" / "00002.jpg").write_bytes(b"not a jpeg")  # unreadable mid-video
    doc = {"videos": [{"id": 100 + k, "file_names": [f"{name}/{i:05d}.jpg" for i in range(n)], "length": n,
                       "width": 64, "height": 48} for k, (name, n) in enumerate(lengths.items())],
           "categories": [{"id": 11, "name": "person"}, {"id": 12, "name": "car"}, {"id": 17, "name": "dog"}]}
    ds = tmp_path / "ytvis" / "valid.json"
    ds.write_text(json.dumps(doc))
    out = tmp_path / "out"
    opts = BatchOptions("vis", [str(ds)], str(out), engine="ray", workers=2, weights=tiny, device="cpu",
                        video_options=dict(scale=(64, 48), score_threshold=0.0), formats=["ytvis"],
                        ship="always")  # inputs and weights through the object store, as to another node
    killed: list = []
    watcher = threading.Thread(target=lambda: killed.append(kill_worker_on(out, "v1")))
    watcher.start()
    result = run_batch(opts)
    watcher.join()
    assert killed[0], "the actor on v1 was killed mid-video"
    records = manifest(out)
    assert ok_names(records) == ["v1", "v2", "v3"]
    failed = [r for r in records if r["status"] == "failed"]
    assert [r["name"] for r in failed] == ["v4"]
    assert "cannot decode image" in failed[0]["error"] and str(root / "v4" / "00002.jpg") in failed[0]["error"]
    assert result.exit_code == 11 and result.ok == 3 and result.failed == 1
    # one results file, loadable the pycocotools way: ids in the dataset, one RLE/null per frame
    results = json.loads((out / "results.json").read_text())
    assert results
    videos = {v["id"]: v for v in doc["videos"]}
    categories = {c["id"] for c in doc["categories"]}
    for e in results:
        assert e["video_id"] in videos and e["category_id"] in categories
        assert len(e["segmentations"]) == videos[e["video_id"]]["length"]
        for rle in e["segmentations"]:
            if rle is not None:
                assert mask_util.decode(rle).shape == (48, 64)
    assert {e["video_id"] for e in results} <= {100, 101, 102}
    assert not (out / "videos.json").exists()  # the dataset JSON is the index
    # a rerun (same cluster) has nothing to do and rebuilds the same results
    again = run_batch(opts)
    assert again.processed == 0 and again.skipped == 4
    assert json.loads((out / "results.json").read_text()) == results


@ON_RAY
def test_ray_image_set_into_coco_results(ray_cluster, tiny, tmp_path):
    from segcli.batch import BatchOptions, run_batch

    coco = _coco(tmp_path)
    out = tmp_path / "out"
    (tmp_path / "val2017" / "000000000999.jpg").write_bytes(b"broken")  # not in the dataset: not an input
    opts = BatchOptions("image", [coco], str(out), engine="ray", workers=2, weights=tiny, device="cpu", chunk=2,
                        image_options=dict(task="instance", scale=(64, 48), score_threshold=0.0),
                        formats=["coco-rle", "panoptic"])
    result = run_batch(opts)
    assert result.exit_code == 0 and result.ok == 2
    entries = json.loads((out / "coco_results.json").read_text())
    assert entries and {e["image_id"] for e in entries} <= {139, 285, 632}
    assert {e["category_id"] for e in entries} <= {1, 3}
    pan = json.loads((out / "panoptic" / "pred.json").read_text())
    assert sorted(a["image_id"] for a in pan["annotations"]) == [139, 285, 632]
    for a in pan["annotations"]:
        assert (out / "panoptic" / "pred" / a["file_name"]).is_file()


@ON_RAY
def test_ray_vos_with_davis_masks_stopped_and_resumed(ray_cluster, tiny, tmp_path):
    import _thread

    import torch

    import segcli.api as api
    from segcli.batch import BatchOptions, run_batch
    from segcli.io.png import save_indexed_png
    from segcli.pipeline.prompts import objects_from_mask_png

    frames, masks = tmp_path / "JPEGImages", tmp_path / "Annotations"
    for k, name in enumerate(("bear", "camel", "dog")):
        make_frames(frames / name, 12 if k == 0 else 4, seed=k)
        if name != "dog":  # dog has no first-frame mask: recorded as failed
            m = np.zeros((48, 64), np.uint8)
            m[10:30, 5:30], m[32:44, 36:60] = 1, 2
            (masks / name).mkdir(parents=True)
            save_indexed_png(masks / name / "00000.png", m)
    out = tmp_path / "out"
    stopping = threading.Event()
    opts = BatchOptions("vos", [str(frames)], str(out), engine="ray", workers=2, weights=tiny, device="cpu",
                        masks_dir=str(masks), video_options=dict(scale=(64, 48), score_threshold=0.0,
                                                                 max_objects=255),
                        progress_stream=_Watch("stopping:", stopping))
    stop = threading.Thread(target=lambda: stop_while_frozen(_wait_started(out, "bear"), _thread.interrupt_main,
                                                             stopping))
    stop.start()
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C while bear runs
        run_batch(opts)
    stop.join()
    assert stopping.is_set()
    assert temps(out) == [] and "bear" not in ok_names(manifest(out))
    result = run_batch(opts)  # resumes
    records = manifest(out)
    assert ok_names(records) == ["bear", "camel"] and result.exit_code == 11
    assert [r["name"] for r in records if r["status"] == "failed"] == ["dog"]
    assert "no prompt for dog" in next(r["error"] for r in records if r["name"] == "dog")
    assert sorted(p.name for p in (out / "davis").iterdir()) == ["bear", "camel"]
    assert len(list((out / "davis" / "bear").glob("*.png"))) == 12
    # the DAVIS PNGs equal a single-video vos run's
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        api.run(str(frames / "bear"), task="vos", weights=tiny, output=f"{tmp_path / 'ref'}/", formats=["davis"],
                prompts=objects_from_mask_png(str(masks / "bear" / "00000.png")), scale=(64, 48), device="cpu",
                score_threshold=0.0, max_objects=255)
    finally:
        torch.set_num_threads(threads)
    for png in sorted((tmp_path / "ref" / "bear").glob("*.png")):
        assert (out / "davis" / "bear" / png.name).read_bytes() == png.read_bytes()


def _wait_started(out: Path, name: str, timeout: float = 90.0) -> int:
    """The pid of the live process writing video `name` (its temp folder's), once it has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in temps(out):
            pid = state.temp_pid(t)
            if t.startswith(f".{name}.") and pid and alive(pid):
                return pid
        time.sleep(0.02)
    raise AssertionError(f"{name} never started")


class _Watch(io.StringIO):
    """A progress stream that sets `event` once `text` has been written to it."""

    def __init__(self, text: str, event: threading.Event):
        super().__init__()
        self.text, self.event = text, event

    def write(self, s: str) -> int:
        if self.text in s:
            self.event.set()
        return super().write(s)


def stop_while_frozen(pid: int, stop, stopping: threading.Event) -> None:
    """Freeze the worker `pid` (SIGSTOP), stop the driver (`stop()`), and let the worker go on only
    once the driver has said it is stopping: the video is then surely still in progress when the
    stop reaches it, however fast this machine runs the rest of it."""
    os.kill(pid, signal.SIGSTOP)
    try:
        stop()
        stopping.wait(60)
    finally:
        os.kill(pid, signal.SIGCONT)
