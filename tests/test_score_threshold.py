"""--score-threshold filters the number the output calls class_score; score is that number times the
frame's mask quality (the official instance score), so both are reported."""

from __future__ import annotations

import json
from pathlib import Path

from segcli.cli import main

SHAPES = str(Path(__file__).resolve().parents[1] / "samples" / "shapes.mp4")


def test_vis_threshold_applies_to_the_reported_class_score(bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEGCLI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "o.jsonl"
    threshold = 0.05
    try:
        main(["vis", SHAPES, "--weights", str(bundle.path), "--end", "3", "--score-threshold", str(threshold),
              "-q", "-o", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr().err
    objects = [o for line in out.read_text().splitlines() for o in json.loads(line)["objects"]]
    assert objects, "the tiny model reports objects at this threshold"
    assert all(o["class_score"] >= threshold for o in objects)
    assert all(o["score"] <= o["class_score"] + 1e-6 for o in objects)
