"""The command-line contract on a fresh install, through the INSTALLED `segcli` console script.

Every case runs `segcli` in a subprocess (SEGCLI_HOME and HF_HOME in a temp folder,
HF_HUB_OFFLINE=1 unless the case is about the network) and checks: the exit code, exactly one
non-empty stderr line starting with `segcli: `, no traceback, no "internal error", and which
files are left behind (inputs and earlier outputs intact, no hidden `.NAME.*.part` temps).

Exit codes (README): 2 usage, 3 missing input, 4 unreadable input, 5 output, 6 weights,
7 prompt, 8 vocabulary, 9 download; 130 SIGINT, 143 SIGTERM, 141 broken pipe; 70 is a bug.
Cases that need the tiny model folder (../shared/golden/tiny_v1) are skipped without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "samples" / "shapes.mp4"  # 320x192, 60 frames
PHOTO = REPO / "samples" / "photo.png"  # 320x192 RGB
TINY = REPO.parent / "shared" / "golden" / "tiny_v1"
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens on the discard port: connection refused at once


def _segcli() -> Path:
    beside = Path(sys.executable).parent / "segcli"  # the script installed with this interpreter
    if beside.is_file():
        return beside
    found = shutil.which("segcli")
    return Path(found) if found else beside


SEGCLI = _segcli()

needs_segcli = pytest.mark.skipif(not SEGCLI.is_file(), reason=f"segcli console script not installed ({SEGCLI})")
needs_tiny = pytest.mark.skipif(not (TINY / "config.json").is_file(), reason=f"tiny model folder not found at {TINY}")
pytestmark = needs_segcli

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Za-z0-9]|\x1b[=>]")
_HOME: list[Path] = []  # the module's shared SEGCLI_HOME (class embeddings are cached once)


# ---- helpers ----------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def shared_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("segcli_home")
    _HOME[:] = [home]
    yield home
    _HOME.clear()


def cli_env(home: Path | None = None, *, offline: bool = True, **extra: str) -> dict[str, str]:
    """A fresh install's environment: no HF/SEGCLI settings of this machine, a temp home."""
    home = Path(home) if home is not None else _HOME[0]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_", "SEGCLI_")) and k != "TRANSFORMERS_OFFLINE"}
    env.update(SEGCLI_HOME=str(home), HF_HOME=str(home / "hf"), PYTHONDONTWRITEBYTECODE="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


def command(args) -> list[str]:
    return [str(SEGCLI), *(str(a) for a in args)]


def run_cli(args, *, home: Path | None = None, offline: bool = True, env: dict | None = None, timeout: float = 60,
            cwd=None, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen_kw):
    """Run the installed console script; returns (exit code, stdout text, stderr text, seconds)."""
    full_env = cli_env(home, offline=offline, **(env or {}))
    t0 = time.monotonic()
    proc = subprocess.run(command(args), env=full_env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
                          timeout=timeout, **popen_kw)
    seconds = time.monotonic() - t0

    def text(data):
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")

    return proc.returncode, text(proc.stdout), text(proc.stderr), seconds


def start_cli(args, *, home: Path | None = None, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
              stderr=subprocess.PIPE, **env):
    return subprocess.Popen(command(args), env=cli_env(home, **env), stdin=stdin, stdout=stdout, stderr=stderr)


def assert_one_line(result, code: int, *words: str) -> str:
    """Exit `code`, exactly one non-empty stderr line starting with `segcli: ` (containing
    `words`), no traceback, no internal error. Returns the line."""
    rc, _, err, _ = result
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    assert rc == code, f"exit {rc}, expected {code}; stderr: {err!r}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {err!r}"
    assert lines[0].startswith("segcli: "), lines[0]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under root (hidden ones too) -> sha1 of its bytes ('/' for folders)."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "/" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def temps(root: Path) -> list[str]:
    """Hidden temp files/folders that a writer left behind (.NAME.segcli-*.part / .old, probes)."""
    return [p.relative_to(root).as_posix() for p in Path(root).rglob(".*")
            if p.name.endswith((".part", ".old", ".tmp")) or p.name.startswith(".segcli-probe-")]


def make_video(path: Path, frames: int = 24, size=(64, 48), codec: str = "ffv1", seed: int = 0) -> Path:
    """A small lossless video with a moving square over noise (PyAV)."""
    import av

    w, h = size
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=24)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = background.copy()
            x = (2 * i + 4 * seed) % (w - 16)
            img[10:26, x:x + 16] = (220, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_frames(folder: Path, n: int = 3, size=(64, 48)) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((size[1], size[0], 3), 40 + 30 * i, np.uint8)
        img[8:24, 8 + 4 * i:24 + 4 * i] = (200, 50, 50)
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Read-only inputs shared by the cases; checked unchanged after every test."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "notavideo.mp4").write_text("this is a text file, not a video\n")
    (d / "zero.mp4").write_bytes(b"")
    (d / "empty").mkdir()
    (d / "nonimages").mkdir()
    (d / "nonimages" / "readme.txt").write_text("no images here\n")
    (d / "nonimages" / "data.csv").write_text("a,b\n1,2\n")
    make_video(d / "small.mkv", frames=24)
    (d / "vocab.txt").write_text("ball\nbox|square\n")
    before = tree(d)
    yield d
    assert tree(d) == before, "an input was modified"


@pytest.fixture
def out(tmp_path):
    """An output folder holding an earlier result that no failed run may touch."""
    o = tmp_path / "out"
    o.mkdir()
    (o / "keep.txt").write_text("an earlier result\n")
    return o


def paths(inputs: Path, out: Path) -> dict[str, str]:
    return dict(shapes=str(SHAPES), photo=str(PHOTO), tiny=str(TINY), out=str(out), inp=str(inputs),
                missing=str(inputs / "missing.mp4"))


def expand(template, where: dict[str, str]) -> list[str]:
    return [a.format(**where) for a in template]


# ---- parser errors: exit 2, one line ------------------------------------------------------------
@pytest.mark.parametrize("args", [
    [],
    ["nosuch"],
    ["vis"],
    ["vis", "x", "--bogus"],
    ["vis", "x", "--quiet", "yes"],
    ["vocab", "show", "--dataset", "coco"],
    ["vis", "x", "--clip-size", "three"],
], ids=["no-command", "unknown-command", "vis-missing-video", "unknown-option", "flag-with-value",
        "vocab-show-dataset-option", "non-integer"])
def test_parser_errors_exit_2(args, tmp_path):
    result = run_cli(args, home=tmp_path / "home", cwd=tmp_path)
    assert_one_line(result, 2)
    assert result[1] == "", "nothing on stdout"
    assert not any(tmp_path.iterdir()) or sorted(p.name for p in tmp_path.iterdir()) == ["home"]
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*"))


# ---- options are checked before weights, text and network -------------------------------------
@pytest.mark.parametrize("option", [
    ["--precision", "fp8"],
    ["--mode", "xx"],
    ["--device", "tpu"],
    ["--max-objects", "0"],
    ["--clip-size", "0"],
    ["--clip-size", "-1"],
    ["--score-threshold", "2"],
    ["--score-threshold", "nan"],
    ["--size", "0x5"],
    ["--threads", "0"],
    ["-f", "nosuchformat"],
], ids=lambda o: "".join(o).lstrip("-"))
def test_options_checked_before_weights_and_network(option, tmp_path):
    """Default weights (not downloaded), an unreachable hub and no HF_HUB_OFFLINE: a bad option
    is exit 2 at once, nothing is downloaded or created."""
    home = tmp_path / "home"
    result = run_cli(["vis", SHAPES, "--vocab", "ball", *option, "-o", tmp_path / "o/"], home=home, offline=False,
                     env={"HF_ENDPOINT": UNREACHABLE}, timeout=60)
    assert_one_line(result, 2)
    assert result[3] < 10, f"took {result[3]:.1f} s"
    assert not (tmp_path / "o").exists()
    assert not home.exists() or not [p for p in home.rglob("*") if p.is_file()]


# ---- weights and network ------------------------------------------------------------------------
def test_first_readme_command_without_network_fails_fast_naming_the_way_out(tmp_path):
    (tmp_path / "samples").symlink_to(REPO / "samples")
    home = tmp_path / "home"
    result = run_cli(["vis", "samples/shapes.mp4", "--vocab", "ball,box|square,triangle", "-f", "overlay",
                      "-o", "out/"], home=home, offline=False, env={"HF_ENDPOINT": UNREACHABLE}, cwd=tmp_path,
                     timeout=60)
    assert_one_line(result, 9, "cannot reach the Hugging Face Hub", "omg_seg_convl.pth", "segcli weights import",
                    "--weights", "HF_HUB_OFFLINE=1")
    assert result[3] < 10, f"took {result[3]:.1f} s"
    out = tmp_path / "out"
    assert not out.exists() or not list(out.rglob("*")), list(out.rglob("*"))


def test_offline_default_weights_missing_names_the_pull_command(tmp_path):
    result = run_cli(["vis", SHAPES, "--vocab", "ball", "-o", tmp_path / "o/"], home=tmp_path / "home", timeout=60)
    assert_one_line(result, 6, "segcli weights pull")
    assert result[3] < 10
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("*"))


