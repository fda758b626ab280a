"""open_writers (output resolution, errors), atomicity of every writer, and the summary format."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
from test_io_rle import make_video

from segcli.errors import OutputError, UsageError
from segcli.io import FORMATS, STDOUT_FORMATS, WRITERS, abort_writers, base, close_writers, open_writers
from segcli.io.summary import SummaryWriter

DEFAULT_NAMES = {
    "jsonl": ["clip.jsonl"],
    "ytvis": ["clip.ytvis.json"],
    "coco-rle": ["clip.coco.json"],
    "davis": ["clip"],
    "panoptic": ["clip_panoptic"],
    "mask-video": ["clip.ids.mkv"],
    "overlay": ["clip.overlay.mp4"],
    "summary": ["clip.summary.json", "clip.summary.txt"],
}


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_registry():
    assert FORMATS == ("jsonl", "ytvis", "coco-rle", "davis", "panoptic", "mask-video", "overlay", "summary")
    assert STDOUT_FORMATS == ("jsonl", "ytvis", "coco-rle", "summary")
    assert [n for n in FORMATS if WRITERS[n].needs_image] == ["overlay"]


def test_directory_output_default_names(tmp_path):
    info, frames = make_video(frames=3)
    out = tmp_path / "new" / "out"  # created up front
    writers = open_writers(list(FORMATS), str(out), info)
    assert out.is_dir() and _listing(out) == []
    assert {w.format_name: [t.name for t in w.targets] for w in writers} == DEFAULT_NAMES
    for f in frames:
        for w in writers:
            w.write(f)
    assert _listing(out) == [] or all(name.startswith(".") for name in os.listdir(out))
    close_writers(writers)
    assert sorted(os.listdir(out)) == sorted(n for names in DEFAULT_NAMES.values() for n in names)
    mode = stat.S_IMODE(os.stat(out / "clip.jsonl").st_mode)
    assert mode == 0o666 & ~base._UMASK  # not mkstemp's 0600


def test_output_resolution(tmp_path):
    info, _ = make_video()
    (w,) = open_writers(["ytvis"], str(tmp_path / "res.json"), info)  # a file
    assert w.target == tmp_path / "res.json"
    (w,) = open_writers(["ytvis"], str(tmp_path / "plain"), info)  # no extension: a folder
    assert w.target == tmp_path / "plain" / "clip.ytvis.json"
    (w,) = open_writers(["jsonl"], str(tmp_path / "dir.v2") + "/", info)  # trailing slash: a folder
    assert w.target == tmp_path / "dir.v2" / "clip.jsonl"
    (w,) = open_writers("overlay,", str(tmp_path / "plain"), info)  # existing folder, comma list
    assert w.target == tmp_path / "plain" / "clip.overlay.mp4"
    ws = open_writers(["JSONL", "coco_rle", "jsonl"], str(tmp_path / "two"), info)  # normalised, deduped
    assert [x.format_name for x in ws] == ["jsonl", "coco-rle"]
    (w,) = open_writers(["summary"], "-", info)
    assert w.target is None


@pytest.mark.parametrize(
    "formats, output, match",
    [
        (["jsonl", "ytvis"], "x.json", "need a folder"),
        (["davis"], "x.png", "need a folder"),
        (["davis"], "-", "cannot go to stdout"),
        (["davis"], None, "give an output folder"),
        (["jsonl", "summary"], "-", "exactly one format"),
        (["jsonl", "summary"], None, "need an output folder"),
    ],
)
def test_usage_errors(tmp_path, formats, output, match):
    info, _ = make_video()
    if output not in (None, "-"):
        output = str(tmp_path / output)
    with pytest.raises(UsageError, match=match) as exc:
        open_writers(formats, output, info)
    assert exc.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_lists_valid_names():
    info, _ = make_video()
    with pytest.raises(UsageError) as exc:
        open_writers(["jsonl", "mp4"], None, info)
    msg = str(exc.value)
    assert "'mp4'" in msg and all(name in msg for name in FORMATS)


def test_unwritable_locations(tmp_path):
    info, _ = make_video()
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="file.txt") as exc:
        open_writers(["jsonl"], str(blocker / "out.jsonl"), info)
    assert exc.value.exit_code == 5
    (tmp_path / "clip.summary.json").mkdir()  # a folder where a file goes
    with pytest.raises(OutputError, match="is a folder"):
        open_writers(["summary"], str(tmp_path), info)
    (tmp_path / "clip").write_text("not a folder")
    with pytest.raises(OutputError, match="not a folder"):
        open_writers(["davis"], str(tmp_path), info)
    with pytest.raises(OutputError, match="not a folder"):
        open_writers(["jsonl", "davis"], str(blocker), info)
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="locked"):
            open_writers(["jsonl"], str(locked / "a.jsonl"), info)


@pytest.mark.parametrize("fmt", FORMATS)
def test_abort_keeps_earlier_output_and_leaves_no_temp(tmp_path, fmt):
    info, frames = make_video(frames=3)
    (writer,) = open_writers([fmt], str(tmp_path), info)
    for target in writer.targets:  # an earlier run's output at the same paths
        if writer.is_dir:
            target.mkdir()
            (target / "old.png").write_bytes(b"old")
        else:
            target.write_bytes(b"old")
    before = {str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    try:
        with writer:
            for f in frames[:2]:
                writer.write(f)
            if fmt not in ("ytvis", "summary"):  # those two write everything at close
                assert any(p.name.startswith(".") for p in tmp_path.iterdir())  # streaming to a temp
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    after = {str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    writer.abort()  # idempotent
    writer.close()  # no-op after abort
    assert {str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def _segcli_folder(target, files=("00000.png",)):
    """A folder an earlier segcli run wrote (with its manifest)."""
    target.mkdir(parents=True)
    for f in files:
        (target / f).parent.mkdir(parents=True, exist_ok=True)
        (target / f).write_bytes(b"old")
    (target / base.MANIFEST).write_text(json.dumps({"writer": "segcli", "format": "davis", "files": list(files)}))


@pytest.mark.parametrize("fmt", ["jsonl", "davis", "mask-video"])
def test_close_replaces_earlier_output(tmp_path, fmt):
    info, frames = make_video(frames=2)
    (target,) = WRITERS[fmt].for_directory(tmp_path, info).targets
    if WRITERS[fmt].is_dir:
        _segcli_folder(target, ["stale.png"])  # an earlier run's output: replaced whole
    else:
        target.write_bytes(b"old")
    (writer,) = open_writers([fmt], str(tmp_path), info)
    with writer:
        for f in frames:
            writer.write(f)
    assert sorted(os.listdir(tmp_path)) == [target.name]  # no temp or backup left
    if writer.is_dir:
        assert sorted(os.listdir(target)) == [base.MANIFEST, "00000.png", "00001.png"]
        manifest = json.loads((target / base.MANIFEST).read_text())
        assert manifest == {"writer": "segcli", "format": "davis", "files": ["00000.png", "00001.png"]}
    else:
        assert target.read_bytes() != b"old"


@pytest.mark.parametrize("fmt", ["davis", "panoptic"])
def test_folder_with_foreign_files_is_never_replaced(tmp_path, fmt):
    info, frames = make_video(frames=2)
    (target,) = WRITERS[fmt].for_directory(tmp_path, info).targets
    # 1. a folder segcli did not write (no manifest): refused up front, before any work
    target.mkdir()
    (target / "00000.jpg").write_bytes(b"user frame")
    with pytest.raises(OutputError, match="did not write") as exc:
        open_writers([fmt], str(tmp_path), info)
    assert exc.value.exit_code == 5 and "00000.jpg" in str(exc.value)
    # 2. a segcli folder a user added a file to: refused too
    (target / "00000.jpg").unlink()
    target.rmdir()
    _segcli_folder(target, ["00000.png"])
    (target / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        open_writers([fmt], str(tmp_path), info)
    # 3. the foreign file appears while the run is going: the commit refuses and keeps everything
    (target / "notes.txt").unlink()
    (writer,) = open_writers([fmt], str(tmp_path), info)
    for f in frames:
        writer.write(f)
    (target / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="did not write"):
        writer.close()
    assert sorted(os.listdir(target)) == sorted([base.MANIFEST, "00000.png", "notes.txt"])
    assert (target / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == [target.name]  # the new output's temp folder is gone
    # an empty folder holds nothing to lose: replaced
    shutil.rmtree(target)
    target.mkdir()
    (writer,) = open_writers([fmt], str(tmp_path), info)
    with writer:
        writer.write(frames[0])
    assert (target / base.MANIFEST).is_file()


@pytest.mark.parametrize("fmt", ["ytvis", "davis"])
def test_failed_final_rename_keeps_earlier_output(tmp_path, monkeypatch, fmt):
    info, frames = make_video(frames=2)
    (target,) = WRITERS[fmt].for_directory(tmp_path, info).targets
    if WRITERS[fmt].is_dir:
        _segcli_folder(target, ["old.png"])
    else:
        target.write_bytes(b"old")
    (writer,) = open_writers([fmt], str(tmp_path), info)
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(src).endswith(".part"):  # moving the new output into place fails (disk full, ...)
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(base.os, "replace", failing_replace)
    for f in frames:
        writer.write(f)
    with pytest.raises(OutputError, match="No space left"):
        writer.close()
    assert sorted(os.listdir(tmp_path)) == [target.name]
    if writer.is_dir:
        assert sorted(os.listdir(target)) == [base.MANIFEST, "old.png"]
    else:
        assert target.read_bytes() == b"old"


# -- CLI contract: inputs are never replaced ------------------------------------------------


def test_output_that_would_replace_an_input_is_refused(tmp_path):
    info, _ = make_video()  # info.name == "clip"
    frames_dir = tmp_path / "clip"  # `vos clip/ --point 5,5 -o PARENT/`: davis writes PARENT/clip
    frames_dir.mkdir()
    (frames_dir / "00000.jpg").write_bytes(b"jpeg")
    with pytest.raises(OutputError, match="input") as exc:
        open_writers(["davis"], str(tmp_path) + "/", info, inputs=[str(frames_dir)])
    assert exc.value.exit_code == 5
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"video")
    for fmt in ("overlay", "jsonl", "mask-video"):  # `-o clip.mp4` where clip.mp4 is the input
        with pytest.raises(OutputError, match="is the input"):
            open_writers([fmt], str(video), info, inputs=[str(video)])
    link = tmp_path / "link.mp4"
    link.symlink_to(video)
    with pytest.raises(OutputError, match="is the input"):
        open_writers(["overlay"], str(link), info, inputs=[str(video)])
    mask = tmp_path / "out" / "clip" / "00000.png"  # a prompt mask inside the davis folder
    mask.parent.mkdir(parents=True)
    mask.write_bytes(b"png")
    with pytest.raises(OutputError, match="folder holding the input"):
        open_writers(["davis"], str(tmp_path / "out"), info, inputs=[str(video), str(mask)])
    assert video.read_bytes() == b"video" and (frames_dir / "00000.jpg").read_bytes() == b"jpeg"
    # writing beside the inputs, or into the input folder without replacing anything, is fine
    ws = open_writers(["jsonl", "davis"], str(frames_dir), info, inputs=[str(frames_dir), "-"])
    assert [w.target for w in ws] == [frames_dir / "clip.jsonl", frames_dir / "clip"]


# -- CLI contract: duplicate stems, disk full, stale temps ---------------------------------


@pytest.mark.parametrize("fmt", ["davis", "panoptic"])
def test_duplicate_file_stems_are_refused(tmp_path, fmt):
    info, frames = make_video(frames=3, task="image")
    for f, folder in zip(frames, "abc"):
        f.name = "photo"  # a/photo.jpg, b/photo.jpg, c/photo.jpg
    (writer,) = open_writers([fmt], str(tmp_path), info)
    writer.write(frames[0])
    with pytest.raises(UsageError, match="'photo'") as exc:
        writer.write(frames[1])
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)
    writer.abort()
    assert os.listdir(tmp_path) == []


class _FullDisk:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, real):
        self._real = real

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_disk_full_is_an_output_error_naming_the_path(tmp_path, monkeypatch, fmt):
    info, frames = make_video(frames=3)
    (writer,) = open_writers([fmt], str(tmp_path), info)
    real_open = open
    monkeypatch.setattr(base, "open", lambda *a, **k: _FullDisk(real_open(*a, **k)), raising=False)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    from PIL import Image

    monkeypatch.setattr(Image.Image, "save", no_space)  # davis, panoptic PNGs
    monkeypatch.setattr("segcli.io.video.VideoEncoder.encode", no_space)  # mask-video, overlay
    with pytest.raises(OutputError) as exc:
        with writer:
            for f in frames:
                writer.write(f)
    assert exc.value.exit_code == 5
    assert "No space left on device" in str(exc.value) and str(writer.targets[0]) in str(exc.value)
    assert not isinstance(exc.value, OSError)
    assert os.listdir(tmp_path) == []  # no temp left behind


@pytest.mark.parametrize("fmt", ["jsonl", "summary", "davis"])
def test_disk_full_at_commit(tmp_path, monkeypatch, fmt):
    info, frames = make_video(frames=2)
    (writer,) = open_writers([fmt], str(tmp_path), info)
    for f in frames:
        writer.write(f)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(base.os, "fsync", no_space)  # flushing the file to disk fails
    monkeypatch.setattr(base.Path, "write_text", no_space)  # writing the folder's manifest fails
    with pytest.raises(OutputError, match="No space left on device") as exc:
        writer.close()
    monkeypatch.undo()
    assert str(writer.targets[0]) in str(exc.value)
    assert os.listdir(tmp_path) == []


def test_stdout_broken_pipe_stays_broken_pipe(monkeypatch):
    info, frames = make_video(frames=1)
    (writer,) = open_writers(["jsonl"], "-", info)

    def closed(*args):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(base.sys.stdout, "write", closed)
    with pytest.raises(BrokenPipeError):  # the CLI stops quietly on it (`segcli ... | head`)
        writer.write(frames[0])


def test_temps_of_dead_processes_are_removed_at_open(tmp_path):
    info, frames = make_video(frames=2)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)  # a process that has exited
    host = base._HOST
    stale_file = tmp_path / f".clip.jsonl.segcli-{host}-{pid}-abcd1234.part"
    stale_dir = tmp_path / f".clip.segcli-{host}-{pid}-k2j3h4g5.part"
    stale_file.write_text("half")
    stale_dir.mkdir()
    (stale_dir / "00000.png").write_bytes(b"x")
    swapped = tmp_path / f".clip_panoptic.segcli-{host}-{pid}-zzzz9999.old"  # died mid-swap: target gone
    swapped.mkdir()
    (swapped / "pred.json").write_text("{}")
    alive = tmp_path / f".clip.summary.json.segcli-{host}-{os.getppid()}-abcd1234.part"  # a live process
    other_host = tmp_path / f".clip.ids.mkv.segcli-000000-{pid}-abcd1234.part"  # cannot tell: kept
    foreign = tmp_path / ".clip.jsonl.abcd1234.part"  # not segcli's pattern: kept
    for p in (alive, other_host, foreign):
        p.write_text("keep")
    writers = open_writers(["jsonl", "davis"], str(tmp_path), info)
    assert not stale_file.exists() and not stale_dir.exists()
    assert (tmp_path / "clip_panoptic" / "pred.json").read_text() == "{}"  # the earlier output restored
    assert alive.exists() and other_host.exists() and foreign.exists()
    for w in writers:
        w.write(frames[0])
    mine = f".segcli-{host}-{os.getpid()}-"
    assert len([p for p in tmp_path.iterdir() if mine in p.name and p.name.endswith(".part")]) == 2
    abort_writers(writers)
    assert not any(mine in p.name for p in tmp_path.iterdir())


def test_abort_removes_temps_even_when_the_writer_cleanup_fails(tmp_path, monkeypatch):
    info, frames = make_video(frames=2)
    writers = open_writers(["mask-video", "overlay"], str(tmp_path), info)
    for w in writers:
        w.write(frames[0])
    assert len(os.listdir(tmp_path)) == 2

    def broken(*args):
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr("segcli.io.video.VideoEncoder.abort", broken)
    abort_writers(writers)
    assert os.listdir(tmp_path) == []


def test_exit_hook_removes_temps_of_unfinished_writers(tmp_path):
    info, frames = make_video(frames=2)
    writers = open_writers(["jsonl", "davis", "mask-video"], str(tmp_path), info)
    for w in writers:
        w.write(frames[0])
    assert len(os.listdir(tmp_path)) == 3
    base._remove_leftover_temps()  # what atexit runs
    assert os.listdir(tmp_path) == []


def test_summary_json_and_text(tmp_path, capsys):
    info, frames = make_video()
    writers = open_writers(["summary"], str(tmp_path), info)
    (writer,) = writers
    for f in frames:
        writer.write(f)
    writer.close()
    doc = json.loads((tmp_path / "clip.summary.json").read_text())
    assert {k: doc[k] for k in ("video", "task", "width", "height", "fps", "frames")} == {
        "video": "clip", "task": "vps", "width": 37, "height": 24, "fps": 10.0, "frames": 6}
    tracks = {t["id"]: t for t in doc["tracks"]}
    assert list(tracks) == [1, 2, 3]
    assert tracks[2] == {"id": 2, "label": "car", "category_id": 2, "score": pytest.approx(0.9),
                         "first_frame": 2, "last_frame": 5, "frames": 4, "mean_area": pytest.approx(49.0),
                         "davis_index": 3}  # tracks 1 and 3 appear on frame 0 (indices 1, 2), track 2 later
    assert (tracks[1]["davis_index"], tracks[3]["davis_index"]) == (1, 2)
    assert tracks[1]["score"] == pytest.approx(sum(0.7 + 0.02 * i for i in range(6)) / 6)
    assert (tracks[3]["label"], tracks[3]["frames"]) == ("road", 6)

    text = (tmp_path / "clip.summary.txt").read_text().splitlines()
    assert text[0] == "clip: vps, 6 frames, 37x24, 3 tracks"
    assert text[1].split() == ["id", "label", "score", "first", "last", "frames"]
    assert text[3].split() == ["2", "car", "0.900", "2", "5", "4"]

    writer = SummaryWriter(None, info)  # stdout: the text table, printed whole at close
    for f in frames:
        writer.write(f)
    assert capsys.readouterr().out == ""
    writer.close()
    assert capsys.readouterr().out.splitlines() == text

    (writer,) = open_writers(["summary"], str(tmp_path / "s.txt"), info)  # -o FILE.txt: text
    writer.close()
    assert (tmp_path / "s.txt").read_text() == "clip: vps, 0 frames, 37x24, no tracks\n"


def test_buffered_stdout_prints_nothing_on_abort(capsys):
    info, frames = make_video(frames=2)
    (writer,) = open_writers(["ytvis"], "-", info)
    writer.write(frames[0])
    writer.abort()
    assert capsys.readouterr().out == ""
    (writer,) = open_writers(["coco-rle"], "-", info)
    for f in frames:
        writer.write(f)
    writer.close()
    assert len(json.loads(capsys.readouterr().out)) == sum(len(f.segments) for f in frames)
