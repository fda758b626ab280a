"""segcli.pipeline.session.VideoSession, the push-style core every caller drives (the CLI through
segcli.api.VideoJob, the API, frame-by-frame callers), on the synthetic model: prompt validation
with exactly the CLI's errors, every task and mode, --start, frames pushed one by one, live
sources, and misuse."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from segcli.api import VideoJob
from segcli.errors import PromptError, UsageError
from segcli.pipeline.engine import Segmenter
from segcli.pipeline.reader import Frame, open_source
from segcli.pipeline.session import VideoSession
from segcli.pipeline.video import ObjectPrompt, VideoOptions, segment_video
from segcli.vocab import datasets

SHAPES = str(Path(__file__).resolve().parents[1] / "samples" / "shapes.mp4")
SMALL = (96, 64)  # resize limits for the tests that need results, not resolution

pytestmark = pytest.mark.usefixtures("segcli_home")


def key(results):
    """What a caller sees, comparable across runs."""
    return [(r.index, [(s.id, s.category, s.score, s.mask.tobytes()) for s in r.segments]) for r in results]


def collect(session, frames):
    out = []
    for f in frames:
        out += session.step(f)
    return out + session.finish()


# ---- prompts: the API raises exactly the CLI's error -------------------------------------------
def _too_many(n):
    return [ObjectPrompt(i, 0, points=[(10.0 * i, 10.0)]) for i in range(1, n + 1)]


PROMPT_CASES = {
    # name: (segcli vos arguments, API prompts, open_source options, words the message must hold)
    "point outside the frame": (["--point", "9999,10"], [ObjectPrompt(1, 0, points=[(9999, 10)])], {},
                                "outside the 320x192 frame"),
    "frame beyond a 7-frame video": (["--end", "7", "--frame", "50", "--point", "10,10"],
                                     [ObjectPrompt(1, 50, points=[(10, 10)])], {"end": 7}, "beyond the end"),
    "mask of the wrong size": (["--mask", "{small_png}"], [ObjectPrompt(1, 0, mask=np.ones((10, 10), bool))], {},
                               "mask is 10x10, the frame is 320x192"),
    "frame before --start": (["--start", "3", "--frame", "1", "--point", "10,10"],
                             [ObjectPrompt(1, 1, points=[(10, 10)])], {"start": 3}, "before --start 3"),
}


@pytest.mark.parametrize("case", list(PROMPT_CASES))
def test_prompt_errors_are_the_clis_before_any_model_work(case, model_dir, segmenter, cli, tmp_path, monkeypatch):
    args, prompts, open_options, words = PROMPT_CASES[case]
    small = tmp_path / "small.png"
    Image.fromarray(np.ones((10, 10), np.uint8), mode="L").convert("P").save(small)
    args = [a.format(small_png=small) for a in args]
    code, _, err = cli(["vos", SHAPES, "--weights", model_dir, "-q", "-o", f"{tmp_path}/never/", *args])
    assert code == 7 and err.count("\n") == 1, err
    assert words in err, err
    assert not (tmp_path / "never").exists()
    line = err.strip()
    # the model is never called: every check comes before it
    monkeypatch.setattr(segmenter, "features", lambda batch: pytest.fail("the model ran"))
    with pytest.raises(PromptError) as job_error:
        VideoJob(SHAPES, VideoOptions(task="vos"), vocabulary=None, output=f"{tmp_path}/never2/", prompts=prompts,
                 open_options=open_options)
    assert line == f"segcli: error: {job_error.value}"
    assert not (tmp_path / "never2").exists()
    with open_source(SHAPES, **open_options) as src:
        session = VideoSession(segmenter, VideoOptions(task="vos"), info=src.info)
        with pytest.raises(PromptError) as session_error:
            for p in prompts:
                session.add_prompt(p.obj_id, p.frame, p.points, p.boxes, p.mask)
    assert line == f"segcli: error: {session_error.value}"


def test_too_many_objects_is_the_clis_error(model_dir, segmenter, cli, tmp_path):
    limit = segmenter.cfg.test.num_proposals
    args = [a for i in range(1, limit + 2) for a in ("--object", str(i), "--point", f"{10 * i},10")]
    code, _, err = cli(["vos", SHAPES, "--weights", model_dir, "-q", "-o", f"{tmp_path}/never/", *args])
    assert code == 7 and err.count("\n") == 1, err
    line = err.strip()
    assert f"at most {limit} objects" in line
    assert not (tmp_path / "never").exists() or not any((tmp_path / "never").iterdir())  # nothing written
    session = VideoSession(segmenter, VideoOptions(task="vos"))
    for p in _too_many(limit):
        session.add_prompt(p.obj_id, p.frame, p.points)
    with pytest.raises(PromptError) as session_error:
        session.add_prompt(limit + 1, 0, [(5.0, 5.0)])
    assert line == f"segcli: error: {session_error.value}"
    assert [p.obj_id for p in session.prompts] == list(range(1, limit + 1))  # the refused one is not kept
    job = VideoJob(SHAPES, VideoOptions(task="vos"), vocabulary=None, output=f"{tmp_path}/never2/",
                   prompts=_too_many(limit + 1), open_options={"end": 3})
    with pytest.raises(PromptError) as job_error:
        job.run(segmenter)
    assert line == f"segcli: error: {job_error.value}"
    assert not (tmp_path / "never2").exists() or not any((tmp_path / "never2").iterdir())


def test_prompts_without_info_are_checked_at_the_first_frame(segmenter, shapes_frames):
    session = VideoSession(segmenter, VideoOptions(task="vos"))  # nothing known about the video yet
    session.add_prompt(1, 0, points=[(9999, 10)])
    with pytest.raises(PromptError, match="outside the 320x192 frame"):
        session.step(shapes_frames(1)[0])
    with pytest.raises(PromptError, match="vos needs a prompt"):
        VideoSession(segmenter, VideoOptions(task="vos")).step(shapes_frames(1)[0])
    with pytest.raises(UsageError, match="prompts go with the vos task"):
        VideoSession(segmenter, VideoOptions(task="vis")).add_prompt(1, 0, points=[(10, 10)])


# ---- tasks and modes ---------------------------------------------------------------------------
def test_open_vocabulary_through_the_pipeline(model_dir, model_embeddings, segmenter, shapes_frames):
    seg = Segmenter.load(model_dir, device="cpu", embeddings=model_embeddings, open_vocab=True)
    assert seg.seen == datasets.overlapping(seg.vocabulary)
    assert any(seg.seen) and not all(seg.seen)  # the synthetic vocabulary has seen and unseen classes
    opts = dict(task="vis", mode="exact", score_threshold=0.0, scale=SMALL)
    pooled = []
    pool = seg.model.clip_pool_sums
    seg.model.clip_pool_sums = lambda *a: pooled.append(1) or pool(*a)
    ensemble = collect(VideoSession(seg, VideoOptions(open_vocab=True, **opts)), shapes_frames(6))
    assert pooled  # CLIP mask pooling ran
    plain = collect(VideoSession(segmenter, VideoOptions(**opts)), shapes_frames(6))
    assert [r.index for r in ensemble] == list(range(6)) and all(r.segments for r in ensemble)
    scores = {(r.index, s.id): (s.category, s.score) for r in ensemble for s in r.segments}
    plain_scores = {(r.index, s.id): (s.category, s.score) for r in plain for s in r.segments}
    assert scores != plain_scores  # the ensemble re-scored the classes
    with pytest.raises(UsageError, match="open_vocab=True"):
        VideoSession(segmenter, VideoOptions(open_vocab=True, **opts))


def test_vss_one_region_per_class(segmenter, model_dir, cli, shapes_frames):
    results = collect(VideoSession(segmenter, VideoOptions(task="vss", mode="exact")), shapes_frames(4))
    assert [r.index for r in results] == [0, 1, 2, 3]
    classes = set()
    for r in results:
        cats = [s.category for s in r.segments]
        assert len(cats) == len(set(cats)) > 0
        assert all(s.id == s.category + 1 for s in r.segments)
        cover = np.sum([s.mask for s in r.segments], axis=0)
        assert (cover == 1).all()  # every pixel in exactly one class region
        classes |= set(cats)
    assert len(classes) > 1
    # `segcli vps --semantic` is this task
    code, out, err = cli(["vps", SHAPES, "--semantic", "--weights", model_dir, "--end", "4", "--mode", "exact", "-q"])
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [[(o["id"], o["area"]) for o in fr["objects"]] for fr in lines] == \
        [[(s.id, int(s.mask.sum())) for s in r.segments] for r in results]


def test_vos_online_from_start(segmenter, model_dir, cli, tmp_path):
    """A prompt on the --start frame; results are numbered from the start frame."""
    start, end = 6, 12
    job = VideoJob(SHAPES, VideoOptions(task="vos", mode="online"), vocabulary=None, output=f"{tmp_path}/o.jsonl",
                   prompts=[ObjectPrompt(1, start, points=[(100.0, 90.0)])], open_options={"start": start, "end": end})
    results = []
    job.run(segmenter, on_result=results.append)
    assert [r.index for r in results] == list(range(start, end))
    assert all([s.id for s in r.segments] == [1] for r in results)  # tracked from the prompt frame on
    # online, on a video longer than the clip splitter holds back: clips leave at the step() that
    # completes them, not at finish()
    with open_source(SHAPES, start=start, end=start + 24) as src:
        session = VideoSession(segmenter, VideoOptions(task="vos", mode="online", scale=SMALL), info=src.info)
        session.add_prompt(1, start, points=[(100.0, 90.0)])
        streamed = [r for f in src for r in session.step(f)]
        rest = session.finish()
    assert streamed and rest
    assert [r.index for r in streamed + rest] == list(range(start, start + 24))
    assert all([s.id for s in r.segments] == [1] for r in streamed + rest)
    code, out, err = cli(["vos", SHAPES, "--weights", model_dir, "--start", str(start), "--end", str(end),
                          "--mode", "online", "--point", "100,90", "-q"])
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [fr["frame"] for fr in lines] == list(range(start, end))
    assert all({o["id"] for o in fr["objects"]} == {1} for fr in lines)


@pytest.mark.parametrize("task", ["vis", "vos"])
def test_frames_pushed_one_by_one_match_the_whole_file(segmenter, task, tmp_path):
    """step() per frame, with reader Frames or raw numpy arrays, gives what a whole-file job and
    segment_video give."""
    n = 7
    prompts = [ObjectPrompt(1, 0, points=[(100.0, 90.0)]), ObjectPrompt(2, 4, boxes=[(200.0, 100.0, 300.0, 180.0)])]
    options = dict(task=task, mode="exact", score_threshold=0.0)

    def opts():
        return VideoOptions(**options, objects=[ObjectPrompt(p.obj_id, p.frame, list(p.points), list(p.boxes))
                                                for p in prompts] if task == "vos" else [])

    whole = []
    vocabulary = None if task == "vos" else segmenter.vocabulary
    VideoJob(SHAPES, opts(), vocabulary=vocabulary, output=f"{tmp_path}/whole.jsonl",
             open_options={"end": n}).run(segmenter, on_result=whole.append)
    assert [r.index for r in whole] == list(range(n)) and sum(len(r.segments) for r in whole) > 0
    with open_source(SHAPES, end=n) as src:
        frames = list(src)
    pulled = list(segment_video(segmenter, [Frame(f.index, f.pts, f.rgb.copy(), f.name) for f in frames], opts()))
    pushed_frames = collect(VideoSession(segmenter, opts()), [Frame(f.index, f.pts, f.rgb.copy(), f.name)
                                                              for f in frames])
    pushed_arrays = collect(VideoSession(segmenter, opts()), [f.rgb.copy() for f in frames])  # numbered 0, 1, ...
    assert key(pushed_frames) == key(whole) == key(pulled) == key(pushed_arrays)


def test_live_source_results_leave_before_finish(segmenter, shapes_frames):
    info = SimpleNamespace(width=320, height=192, num_frames=None, fps=24.0, live=True)
    notices = []
    session = VideoSession(segmenter, VideoOptions(task="vis", mode="auto", score_threshold=0.0, scale=SMALL),
                           info=info, notice=notices.append)
    assert any("live source" in n for n in notices)
    clip = segmenter.cfg.video.clip_size
    out_at = {}
    for f in shapes_frames(2 * clip + 1):
        for r in session.step(f):
            out_at[r.index] = f.index
    # each fixed clip leaves as soon as it is full
    assert out_at == {i: (i // clip + 1) * clip - 1 for i in range(2 * clip)}
    assert [r.index for r in session.finish()] == [2 * clip]
    # the same source, not live: auto mode is exact and holds everything until finish()
    session = VideoSession(segmenter, VideoOptions(task="vis", mode="auto", score_threshold=0.0, scale=SMALL),
                           info=SimpleNamespace(width=320, height=192, num_frames=2 * clip + 1))
    assert not any(session.step(f) for f in shapes_frames(2 * clip + 1))
    assert len(session.finish()) == 2 * clip + 1


def test_misuse_raises_usage_error(segmenter, shapes_frames):
    frames = shapes_frames(3)
    session = VideoSession(segmenter, VideoOptions(task="vis", scale=SMALL))
    session.step(frames[1])
    with pytest.raises(UsageError, match="frames go in order"):
        session.step(frames[0])  # out of order
    with pytest.raises(UsageError, match="frames go in order"):
        session.step(frames[1])  # the same frame again
    with pytest.raises(UsageError, match="is 160x96, the video is 320x192"):
        session.step(np.zeros((96, 160, 3), np.uint8))
    with pytest.raises(UsageError, match="RGB uint8"):
        session.step(np.zeros((192, 320, 3), np.float32))
    session.step(frames[2].rgb)  # an array after reader frames is numbered after them
    assert [r.index for r in session.finish()] == [1, 2]
    assert session.finish() == []
    with pytest.raises(UsageError, match="after finish"):
        session.step(frames[0])
    vos = VideoSession(segmenter, VideoOptions(task="vos", scale=SMALL))
    vos.add_prompt(1, 0, points=[(100, 90)])
    with pytest.raises(PromptError, match="beyond the end of the video"):
        vos.finish()  # the prompt's frame never came
    with pytest.raises(PromptError, match="finished"):
        vos.add_prompt(2, 0, points=[(100, 90)])
    with pytest.raises(UsageError):
        VideoSession(segmenter, VideoOptions(mode="fast"))