def test_weights_import_refuses_a_wrong_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    fake = tmp_path / "omg_seg_convl.pth"
    save_file({"x": torch.zeros(4)}, str(fake))
    home = tmp_path / "home"
    before = fake.read_bytes()
    result = run_cli(["weights", "import", fake], home=home)
    assert_one_line(result, 6)
    assert result[1] == ""
    assert fake.read_bytes() == before
    assert not [p for p in home.rglob("*") if p.is_file() and "omg_seg" in p.name], list(home.rglob("*"))


def test_weights_import_of_a_missing_file(tmp_path):
    result = run_cli(["weights", "import", tmp_path / "omg_seg_convl.pth"], home=tmp_path / "home")
    assert_one_line(result, 3)


@pytest.mark.parametrize("weights", ["nosuch", "{out}/missing.pth"], ids=["unknown-name", "missing-file"])
def test_unknown_weights_exit_6(weights, inputs, out):
    before = tree(out)
    result = run_cli(["vis", SHAPES, "--vocab", "ball", "--weights", weights.format(out=out), "-o", f"{out}/"])
    assert_one_line(result, 6)
    assert tree(out) == before


def _model_copy(dst: Path) -> Path:
    dst.mkdir()
    for p in TINY.iterdir():
        (dst / p.name).symlink_to(p)
    return dst


