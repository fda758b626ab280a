"""Live sources through the installed `segcli` console script: an HTTP URL gives the file's
results, a dropped TCP stream exits 10 with every result up to the drop written and complete,
and stdin from a slow producer yields results before the producer has finished."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_live import TcpProducer, http_server, mpegts_bytes  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "samples" / "shapes.mp4"
SEGCLI = shutil.which("segcli") or str(Path(sys.executable).parent / "segcli")


@pytest.fixture
def env(tmp_path_factory):
    home = tmp_path_factory.getbasetemp() / "segcli_home_live"
    return {**os.environ, "SEGCLI_HOME": str(home), "HF_HUB_OFFLINE": "1"}


def segcli(args, env, **kw):
    return subprocess.run([SEGCLI, *map(str, args)], env=env, capture_output=True, text=True, timeout=120, **kw)


def jsonl_frames(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_http_url_gives_the_files_results(bundle, env, http_server):  # noqa: F811
    base, files = http_server
    files["shapes.mp4"] = (SHAPES.read_bytes(), None)
    args = ["--weights", bundle.path, "--vocab", "ball,box", "--score-threshold", "0", "--max-frames", "6",
            "--mode", "online", "-q"]
    local = segcli(["vis", SHAPES, *args], env)
    remote = segcli(["vis", f"{base}/shapes.mp4", *args], env)
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    a, b = jsonl_frames(local.stdout), jsonl_frames(remote.stdout)
    assert [f["frame"] for f in a] == list(range(6))
    assert [[(o["id"], o["rle"]["counts"]) for o in f["objects"]] for f in a] == \
           [[(o["id"], o["rle"]["counts"]) for o in f["objects"]] for f in b]


def test_dropped_stream_exits_10_with_complete_outputs(bundle, env, tmp_path):
    producer = TcpProducer(60, pace=0.01, reset_after=15)
    try:
        out = tmp_path / "out"
        run = segcli(["vis", producer.url, "--weights", bundle.path, "--vocab", "ball", "--score-threshold", "0",
                      "-f", "jsonl", "-f", "summary", "-o", f"{out}/"], env)
    finally:
        producer.close()
    assert run.returncode == 10, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("segcli: error:")]
    assert len(errors) == 1 and "dropped" in errors[0] and "Traceback" not in run.stderr
    name = next(out.glob("*.jsonl")).stem
    frames = jsonl_frames((out / f"{name}.jsonl").read_text())
    # every frame delivered before the reset is in the file, in order, and the file is complete JSON
    assert [f["frame"] for f in frames] == list(range(len(frames))) and len(frames) >= 12
    summary = json.loads((out / f"{name}.summary.json").read_text())
    assert summary["frames"] == len(frames)
    run = summary["run"]  # latency to the first result and per clip, reported for live sources
    assert run["live"] and run["stopped"] == "stream"
    assert run["first_result_s"] > 0 and 0 < run["clip_latency_s"]["mean"] <= run["clip_latency_s"]["max"]


def test_stdin_results_before_the_producer_finishes(bundle, env):
    data = mpegts_bytes(40)
    half = len(data) // 2
    proc = subprocess.Popen([SEGCLI, "vis", "-", "--weights", str(bundle.path), "--vocab", "ball",
                             "--score-threshold", "0", "-q", "-o", "-",
                             # FFmpeg probes 5 s of a stream before its first frame by default
                             "--source-option", "analyzeduration=200000"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        proc.stdin.write(data[:half])
        proc.stdin.flush()
        first = json.loads(lines.get(timeout=60))  # while half of the stream is still to come
        assert first["frame"] == 0
        proc.stdin.write(data[half:])
        proc.stdin.close()
        assert proc.wait(60) == 0, proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
    rest = []
    while not lines.empty():
        rest.append(json.loads(lines.get()))
    assert [f["frame"] for f in [first, *rest]] == list(range(40))
