"""Shared fixtures.

* `model_dir` / `segmenter`: a tiny synthetic model folder (tests/synthetic.py), built once per
  session from a seed. Pipeline, API and CLI tests that need a working model but no golden numbers
  run on it, so they need nothing outside the repository.
* `bundle`: the golden bundle from --golden (default ../shared/golden/tiny_v1 relative to the
  repository) for the numerical parity tests; when it is absent they are skipped with that reason.
  `golden_segmenter` / `golden_runs` hold the loaded golden model and the results of the golden
  video runs that several tests read, computed once per session.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GOLDEN = REPO.parent / "shared" / "golden" / "tiny_v1"
MANIFEST = REPO.parent / "shared" / "golden" / "manifest_convl.json"


def pytest_configure(config):
    """A shell without job control starts `cmd &` with SIGINT ignored, and every console script a
    test starts would inherit that: the Ctrl-C tests would see their signal ignored. Take it back.

    Under pytest-xdist (`-n auto`, the README's command) the workers share the cores: each gets
    its share of torch threads, and so do the console scripts it starts (OMP_NUM_THREADS), instead
    of every process running one thread per core. (The parity tests hold at any thread count.)

    SEGCLI_HOME is a fresh folder for the whole run: no test reads or writes the user's. An xdist
    worker ends without the interpreter's teardown (1-1.4 s of freeing torch's modules, which the
    controller waits for at the end of every run): its results are sent by then, and its exit
    status is not read."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN or _sigint_ignored():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(config, "workerinput"):
        from segcli.runtime import leave_now

        atexit.register(leave_now)
    else:  # the controller (or a serial run): the workers inherit it
        home = tempfile.mkdtemp(prefix="segcli-tests-home-")
        os.environ["SEGCLI_HOME"] = home
        config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


def pytest_runtest_setup(item):
    """`--dist loadgroup` sends an xdist_group's tests to one worker (`ray`: one local Ray cluster
    per test run; `dynamo`: the tests that import torch._dynamo, 1 s and a heap twice as large,
    through open_clip, timm, torch.utils.flop_counter or a model built on the meta device, whose
    normal_ imports it; `golden_runs`: the tests that read GoldenRuns) by the suffix pytest-xdist
    adds to their node ids. A pytest that does not read it (9.2 with xdist 3.8) spreads them over
    all workers: those tests fail, saying why."""
    config = item.config
    if (hasattr(config, "workerinput") and config.getvalue("loadgroup") and item.get_closest_marker("xdist_group")
            and "@" not in item.nodeid):
        pytest.fail("xdist_group has no effect with this pytest / pytest-xdist pair: install the versions "
                    "that pyproject.toml's test extra allows", pytrace=False)


def pytest_collection_finish(session):
    """What collection imported (torch, open_clip, segcli, the test modules: about 400,000 objects)
    lives until the end: freeze it out of the garbage collector, whose every full pass would
    otherwise walk all of it again (0.1-0.2 s each; pytest alone makes ten at the end)."""
    gc.collect()
    gc.freeze()


def _sigint_ignored() -> bool:
    """SIGINT ignored at the OS level (Python's own table may still name its default handler)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except OSError:
        pass
    return False


def pytest_addoption(parser):
    # give it as --golden=DIR: with `--golden DIR` and no test path, pytest takes DIR for the test
    # path before any conftest is loaded, and the option is unknown then
    parser.addoption("--golden", default=str(DEFAULT_GOLDEN), help="golden bundle directory (--golden=DIR)")


# ---- the synthetic model ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> str:
    """A synthetic model folder (config.json, weights.safetensors, text_tower.safetensors, its own
    classes), the layout `--weights DIR` reads."""
    from synthetic import make_model_folder

    return str(make_model_folder(tmp_path_factory.mktemp("synthetic_model")))


@pytest.fixture(scope="session")
def model_embeddings(model_dir):
    """The synthetic folder's class embeddings of its own vocabulary, from its text tower."""
    from synthetic import class_embeddings

    return class_embeddings(model_dir)


@pytest.fixture(scope="session")
def segmenter(model_dir, model_embeddings):
    """The synthetic model loaded once: fp32, CPU, its own vocabulary. Tests must not change it
    (monkeypatch restores what a test patches)."""
    from segcli.pipeline.engine import Segmenter

    return Segmenter.load(model_dir, device="cpu", precision="fp32", embeddings=model_embeddings)


@pytest.fixture(scope="session")
def shapes_frames():
    """The first 9 frames of samples/shapes.mp4 (320x192); `shapes_frames()` gives fresh copies
    (the pipeline drops each frame's pixels once its clip is decoded)."""
    from segcli.pipeline.reader import Frame, open_source

    with open_source(str(REPO / "samples" / "shapes.mp4"), end=9) as src:
        frames = list(src)

    def fresh(n: int = 9):
        return [Frame(f.index, f.pts, f.rgb.copy(), f.name) for f in frames[:n]]

    return fresh


