"""`segcli app`: the feature cache, click -> mask with cached features, the HTTP API (FastAPI
TestClient), tracking with events, vis with a typed vocabulary, exports that the shown `segcli ...`
command reproduces byte for byte, and the safety rules (hosts, origins, uploads, paths)."""

from __future__ import annotations

import io
import json
import shlex
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from segcli.webapp.interactive import FeatureCache, FrameFeatures, PromptSegmenter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHAPES = str(REPO / "samples" / "shapes.mp4")
PHOTO = str(REPO / "samples" / "photo.png")
CLICK = (232, 160)  # a click on frame 0 of shapes.mp4 whose tiny-model mask covers the clicked pixel


@pytest.fixture(autouse=True)
def segcli_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SEGCLI_HOME", str(tmp_path_factory.getbasetemp() / "segcli_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(request):
    path = Path(request.config.getoption("--golden"))
    if not (path / "config.json").is_file():
        pytest.skip(f"tiny reference model not found at {path}")
    return str(path)


@pytest.fixture(scope="module")
def seg(tiny, tmp_path_factory):
    import os

    from segcli.pipeline.engine import Segmenter

    old = os.environ.get("SEGCLI_HOME")
    os.environ["SEGCLI_HOME"] = str(tmp_path_factory.getbasetemp() / "segcli_home")
    try:
        return Segmenter.load(tiny)
    finally:
        if old is None:
            os.environ.pop("SEGCLI_HOME", None)
        else:
            os.environ["SEGCLI_HOME"] = old


@pytest.fixture
def make_client(seg, tiny):
    from segcli.webapp import AppConfig, AppState
    from segcli.webapp.server import create_app

    states = []

    def make(input=SHAPES, **kw):
        # each test gets its own vocabulary state: the fixture's model is shared
        seg.vocabulary, seg.class_agnostic = seg._vocab0, False
        seg.model.set_class_embeddings(seg._emb0)
        state = AppState(seg, AppConfig(weights=tiny, input=input, **kw))
        states.append(state)
        return TestClient(create_app(state), base_url="http://127.0.0.1"), state

    if not hasattr(seg, "_vocab0"):
        seg._vocab0 = seg.vocabulary
        emb = seg.model.panoptic_head.cls_embed  # (D, K+1, P) -> (K, P, D)
        seg._emb0 = emb[:, :-1].permute(1, 2, 0).clone()
    yield make
    for s in states:
        s.close()





def png_array(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)))


def zip_pngs(data: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: np.array(Image.open(io.BytesIO(z.read(n)))) for n in z.namelist() if n.endswith(".png")}


# ---- the cache ------------------------------------------------------------------------------------


def test_feature_cache_is_a_bounded_lru():
    cache = FeatureCache(budget_mb=3 / 1024)  # 3 KiB
    item = lambda n: FrameFeatures(None, (), n * 1024, 0.0)  # noqa: E731
    cache.put("a", item(1))
    cache.put("b", item(1))
    cache.put("c", item(1))
    assert cache.get("a") is not None  # a is now the most recent: b goes first
    cache.put("d", item(1))
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    cache.put("huge", item(4))  # larger than the whole budget: not kept, nothing evicted for it
    assert "huge" not in cache and len(cache) == 3
    stats = cache.stats()
    assert stats["frames"] == 3 and stats["used_mb"] == round(3 / 1024, 2) and stats["hits"] == 1
    cache.discard(lambda k: k == "a")
    assert "a" not in cache and len(cache) == 2


def test_cached_click_gives_segment_image_masks(seg):
    """The app's prompt path equals `segcli image --point/--box` (same scale, same decoder), and a
    second click on the frame reuses the features."""
    from segcli.pipeline.image import ImageOptions, segment_image
    from segcli.pipeline.reader import open_source

    with open_source(PHOTO) as src:
        frame = next(iter(src))
    objects = {1: ([(100.0, 100.0)], []), 2: ([], [(10.0, 10.0, 200.0, 150.0)])}
    ps = PromptSegmenter(seg, seg.cfg.preprocess.image_scale, FeatureCache(64))
    first, t1 = ps.segment("photo", frame.rgb, objects, labelled=True)
    again, t2 = ps.segment("photo", lambda: pytest.fail("a cached frame is not decoded again"), objects, True)
    assert not t1.cached and t1.features_s > 0 and t2.cached and t2.features_s == 0
    ref = segment_image(seg, frame, ImageOptions(objects=objects, label_objects=True))
    assert [s.id for s in ref.segments] == [m.obj_id for m in first] == [1, 2]
    for s, a, b in zip(ref.segments, first, again):
        assert np.array_equal(s.mask, a.mask) and np.array_equal(a.mask, b.mask)
        assert (s.label, round(s.score, 6)) == (a.label, round(a.score, 6))