def _replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


@needs_tiny
@pytest.mark.parametrize("damage", ["garbage-config", "empty-config", "config-not-an-object",
                                    "truncated-text-tower", "truncated-weights"])
def test_damaged_model_folder_exits_6(damage, tmp_path, out):
    model = _model_copy(tmp_path / "model")
    vocab = ["--vocab", "ball"] if "text-tower" in damage else []
    if damage == "garbage-config":
        _replace(model / "config.json", b"{not json at all\x00\xff")
    elif damage == "empty-config":
        _replace(model / "config.json", b"")
    elif damage == "config-not-an-object":
        _replace(model / "config.json", b"[1, 2, 3]\n")
    elif damage == "truncated-text-tower":
        _replace(model / "text_tower.safetensors", (TINY / "text_tower.safetensors").read_bytes()[:100_000])
    else:
        _replace(model / "weights.safetensors", (TINY / "weights.safetensors").read_bytes()[:100_000])
    before = tree(out)
    result = run_cli(["vis", SHAPES, "--weights", model, *vocab, "--end", "3", "-o", f"{out}/"],
                     home=tmp_path / "home")  # a fresh home: no cached class embeddings
    assert_one_line(result, 6)
    assert tree(out) == before


# ---- inputs, vocabularies, prompts (fail before the model, one line, nothing written) ----------
FAST_CASES = [
    # inputs
    ("missing-file", ["vis", "{missing}", "--weights", "{tiny}", "--vocab", "ball", "-o", "{out}/"], 3),
    ("text-renamed-mp4", ["vis", "{inp}/notavideo.mp4", "--weights", "{tiny}", "--vocab", "ball", "-o", "{out}/"], 4),
    ("zero-byte-mp4", ["vis", "{inp}/zero.mp4", "--weights", "{tiny}", "--vocab", "ball", "-o", "{out}/"], 4),
    ("empty-folder", ["vis", "{inp}/empty", "--weights", "{tiny}", "--vocab", "ball", "-o", "{out}/"], 4),
    ("folder-of-non-images", ["vis", "{inp}/nonimages", "--weights", "{tiny}", "--vocab", "ball", "-o", "{out}/"],
     4),
    ("image-missing", ["image", "{inp}/nope.png", "--weights", "{tiny}", "-o", "{out}/"], 3),
    ("image-not-an-image", ["image", "{inp}/vocab.txt", "--weights", "{tiny}", "-o", "{out}/"], 4),
    # vocabularies
    ("vocab-empty", ["vis", "{shapes}", "--weights", "{tiny}", "--vocab", "", "-o", "{out}/"], 8),
    ("vocab-comma", ["vis", "{shapes}", "--weights", "{tiny}", "--vocab", ",", "-o", "{out}/"], 8),
    ("vocab-duplicate", ["vis", "{shapes}", "--weights", "{tiny}", "--vocab", "ball,ball", "-o", "{out}/"], 8),
    ("dataset-nosuch", ["vis", "{shapes}", "--weights", "{tiny}", "--dataset", "nosuch", "-o", "{out}/"], 8),
    ("vocab-and-dataset", ["vis", "{shapes}", "--weights", "{tiny}", "--vocab", "a", "--dataset", "coco",
                           "-o", "{out}/"], 2),
    ("vocab-file-missing", ["vis", "{shapes}", "--weights", "{tiny}", "--vocab-file", "{inp}/nope.txt",
                            "-o", "{out}/"], 3),
    ("vocab-embeddings-missing", ["vis", "{shapes}", "--weights", "{tiny}", "--vocab-embeddings",
                                  "{inp}/nope.safetensors", "-o", "{out}/"], 3),
    ("vocab-embeddings-not-safetensors", ["vis", "{shapes}", "--weights", "{tiny}", "--vocab-embeddings",
                                          "{inp}/vocab.txt", "-o", "{out}/"], 8),
    # prompts
    ("point-outside", ["vos", "{shapes}", "--weights", "{tiny}", "--point", "999,5", "-o", "{out}/"], 7),
    ("point-malformed", ["vos", "{shapes}", "--weights", "{tiny}", "--point", "1", "-o", "{out}/"], 7),
    ("point-negative-click", ["vos", "{shapes}", "--weights", "{tiny}", "--point", "5,5:neg", "-o", "{out}/"], 7),
    ("box-inverted", ["vos", "{shapes}", "--weights", "{tiny}", "--box", "50,50,10,10", "-o", "{out}/"], 7),
    ("frame-past-end", ["vos", "{shapes}", "--weights", "{tiny}", "--frame", "99", "--point", "5,5",
                        "-o", "{out}/"], 7),
    # a 24-frame FFV1 .mkv has no frame count in its header; with --vocab, a check that waits for the model
    # shows up as a second line (the class-embeddings notice) before the error
    ("frame-past-end-mkv", ["vos", "{inp}/small.mkv", "--weights", "{tiny}", "--vocab", "ball", "--frame", "99",
                            "--point", "5,5", "-o", "{out}/"], 7),
    ("frame-dangling", ["vos", "{shapes}", "--weights", "{tiny}", "--point", "5,5", "--frame", "3",
                        "-o", "{out}/"], 2),
    ("no-prompt", ["vos", "{shapes}", "--weights", "{tiny}", "-o", "{out}/"], 7),
    ("mask-is-an-rgb-photo", ["vos", "{shapes}", "--weights", "{tiny}", "--mask", "{photo}", "-o", "{out}/"], 7),
    ("mask-missing", ["vos", "{shapes}", "--weights", "{tiny}", "--mask", "{inp}/nope.png", "-o", "{out}/"], 3),
    ("image-point-outside", ["image", "{photo}", "--weights", "{tiny}", "--point", "5,500", "-o", "{out}/"], 7),
    # output
    ("output-file-in-a-file", ["vis", "{shapes}", "--weights", "{tiny}", "--vocab", "ball",
                               "-o", "{out}/keep.txt/x.jsonl"], 5),
    ("stdout-two-formats", ["vis", "{shapes}", "--weights", "{tiny}", "--vocab", "ball", "-f", "jsonl",
                            "-f", "ytvis", "-o", "-"], 2),
    ("stdout-davis", ["vis", "{shapes}", "--weights", "{tiny}", "--vocab", "ball", "-f", "davis", "-o", "-"], 2),
]


