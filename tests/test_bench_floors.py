"""The benchmark's floors: MACs per stage counted on the meta device, and the GEMM peak."""

from __future__ import annotations

import pytest
import torch

from segcli.bench import format_floors, gemm_peak, stage_macs


@pytest.mark.xdist_group("dynamo")  # torch.utils.flop_counter (see tests/conftest.py)
def test_convl_macs_at_the_official_size():
    macs = stage_macs("convl", (1280, 736), 3)
    # ConvNeXt-L at 1280x736 (padded from 1280x720): 645 GMAC per frame (the figure the README's
    # CPU floor rests on); the pixel decoder and the shortcut decoder are smaller
    assert abs(macs["backbone"] / 1e9 - 645.1) < 1.0
    assert 100e9 < macs["pixel_decoder"] < 160e9 and 10e9 < macs["decoder"] < 60e9


def test_floors_table_uses_the_variant_precision():
    peak = gemm_peak(torch.device("cpu"), "fp32", n=256, seconds=0.05)
    assert peak > 0
    result = {"weights": "w", "task": "vis", "variant": "fp32", "fps": 1.0, "frames": 1,
              "stages_s": {"backbone": 2.0, "pixel_decoder": 1.0, "decoder": 0.5}}
    macs = {"w": {"backbone": 1e12, "pixel_decoder": 1e11, "decoder": 5e10}}
    text = format_floors([result], {"fp32": 1.0}, macs)  # 1 TFLOP/s: 1e12 MAC = 2 s floor
    row = text.splitlines()[-1].split()
    assert row[:2] == ["vis", "fp32"]
    assert row[2:5] == ["1000.0", "2000", "1.00x"]


def test_gpu_run_script_calls_scripts_and_options_that_exist(tmp_path):
    """benchmarks/gpu_run.sh is only ever run on a lent GPU machine, with minutes to spare: every
    Python command in it must name a script that exists here and options that script accepts
    (`--help` after the options: an unknown option or a missing script fails before it)."""
    import re
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = (root / "benchmarks" / "gpu_run.sh").read_text()
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        match = re.search(r"python3 (.*?)(?:2>&1|\||$)", line)
        if match and not match.group(1).startswith(("-c ", "-m pip")):
            commands.append(shlex.split(match.group(1).replace("$OUT", str(tmp_path)).replace('"', "")))
    assert len(commands) >= 3, commands  # parity, bench, compiled bench
    for args in commands:
        assert args[0] == "-m" or (root / args[0]).is_file(), args
        done = subprocess.run([sys.executable, *args, "--help"], cwd=root, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"{args}: {done.stderr[-500:]}"
