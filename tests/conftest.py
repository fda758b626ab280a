"""Shared fixtures. Parity tests read a golden bundle from --golden (default ../shared/golden/tiny_v1
relative to the repository); when it is absent they are skipped with that reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GOLDEN = REPO.parent / "shared" / "golden" / "tiny_v1"
MANIFEST = REPO.parent / "shared" / "golden" / "manifest_convl.json"


def pytest_addoption(parser):
    parser.addoption("--golden", default=str(DEFAULT_GOLDEN), help="golden bundle directory")


class Bundle:
    """A golden bundle: config.json, inputs.npz, outputs.npz, weights.safetensors."""

    def __init__(self, path: Path):
        self.path = path
        self.config = json.loads((path / "config.json").read_text())
        self._inputs = None
        self._outputs = None

    @property
    def inputs(self):
        if self._inputs is None:
            self._inputs = dict(np.load(self.path / "inputs.npz"))
        return self._inputs

    @property
    def outputs(self):
        if self._outputs is None:
            self._outputs = dict(np.load(self.path / "outputs.npz"))
        return self._outputs

    @property
    def weights(self) -> Path:
        return self.path / "weights.safetensors"


@pytest.fixture(scope="session")
def bundle(request) -> Bundle:
    path = Path(request.config.getoption("--golden"))
    if not (path / "config.json").is_file():
        pytest.skip(f"golden bundle not found at {path}")
    return Bundle(path)


@pytest.fixture(scope="session")
def manifest() -> dict:
    if not MANIFEST.is_file():
        pytest.skip(f"manifest not found at {MANIFEST}")
    return json.loads(MANIFEST.read_text())
