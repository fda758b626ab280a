"""The Python API the CLI drives is importable from the package root, and runs videos end to end
(synthetic model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import segcli
from segcli import api

SHAPES = str(Path(__file__).resolve().parents[1] / "samples" / "shapes.mp4")


def test_api_names_resolve():
    for name in segcli.__all__:
        assert getattr(segcli, name) is not None


def test_video_through_the_api(segmenter, shapes_frames):
    results = list(segcli.segment_video(segmenter, shapes_frames(2), segcli.VideoOptions(task="vps", mode="online")))
    assert [r.index for r in results] == [0, 1]
    assert any(r.segments for r in results)
    assert all(isinstance(s.mask, np.ndarray) and s.mask.dtype == bool and s.mask.shape == (192, 320)
               for r in results for s in r.segments)


def test_run_loads_the_model_and_writes(model_dir, segcli_home, tmp_path):
    """segcli.api.run: the model folder's own vocabulary, its text tower (embeddings cached), the
    job's writers; the report names what was written."""
    notices = []
    report = api.run(SHAPES, "vis", weights=model_dir, output=f"{tmp_path}/out/", formats=["jsonl", "summary"],
                     device="cpu", open_options={"end": 4}, score_threshold=0.0, notice=notices.append)
    assert report.frames == 4 and report.stopped is None
    assert sorted(Path(p).name for p in report.outputs) == ["shapes.jsonl", "shapes.summary.json", "shapes.summary.txt"]
    lines = [json.loads(line) for line in (tmp_path / "out" / "shapes.jsonl").read_text().splitlines()]
    assert [fr["frame"] for fr in lines] == [0, 1, 2, 3]
    labels = {o["label"] for fr in lines for o in fr["objects"]}
    classes = json.loads((Path(model_dir) / "config.json").read_text())["classes"]
    assert labels and labels <= {c.split(",")[0] for c in classes["things"]}
    assert any("class embeddings for 7 classes" in n for n in notices)


def test_job_reads_a_source_of_the_callers_own(segmenter, shapes_frames, tmp_path):
    """A caller's frame source needs only `info`, iteration and `close` (no FrameSource base, no
    `interrupt`): the memory benchmark feeds generated frames this way."""
    from segcli.pipeline.reader import Frame, SourceInfo

    frames = [f.rgb for f in shapes_frames(3)]

    class Source:
        info = SourceInfo("mine", 320, 192, 24.0, 3, "video", "")
        closed = False

        def __iter__(self):
            for i, rgb in enumerate(frames):
                yield Frame(i, i / 24, rgb, f"{i:05d}")

        def close(self):
            Source.closed = True

    job = api.VideoJob(Source(), segcli.VideoOptions(task="vis", score_threshold=0.0), vocabulary=segmenter.vocabulary,
                       output=str(tmp_path / "out.jsonl"), formats=["jsonl"])
    report = job.run(segmenter)
    assert report.frames == 3 and report.stopped is None and Source.closed
    assert [json.loads(line)["frame"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [0, 1, 2]
