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
