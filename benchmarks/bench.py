#!/usr/bin/env python
"""Speed / memory / accuracy benchmark of segcli: the same as `segcli bench` (segcli/bench.py),
for a checkout that is not installed.

    .venv/bin/python benchmarks/bench.py                          # ConvNeXt-L random weights, 1280x736
    .venv/bin/python benchmarks/bench.py --weights ../shared/golden/tiny_v1 --size tiny --frames 12
    .venv/bin/python benchmarks/bench.py --help
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segcli.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["bench", *sys.argv[1:]])