@needs_tiny
@pytest.mark.parametrize("template,code", [c[1:] for c in FAST_CASES], ids=[c[0] for c in FAST_CASES])
def test_bad_input_fails_before_the_model(template, code, inputs, out):
    before = tree(out)
    result = run_cli(expand(template, paths(inputs, out)), timeout=60)
    assert_one_line(result, code)
    assert result[1] == "", "nothing on stdout"
    assert result[3] < 30, f"took {result[3]:.1f} s: checked after loading the model?"
    assert tree(out) == before, "the output folder changed"


# ---- outputs never replace inputs ---------------------------------------------------------------
@needs_tiny
def test_vos_davis_into_the_parent_of_the_frames_folder_keeps_the_input(tmp_path):
    parent = tmp_path / "b"
    make_frames(parent / "frames")
    (parent / "frames" / "notes.txt").write_text("mine\n")
    (parent / "other.txt").write_text("also mine\n")
    before = tree(tmp_path)
    result = run_cli(["vos", parent / "frames", "--weights", TINY, "--point", "5,5", "-o", f"{parent}/"])
    assert_one_line(result, 5)
    assert tree(tmp_path) == before


@needs_tiny
def test_image_davis_into_the_parent_of_the_frames_folder_keeps_the_input(tmp_path):
    parent = tmp_path / "b"
    make_frames(parent / "frames")
    (parent / "other.txt").write_text("also mine\n")
    before = tree(tmp_path)
    result = run_cli(["image", parent / "frames", "--weights", TINY, "--point", "5,5", "-f", "davis",
                      "-o", f"{parent}/"])
    assert_one_line(result, 5)
    assert tree(tmp_path) == before