# ---- the API --------------------------------------------------------------------------------------


def test_page_and_static_files_and_info(make_client):
    client, _ = make_client()
    page = client.get("/")
    assert page.status_code == 200 and "<canvas id=\"mask\">" in page.text and "/static/app.js" in page.text
    for name, kind in (("app.js", "javascript"), ("app.css", "css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    info = client.get("/api/info").json()
    assert [(s["name"], s["kind"], s["width"], s["height"], s["num_frames"]) for s in info["sources"]] == [
        ("shapes", "video", 320, 192, 60)]
    assert "davis" in info["formats"] and info["cache"]["budget_mb"] == 1024
    frame = client.get("/api/sources/1/frames/5")
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(frame.content)).size == (320, 192)


def test_folder_inputs(make_client, tmp_path):
    """A folder: its images are one source (a video's frames, as segcli reads folders), each video another."""
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SHAPES, folder / "b.mp4")
    shutil.copy(SHAPES, folder / "a.mp4")
    for k in range(3):
        shutil.copy(PHOTO, folder / f"f{k}.png")
    client, state = make_client(input=str(folder))
    sources = client.get("/api/info").json()["sources"]
    assert [(s["name"], s["kind"], s["num_frames"]) for s in sources] == [
        ("in", "folder", 3), ("a", "video", 60), ("b", "video", 60)]
    assert client.get("/api/sources/1/frames/2").status_code == 200
    assert client.get("/api/sources/1/frames/3").status_code == 404
    view = client.post("/api/sources/1/prompts", json={"frame": 2, "object": 1, "point": [100, 100]}).json()
    assert view["frame"] == 2 and view["segments"]


def test_click_box_undo_clear(make_client):
    client, state = make_client()
    r = client.post("/api/sources/1/prompts", json={"frame": 0, "object": 1, "point": list(CLICK)})
    assert r.status_code == 200, r.text
    view = r.json()
    assert not view["timing"]["cached"] and [s["id"] for s in view["segments"]] == [1]
    mask = png_array(client.get(view["mask"]).content)
    assert mask.shape == (192, 320) and mask[CLICK[1], CLICK[0]] == 1  # the clicked pixel is in object 1
    # a second object on the same frame: only the prompt decoder runs
    r = client.post("/api/sources/1/prompts", json={"frame": 0, "object": 2, "box": [300, 120, 200, 20]})
    view = r.json()
    assert view["timing"]["cached"] and view["timing"]["features_ms"] == 0
    assert [s["id"] for s in view["segments"]] == [1, 2] and view["prompts"]["2"]["boxes"] == [[200, 20, 300, 120]]
    assert set(np.unique(png_array(client.get(view["mask"]).content))) <= {0, 1, 2}
    st = client.get("/api/sources/1/state").json()
    assert [o["id"] for o in st["objects"]] == [1, 2] and st["prompt_frames"] == [0]
    assert state.cache.stats()["frames"] == 1
    undone = client.post("/api/sources/1/undo").json()
    assert [s["id"] for s in undone["segments"]] == [1]
    client.post("/api/sources/1/prompts", json={"frame": 3, "object": 2, "point": [10, 10]})
    st = client.post("/api/sources/1/clear", json={"object": 1}).json()
    assert [o["id"] for o in st["objects"]] == [2] and st["prompt_frames"] == [3]
    st = client.post("/api/sources/1/clear", json={}).json()
    assert st["objects"] == [] and client.post("/api/sources/1/undo").status_code == 400


