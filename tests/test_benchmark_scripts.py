"""The benchmark scripts behind the README's tables still run: they are run by hand, rarely, and
the code they drive moves under them (benchmarks/memory.py fed the job a source without the
`interrupt` the live-source work added, and failed on its first run after it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{name}: {done.stdout[-800:]}\n{done.stderr[-800:]}"
    return done.stdout


def test_memory_benchmark_runs_every_length(model_dir):
    out = run_script("memory.py", "--weights", model_dir, "--lengths", "4,8", "--size", "64x36")
    # the table: frames, seconds, frames/s, RSS at 10 % / 50 % / end, peak, growth
    rows = [r for r in map(str.split, out.splitlines()) if len(r) == 8 and r[0].isdigit() and r[3].endswith("M")]
    assert [r[0] for r in rows] == ["4", "8"], out
    assert all(r[6].endswith("M") and float(r[6][:-1]) > 0 for r in rows), out
    # (flatness itself needs long runs: at 8 frames the peak moves by several % from run to run)
    assert "FAILED" not in out and "peak RSS grows" in out, out


def test_vocabulary_size_benchmark_runs(model_dir):
    # --size as a preset, as the script's docstring shows it (it once took only WxH)
    out = run_script("vocab_size.py", "--weights", model_dir, "--classes", "1,5", "--frames", "2", "--size",
                     "tiny", "--repeat", "1")
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["5"])]
    assert [r[0] for r in rows] == ["1", "5"] and all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows), out