@needs_tiny
@pytest.mark.parametrize("fmt", [[], ["-f", "jsonl"]], ids=["by-suffix", "jsonl"])
def test_output_onto_the_input_video_is_refused(fmt, tmp_path):
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(SHAPES, clip)
    before = tree(tmp_path)
    result = run_cli(["vis", clip, "--weights", TINY, "--vocab", "ball", *fmt, "-o", clip])
    assert_one_line(result, 5)
    assert tree(tmp_path) == before


# ---- frame range and several runs into one folder ---------------------------------------------
@needs_tiny
def test_start_past_the_end_keeps_an_earlier_summary(inputs, out):
    (out / "small.summary.json").write_text('{"earlier": true}\n')
    (out / "small.summary.txt").write_text("earlier\n")
    before = tree(out)
    result = run_cli(["vis", inputs / "small.mkv", "--weights", TINY, "--vocab", "ball", "--start", "50",
                      "-f", "summary", "-o", f"{out}/"])
    assert_one_line(result, 2, "50")
    assert tree(out) == before


@needs_tiny
def test_two_runs_into_one_folder_keep_both_and_a_rerun_replaces_only_its_own(tmp_path):
    a = make_video(tmp_path / "a.mkv", frames=6, seed=1)
    b = make_video(tmp_path / "b.mkv", frames=6, seed=2)
    out = tmp_path / "out"
    common = ["--weights", TINY, "--vocab", "ball", "--size", "64x64", "--score-threshold", "0", "-q",
              "-f", "jsonl", "-f", "summary", "-f", "davis", "-o", f"{out}/"]
    for video in (a, b):
        result = run_cli(["vis", video, *common])
        assert result[0] == 0 and result[2] == "", result[2]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a", "a.jsonl", "a.summary.json", "a.summary.txt", "b", "b.jsonl", "b.summary.json",
                     "b.summary.txt"], names
    assert len((out / "a.jsonl").read_text().splitlines()) == 6
    b_files = {k: v for k, v in tree(out).items() if k.startswith("b")}
    b_mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("b*")}
    result = run_cli(["vis", a, *common, "--end", "4"])
    assert result[0] == 0 and result[2] == "", result[2]
    assert len((out / "a.jsonl").read_text().splitlines()) == 4
    assert json.loads((out / "a.summary.json").read_text())["frames"] == 4
    assert len(list((out / "a").glob("*.png"))) == 4
    assert {k: v for k, v in tree(out).items() if k.startswith("b")} == b_files
    assert {p: p.stat().st_mtime_ns for p in out.rglob("b*")} == b_mtimes
    assert sorted(p.name for p in out.iterdir()) == names
    assert temps(out) == []