@pytest.mark.parametrize("body, status, words", [
    ({"frame": 0, "object": 1, "point": [400, 10]}, 400, "outside the 320x192 frame"),
    ({"frame": 0, "object": 1, "box": [10, 10, 10, 50]}, 400, "empty"),
    ({"frame": 0, "object": 0, "point": [1, 1]}, 400, "object id"),
    ({"frame": 60, "object": 1, "point": [1, 1]}, 404, "frame 60"),
    ({"frame": "x", "object": 1, "point": [1, 1]}, 400, "frame 'x'"),
    ({"frame": 0, "object": 1}, 400, "one point"),
])
def test_bad_prompts_are_one_clear_error(make_client, body, status, words):
    client, _ = make_client()
    r = client.post("/api/sources/1/prompts", json=body)
    assert r.status_code == status and words in r.json()["error"]


def test_not_found_and_malformed_requests_are_json_errors(make_client):
    client, _ = make_client()
    for url in ("/api/sources/9/state", "/api/sources/1/frames/60", "/api/exports/nope", "/api/runs/nope",
                "/static/state.py", "/static/..%2fstate.py", "/api/nothing"):
        r = client.get(url)
        assert r.status_code == 404 and r.json()["error"], url
    r = client.post("/api/sources/1/prompts", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    r = client.post("/api/sources/1/runs", json={"task": "track"})
    assert r.status_code == 400 and "unknown task" in r.json()["error"]
    r = client.post("/api/sources/1/runs", json={"task": "vos"})
    assert r.status_code == 400 and "click on an object first" in r.json()["error"]
    r = client.post("/api/sources/1/export", json={"formats": ["davis"]})
    assert r.status_code == 400 and "nothing to export" in r.json()["error"]


def test_hosts_origins_and_uploads_are_checked(make_client):
    client, state = make_client(max_upload_mb=1)
    assert client.get("/api/info", headers={"host": "evil.example:8765"}).status_code == 403  # DNS rebinding
    r = client.post("/api/sources/1/prompts", json={"frame": 0, "object": 1, "point": [5, 5]},
                    headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and state.sources[1].prompts.actions == []
    same = client.post("/api/sources/1/prompts", json={"frame": 0, "object": 1, "point": [5, 5]},
                       headers={"origin": "http://127.0.0.1"})
    assert same.status_code == 200
    # uploads: size-limited, images and videos only, saved under the app's own folder
    big = client.post("/api/upload", params={"filename": "big.png"}, content=b"\0" * (1024 * 1024 + 1))
    assert big.status_code == 400 and "larger than the limit of 1 MB" in big.json()["error"]
    bad = client.post("/api/upload", params={"filename": "../../evil.sh"}, content=b"echo")
    assert bad.status_code == 400 and "expected an image" in bad.json()["error"]
    junk = client.post("/api/upload", params={"filename": "junk.png"}, content=b"not an image")
    assert junk.status_code == 415 and "cannot decode" in junk.json()["error"]
    ok = client.post("/api/upload", params={"filename": "../x/My Photo.png"}, content=Path(PHOTO).read_bytes())
    assert ok.status_code == 200, ok.text
    src = ok.json()
    assert (src["kind"], src["width"], src["height"], src["uploaded"]) == ("image", 320, 192, True)
    stored = Path(state.sources[src["id"]].path)
    assert stored.name == "My_Photo.png" and state._tmp in stored.parents
    assert len(state.sources) == 2


# ---- runs -----------------------------------------------------------------------------------------


def events_of(client, rid):
    out = []
    with client.stream("GET", f"/api/runs/{rid}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def test_track_export_matches_the_shown_command(make_client, tmp_path, capsys):
    client, state = make_client()
    client.post("/api/sources/1/prompts", json={"frame": 0, "object": 1, "point": list(CLICK)})
    client.post("/api/sources/1/prompts", json={"frame": 0, "object": 2, "box": [200, 20, 300, 120]})
    client.post("/api/sources/1/prompts", json={"frame": 3, "object": 1, "point": [150, 100]})
    r = client.post("/api/sources/1/runs", json={"task": "vos", "end": 6, "mode": "online"})
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    state.wait(60)
    events = events_of(client, rid)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "progress" in kinds
    assert [e["frame"] for e in events if e["type"] == "frame"] == list(range(6))  # frame by frame, in order
    # the progress stream reports frames as they are read, before the last results
    assert kinds.index("progress") < kinds.index("frame")
    summary = client.get(f"/api/runs/{rid}").json()
    assert summary["status"] == "done" and summary["frames_done"] == 6
    tracks = client.get("/api/sources/1/tracks").json()["tracks"]
    assert [t["id"] for t in tracks] == [1, 2] and tracks[0]["spans"] == [[0, 5]]
    res = client.get("/api/sources/1/results/3").json()
    assert {s["id"] for s in res["segments"]} == {1, 2}
    idx = png_array(client.get(res["mask"]).content)
    assert set(np.unique(idx)) <= {0, 1, 2}
    exp = client.post("/api/sources/1/export", json={"formats": ["davis", "summary"]}).json()
    assert exp["command"].startswith(f"segcli vos {SHAPES} --point 232,160 --object 2 --box 200,20,300,120 "
                                      "--object 1 --frame 3 --point 150,100 --weights ")
    assert exp["note"] is None
    pngs = zip_pngs(client.get(exp["url"]).content)
    assert sorted(pngs) == [f"shapes/{k:05d}.png" for k in range(6)]
    assert (pngs["shapes/00000.png"] == 1).any() and (pngs["shapes/00000.png"] == 2).any()
    # the command line gives the same files
    args = shlex.split(exp["command"])
    assert args[0] == "segcli" and args[-2:] == ["-o", "out/"]
    out = tmp_path / "cli"
    code, _, err = run_cli(args[1:-1] + [f"{out}/", "-q"], capsys)
    assert code == 0, err
    for name, arr in pngs.items():
        assert np.array_equal(np.array(Image.open(out / name)), arr), name
    with zipfile.ZipFile(io.BytesIO(client.get(exp["url"]).content)) as z:
        ours = json.loads(z.read("shapes.summary.json"))
    theirs = json.loads((out / "shapes.summary.json").read_text())
    theirs.pop("run", None)  # the CLI's own timings (first result, clip latency): never the same twice
    ours.pop("run", None)
    assert ours == theirs

    # correction on a later frame: re-track from there keeps the frames before it
    before = {k: client.get(f"/api/sources/1/results/{k}/mask.png").content for k in range(6)}
    client.post("/api/sources/1/prompts", json={"frame": 4, "object": 2, "point": [250, 60]})
    r = client.post("/api/sources/1/runs", json={"task": "vos", "retrack_from": 4})
    assert r.status_code == 200, r.text
    state.wait(60)
    summary = client.get(f"/api/runs/{r.json()['id']}").json()
    assert summary["status"] == "done", summary["error"]
    assert summary["frames_done"] == 6 and not summary["exact_command"]
    assert any("objects 1 continue" in n for n in summary["notices"])
    for k in range(4):
        assert client.get(f"/api/sources/1/results/{k}/mask.png").content == before[k]
    exp = client.post("/api/sources/1/export", json={"formats": "davis"}).json()
    assert "re-tracked" in exp["note"] and "--frame 4 --point 250,60" in exp["command"]
    assert len(zip_pngs(client.get(exp["url"]).content)) == 6


def test_vocabulary_labels_vis_and_cancel(make_client):
    client, state = make_client()
    v = client.post("/api/vocab", json={"vocab": "ball,box|square,triangle"}).json()
    assert v["labelled"] and v["classes"] == ["ball", "box", "triangle"] and v["args"].startswith("--vocab")
    view = client.post("/api/sources/1/prompts", json={"frame": 0, "object": 1, "point": list(CLICK)}).json()
    seg = view["segments"][0]
    assert seg["label"] in ("ball", "box", "triangle") and 0 < seg["score"] <= 1
    bad = client.post("/api/vocab", json={"vocab": " , "})
    assert bad.status_code == 400 and bad.json()["error"]
    r = client.post("/api/sources/1/runs", json={"task": "vis", "end": 6})
    assert r.status_code == 200
    assert shlex.split(r.json()["command"])[:5] == ["segcli", "vis", SHAPES, "--vocab", "ball,box|square,triangle"]
    state.wait(60)
    tracks = client.get("/api/sources/1/tracks").json()["tracks"]
    assert tracks and all(t["label"] in ("ball", "box", "triangle") for t in tracks)
    exp = client.post("/api/sources/1/export", json={"formats": ["ytvis"]}).json()
    with zipfile.ZipFile(io.BytesIO(client.get(exp["url"]).content)) as z:
        ytvis = json.loads(z.read("shapes.ytvis.json"))
    assert ytvis and all(len(t["segmentations"]) == 6 for t in ytvis)
    assert client.post("/api/vocab", json={"vocab": ""}).json()["labelled"] is False  # labels off again


def test_one_run_at_a_time_cancel_and_failures(make_client, monkeypatch):
    """While a run goes, a second run and a vocabulary change are refused (409); cancel stops it at
    the next frame; a run that fails ends with an error event (the page never waits forever)."""
    import threading

    from segcli.webapp import state as state_mod

    client, state = make_client()
    client.post("/api/sources/1/prompts", json={"frame": 0, "object": 1, "point": list(CLICK)})
    gate = threading.Event()
    real_step = state_mod.AppState._execute_video

    def slow(self, source, run, plan):
        gate.wait(30)
        return real_step(self, source, run, plan)

    monkeypatch.setattr(state_mod.AppState, "_execute_video", slow)
    rid = client.post("/api/sources/1/runs", json={"task": "vps"}).json()["id"]
    assert client.post("/api/sources/1/runs", json={"task": "vos"}).status_code == 409
    assert client.post("/api/vocab", json={"vocab": "cat"}).status_code == 409
    assert client.get("/api/info").json()["busy"] is True
    client.post(f"/api/runs/{rid}/cancel")
    gate.set()
    state.wait(60)
    final = client.get(f"/api/runs/{rid}").json()
    assert final["status"] == "cancelled" and events_of(client, rid)[-1]["type"] == "cancelled"

    def broken(self, source, run, plan):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(state_mod.AppState, "_execute_video", broken)
    rid = client.post("/api/sources/1/runs", json={"task": "vos"}).json()["id"]
    state.wait(30)
    last = events_of(client, rid)[-1]
    assert last["type"] == "error" and "decoder exploded" in last["message"]
    assert client.get(f"/api/runs/{rid}").json()["error"].endswith("decoder exploded")


def test_image_source_prompts_export_like_segcli_image(make_client, tmp_path, capsys):
    client, _ = make_client(input=PHOTO)
    assert client.get("/api/info").json()["sources"][0]["kind"] == "image"
    client.post("/api/sources/1/prompts", json={"frame": 0, "object": 1, "point": [100, 100]})
    client.post("/api/sources/1/prompts", json={"frame": 0, "object": 2, "box": [10, 10, 200, 150]})
    r = client.post("/api/sources/1/runs", json={"task": "vos"})
    assert r.status_code == 200, r.text
    _.wait(30)
    exp = client.post("/api/sources/1/export", json={"formats": ["coco-rle"]}).json()
    assert exp["command"].startswith(f"segcli image {PHOTO} --point 100,100 --box 10,10,200,150 --weights")
    with zipfile.ZipFile(io.BytesIO(client.get(exp["url"]).content)) as z:
        ours = json.loads(z.read("photo.coco.json"))
    out = tmp_path / "img"
    code, _, err = run_cli(shlex.split(exp["command"])[1:-2] + ["-o", f"{out}/", "-q"], capsys)
    assert code == 0, err
    assert json.loads((out / "photo.coco.json").read_text()) == ours


def test_cli_checks_before_loading(tiny, tmp_path, capsys):
    code, _, err = run_cli(["app", str(tmp_path / "missing.mp4"), "--weights", tiny, "--no-open"], capsys)
    assert code == 3 and "no such file" in err
    code, _, err = run_cli(["app", SHAPES, "--weights", tiny, "--port", "70000", "--no-open"], capsys)
    assert code == 2 and "--port 70000" in err
    code, _, err = run_cli(["app", SHAPES, "--weights", tiny, "--cache-mb", "-1", "--no-open"], capsys)
    assert code == 2 and "--cache-mb" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["app", str(empty), "--weights", tiny, "--no-open"], capsys)
    assert code == 4 and "no images or videos" in err