@pytest.fixture
def segcli_home(tmp_path_factory, monkeypatch):
    """SEGCLI_HOME in the session's temp folder, shared by the tests that use it (class embeddings
    are cached once); no network."""
    home = tmp_path_factory.getbasetemp() / "segcli_home"
    monkeypatch.setenv("SEGCLI_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def run_cli(args, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from segcli.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: cli(args) -> (exit code, stdout, stderr)."""
    return lambda args: run_cli(args, capsys)


# ---- the golden bundle -----------------------------------------------------------------------
class LazyArrays(Mapping):
    """The arrays of an .npz file, each read on first use and then kept (a test reads a few of the
    bundle's ~150 arrays; reading all of outputs.npz costs 0.4 s in every test process)."""

    def __init__(self, path: Path):
        self._npz = np.load(path)
        self._read: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._read:
            self._read[key] = self._npz[key]
        return self._read[key]

    def __iter__(self):
        return iter(self._npz.files)

    def __len__(self) -> int:
        return len(self._npz.files)


class Bundle:
    """A golden bundle: config.json, inputs.npz, outputs.npz, weights.safetensors."""

    def __init__(self, path: Path):
        self.path = path
        self.config = json.loads((path / "config.json").read_text())
        self._inputs = None
        self._outputs = None

    @property
    def inputs(self) -> LazyArrays:
        if self._inputs is None:
            self._inputs = LazyArrays(self.path / "inputs.npz")
        return self._inputs

    @property
    def outputs(self) -> LazyArrays:
        if self._outputs is None:
            self._outputs = LazyArrays(self.path / "outputs.npz")
        return self._outputs

    @property
    def weights(self) -> Path:
        return self.path / "weights.safetensors"

    def frames(self):
        """The golden video as reader Frames (fresh arrays each call)."""
        from segcli.pipeline.reader import Frame

        return [Frame(i, i / 25, rgb.copy(), f"{i:05d}") for i, rgb in enumerate(self.inputs["vid_frames_raw_rgb"])]


@pytest.fixture(scope="session")
def bundle(request) -> Bundle:
    path = Path(request.config.getoption("--golden"))
    if not (path / "config.json").is_file():
        pytest.skip(f"golden bundle not found at {path}")
    return Bundle(path)


@pytest.fixture(scope="session")
def golden_segmenter(bundle):
    """The golden model, fp32 on the CPU, with the bundle's own class embeddings."""
    import torch

    from segcli.pipeline.engine import Segmenter

    emb = torch.from_numpy(bundle.outputs["cls_embed_file"])
    return Segmenter.load(str(bundle.path), device="cpu", precision="fp32", embeddings=emb)


class GoldenRuns:
    """Whole-video runs of the golden model on the bundle's frames, each computed once per session
    (several tests read the same exact vis/vps results; they share the xdist group "golden_runs",
    so that one worker computes them). `calls[key]`: how many times the head's
    classifier ran during that run."""

    # the runs several tests share
    EXACT_VPS = dict(task="vps", mode="exact")
    EXACT_VIS = dict(task="vis", mode="exact", score_threshold=0.0, max_objects=1000)

    def __init__(self, bundle: Bundle, seg):
        self.bundle, self.seg = bundle, seg
        self._results: dict = {}
        self.calls: dict = {}

    def get(self, **options):
        """Results (list of FrameResult) of segment_video with VideoOptions(**options) (no prompts)."""
        from segcli.pipeline.video import VideoOptions, segment_video

        key = tuple(sorted(options.items()))
        if key not in self._results:
            head = self.seg.model.panoptic_head
            classify = head.forward_logit
            count = [0]

            def counted(emb):
                count[0] += 1
                return classify(emb)

            head.forward_logit = counted
            try:
                self._results[key] = list(segment_video(self.seg, self.bundle.frames(), VideoOptions(**options)))
            finally:
                del head.forward_logit  # back to the class's method
            self.calls[key] = count[0]
        return self._results[key]

    def classify_calls(self, **options) -> int:
        self.get(**options)
        return self.calls[tuple(sorted(options.items()))]


@pytest.fixture(scope="session")
def golden_runs(bundle, golden_segmenter) -> GoldenRuns:
    return GoldenRuns(bundle, golden_segmenter)


@pytest.fixture(scope="session")
def manifest() -> dict:
    if not MANIFEST.is_file():
        pytest.skip(f"manifest not found at {MANIFEST}")
    return json.loads(MANIFEST.read_text())