# ---- class embeddings written once, used without the text tower ---------------------------------
@needs_tiny
def test_vocab_embed_then_use_the_file(tmp_path, inputs):
    emb = tmp_path / "bb.safetensors"
    home = tmp_path / "home"
    result = run_cli(["vocab", "embed", "--vocab", "ball,box", "--weights", TINY, "-o", emb], home=home)
    rc, _, err, _ = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 0 and len(lines) == 1, err
    assert str(emb) in lines[0] and "2 classes" in lines[0] and emb.is_file(), lines
    rc, stdout, err, _ = run_cli(["vis", inputs / "small.mkv", "--weights", TINY, "--vocab-embeddings", emb,
                                  "--size", "64x64", "--score-threshold", "0", "--end", "3", "-q", "-o", "-"],
                                 home=home)
    assert rc == 0 and err == "", err
    records = [json.loads(line) for line in stdout.splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert {o["label"] for r in records for o in r["objects"]} <= {"ball", "box"}


# ---- terminals: progress on stderr, results byte-exact on stdout --------------------------------
def _run_with_tty_stderr(args, stdout, timeout=60):
    """stderr is a pty; returns (exit code, stdout bytes or None, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(command(args), env=cli_env(), stdin=subprocess.DEVNULL, stdout=stdout, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        data = proc.stdout.read() if stdout == subprocess.PIPE else None
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
        os.close(master)
    return rc, data, b"".join(chunks).decode("utf-8", "replace")


def _screen_lines(raw: str) -> list[str]:
    text = ANSI.sub("", raw).replace("\r\n", "\n")
    lines = []
    for line in text.split("\n"):
        line = line.split("\r")[-1]  # what a carriage return leaves visible
        if line.strip():
            lines.append(line.strip())
    return lines


@needs_tiny
def test_tty_stderr_stdout_file_jsonl_is_byte_exact(tmp_path, inputs):
    target = tmp_path / "stdout.jsonl"
    with open(target, "wb") as fh:
        rc, _, screen = _run_with_tty_stderr(["vis", inputs / "small.mkv", "--weights", TINY, "--vocab", "ball",
                                               "--size", "64x64", "--score-threshold", "0", "--end", "6", "-o", "-"],
                                              fh)
    assert rc == 0, screen
    data = target.read_bytes()
    assert data.endswith(b"\n") and b"\x1b" not in data and b"\r" not in data
    lines = data.split(b"\n")[:-1]
    assert len(lines) == 6
    assert [json.loads(line)["frame"] for line in lines] == list(range(6))
    shown = _screen_lines(screen)
    assert "Traceback" not in screen
    assert shown and shown[-1].startswith("segcli: ") and "wrote stdout" in shown[-1], shown


@needs_tiny
def test_tty_stderr_shows_progress_when_stdout_is_piped(inputs):
    rc, data, screen = _run_with_tty_stderr(["vis", inputs / "small.mkv", "--weights", TINY, "--vocab", "ball",
                                             "--size", "64x64", "--end", "6", "-o", "-"], subprocess.PIPE)
    assert rc == 0, screen
    assert len(data.splitlines()) == 6 and all(json.loads(line) for line in data.splitlines())
    plain = ANSI.sub("", screen)
    assert re.search(r"\d+/(6|\?)", plain) and "fps" in plain, f"no progress bar on the terminal: {screen!r}"
    shown = _screen_lines(screen)
    assert shown[-1].startswith("segcli: 6 frames") and "wrote stdout" in shown[-1], shown


@needs_tiny
def test_tty_stderr_last_line_names_the_files_and_quiet_is_silent(tmp_path, inputs):
    out = tmp_path / "out"
    args = ["vis", inputs / "small.mkv", "--weights", TINY, "--vocab", "ball", "--size", "64x64", "--end", "3",
            "-f", "jsonl", "-f", "summary", "-o", f"{out}/"]
    rc, data, screen = _run_with_tty_stderr(args, subprocess.PIPE)
    assert rc == 0 and data == b"", screen
    shown = _screen_lines(screen)
    assert shown[-1].startswith("segcli: 3 frames"), shown
    assert str(out / "small.jsonl") in shown[-1] and str(out / "small.summary.json") in shown[-1], shown
    rc, data, screen = _run_with_tty_stderr([*args, "-q"], subprocess.PIPE)
    assert rc == 0 and data == b""
    assert _screen_lines(screen) == [], screen


# ---- signals and closed pipes ------------------------------------------------------------------
def _wait_for(predicate, proc, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"segcli ended (exit {proc.returncode}) before {what}: {proc.stderr.read()!r}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail(f"no {what} within {timeout} s")


def _davis_frames_written(out: Path) -> bool:
    return any(p.is_dir() and any(p.glob("*.png")) for p in out.glob(".*.part"))


SLOW_VIS = ["vis", SHAPES, "--weights", TINY, "--vocab", "ball", "--mode", "online", "--score-threshold", "0", "-q"]
# a run that cannot end before the test signals it: the video comes on stdin, of which the test
# writes the first half and then nothing (a producer gone quiet); FFmpeg would probe 5 s otherwise
STALLED_VIS = ["vis", "-", "--weights", TINY, "--vocab", "ball", "--mode", "online", "--score-threshold", "0", "-q",
               "--source-option", "analyzeduration=200000"]


def start_stalled(args, **kw):
    """segcli reading half a video from stdin, the pipe kept open: it runs until signalled."""
    from test_live import mpegts_bytes

    data = mpegts_bytes(40)
    proc = start_cli(args, stdin=subprocess.PIPE, **kw)
    proc.stdin.write(data[:len(data) // 2])
    proc.stdin.flush()
    return proc


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _idle(pid: int, polls: int = 4) -> bool:
    """No CPU time used over `polls` x 0.1 s: every thread waits (here: for stdin)."""
    ticks = [_cpu_ticks(pid)]
    for _ in range(polls):
        time.sleep(0.1)
        ticks.append(_cpu_ticks(pid))
    return len(set(ticks)) == 1


def stop_stalled(proc) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    proc.stdin.close()


SIGNALS = pytest.mark.parametrize("signum,code,word", [(signal.SIGINT, 130, "interrupted"),
                                                      (signal.SIGTERM, 143, "terminated")], ids=["SIGINT", "SIGTERM"])


@needs_tiny
@SIGNALS
def test_signal_during_a_run_leaves_no_partial_files(signum, code, word, out):
    (out / "shapes.jsonl").write_text("an earlier run\n")
    os.mkdir(out / "shapes")  # an earlier (empty) davis folder: left as it was
    before = tree(out)
    proc = start_cli([*SLOW_VIS, "-f", "davis", "-f", "jsonl", "-o", f"{out}/"], stdout=subprocess.PIPE)
    try:
        _wait_for(lambda: _davis_frames_written(out), proc, 40, "the first davis frame")
        # frozen while the signal is sent: the run is surely mid-video when it takes it, however
        # fast this machine runs the rest of the file
        proc.send_signal(signal.SIGSTOP)
        proc.send_signal(signum)
        proc.send_signal(signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert temps(out) == [], temps(out)
    assert tree(out) == before
    assert_one_line((proc.returncode, stdout.decode(), stderr.decode(), 0.0), code, word)


@needs_tiny
@SIGNALS
def test_signal_on_a_silent_live_pipe_keeps_complete_outputs(signum, code, word, out):
    """`producer | segcli vis -` stopped while the producer is silent: a live source keeps what it
    produced, complete (it used to hang 5 s on the blocked pipe read, then die of SIGABRT)."""
    (out / "stdin.jsonl").write_text("an earlier run\n")
    proc = start_stalled([*STALLED_VIS, "-f", "davis", "-f", "jsonl", "-o", f"{out}/"], stdout=subprocess.PIPE)
    try:
        _wait_for(lambda: _davis_frames_written(out), proc, 40, "the first davis frame")
        _wait_for(lambda: _idle(proc.pid), proc, 40, "segcli waiting for input")
        proc.send_signal(signum)
        proc.wait(timeout=20)  # not communicate(): it would close stdin, an end of stream
        stdout, stderr = proc.stdout.read(), proc.stderr.read()
    finally:
        stop_stalled(proc)
    assert_one_line((proc.returncode, stdout.decode(), stderr.decode(), 0.0), code, word)
    assert temps(out) == [], temps(out)
    frames = [json.loads(line)["frame"] for line in (out / "stdin.jsonl").read_text().splitlines()]
    assert frames and frames == list(range(len(frames))) and len(frames) < 40
    pngs = sorted(p.name for p in (out / "stdin").glob("*.png"))
    assert pngs == [f"{i:05d}.png" for i in frames]


@needs_tiny
def test_sigint_while_streaming_to_stdout_exits_130():
    proc = start_stalled([*STALLED_VIS, "-o", "-"])
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert all(line.endswith(b"\n") for line in lines), lines
        proc.send_signal(signal.SIGINT)
        # read through proc.stdout itself: communicate() reads the pipe's fd and would skip what
        # readline() already buffered (the head of the next line); on a thread, so that a run
        # that does not stop fails the test instead of hanging it (its stdin never ends)
        streams: dict = {}
        readers = [threading.Thread(target=lambda: streams.update(out=proc.stdout.read()), daemon=True),
                   threading.Thread(target=lambda: streams.update(err=proc.stderr.read()), daemon=True)]
        for reader in readers:
            reader.start()
        proc.wait(timeout=20)
        for reader in readers:
            reader.join(10)
        rest, stderr = streams["out"], streams["err"]
    finally:
        stop_stalled(proc)
    for line in lines + rest.splitlines(keepends=True):
        assert line.endswith(b"\n")
        json.loads(line)  # only whole lines on stdout
    assert_one_line((proc.returncode, "", stderr.decode(), 0.0), 130, "interrupted")


@needs_tiny
def test_stdout_closed_early_exits_141_quietly():
    """`segcli vis ... -o - | head -2`."""
    proc = start_cli([*SLOW_VIS, "-o", "-"])
    try:
        for _ in range(2):
            assert proc.stdout.readline().endswith(b"\n")
        proc.stdout.close()  # head exits
        stderr = proc.stderr.read()
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = stderr.decode()
    assert rc == 141, text
    assert "Traceback" not in text and "Exception ignored" not in text and "internal error" not in text
    assert text.strip() == "", f"a closed pipe is a quiet exit: {text!r}"


@needs_tiny
def test_pipe_into_head_through_a_shell_exits_141(tmp_path):
    script = '"$0" "$@" | head -2 > "$HEAD_OUT"; echo "${PIPESTATUS[0]}" > "$HEAD_RC"'
    env = cli_env(HEAD_OUT=str(tmp_path / "head.txt"), HEAD_RC=str(tmp_path / "rc.txt"))
    proc = subprocess.run(["bash", "-c", script, *command([*SLOW_VIS, "-o", "-"])], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    err = proc.stderr.decode()
    assert (tmp_path / "rc.txt").read_text().strip() == "141", err
    assert len((tmp_path / "head.txt").read_text().splitlines()) == 2
    assert err.strip() == "", err


# ---- a full disk and a closed stdout -----------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "full"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a small tmpfs: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=20)


@needs_tiny
@pytest.mark.parametrize("fmt", ["ytvis", "jsonl", "davis"])
def test_disk_full_exits_5_and_leaves_no_temps(fmt, small_fs):
    (small_fs / "keep.txt").write_text("an earlier result\n")
    (small_fs / "filler.bin").write_bytes(b"\0" * 56 * 1024)  # 8 KiB (2 pages) stay free: a few PNGs fill them
    before = tree(small_fs)
    result = run_cli(["vis", SHAPES, "--weights", TINY, "--vocab", "ball", "--score-threshold", "0", "--end", "6",
                      "-q", "-f", fmt, "-o", f"{small_fs}/"])
    assert_one_line(result, 5)
    assert temps(small_fs) == []
    assert tree(small_fs) == before


@needs_tiny
def test_stdout_on_a_full_device_exits_5(inputs):
    with open("/dev/full", "wb") as full:
        result = run_cli(["vis", inputs / "small.mkv", "--weights", TINY, "--vocab", "ball", "--size", "64x64",
                          "--score-threshold", "0", "--end", "6", "-q", "-o", "-"], stdout=full)
    assert_one_line(result, 5)


@needs_tiny
@pytest.mark.parametrize("output", [["-o", "-"], []], ids=["dash", "default"])
def test_stdout_closed_before_start_exits_5(output, tmp_path, inputs):
    result = run_cli(["vis", inputs / "small.mkv", "--weights", TINY, "--vocab", "ball", "--size", "64x64",
                      "--end", "3", *output], stdout=None, cwd=tmp_path, preexec_fn=lambda: os.close(1))
    assert_one_line(result, 5, "stdout")
    assert not list(tmp_path.iterdir())


@needs_tiny
def test_stdout_closed_by_the_shell_exits_5(tmp_path, inputs):
    args = command(["vis", inputs / "small.mkv", "--weights", TINY, "--vocab", "ball", "--end", "3", "-o", "-"])
    proc = subprocess.run(["bash", "-c", 'exec "$0" "$@" >&-', *args], env=cli_env(), cwd=tmp_path,
                          stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    assert_one_line((proc.returncode, "", proc.stderr.decode(), 0.0), 5, "stdout")
    assert not list(tmp_path.iterdir())
