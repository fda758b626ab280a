"""The README's Python API examples run as written (with the tiny model in place of WEIGHTS)."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_api_examples_run(bundle, tmp_path, monkeypatch, capsys):
    blocks = python_blocks((REPO / "README.md").read_text())
    assert blocks, "the README has a Python API section"
    code = "\n".join(blocks)
    assert 'WEIGHTS = "omg-seg-convl"' in code
    code = code.replace('WEIGHTS = "omg-seg-convl"', f"WEIGHTS = {str(bundle.path)!r}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGCLI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    os.symlink(REPO / "samples", tmp_path / "samples")
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.splitlines()
    # 1. run wrote the named files (60 frames of shapes.mp4)
    assert printed[0].startswith("60 ")
    assert (tmp_path / "out" / "shapes.ytvis.json").is_file() and (tmp_path / "out" / "shapes.summary.json").is_file()
    # 2. the pushed session reported object 1 on the prompted frame
    assert "(0, [1" in printed[1], printed
    # 3. the API refused the prompt with the CLI's message
    assert printed[2] == "point (9999,10) is outside the 320x192 frame"
