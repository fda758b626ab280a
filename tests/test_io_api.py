"""open_writers (output resolution, errors), atomicity of every writer, and the summary format."""

from __future__ import annotations

import json
import os
import stat

import pytest
from test_io_rle import make_video

from segcli.errors import OutputError, UsageError
from segcli.io import FORMATS, STDOUT_FORMATS, WRITERS, base, close_writers, open_writers
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


@pytest.mark.parametrize("fmt", ["jsonl", "davis", "mask-video"])
def test_close_replaces_earlier_output(tmp_path, fmt):
    info, frames = make_video(frames=2)
    (writer,) = open_writers([fmt], str(tmp_path), info)
    (target,) = writer.targets
    if writer.is_dir:
        target.mkdir()
        (target / "stale.png").write_bytes(b"old")
    else:
        target.write_bytes(b"old")
    with writer:
        for f in frames:
            writer.write(f)
    assert sorted(os.listdir(tmp_path)) == [target.name]  # no temp or backup left
    if writer.is_dir:
        assert sorted(os.listdir(target)) == ["00000.png", "00001.png"]
    else:
        assert target.read_bytes() != b"old"


@pytest.mark.parametrize("fmt", ["ytvis", "davis"])
def test_failed_final_rename_keeps_earlier_output(tmp_path, monkeypatch, fmt):
    info, frames = make_video(frames=2)
    (writer,) = open_writers([fmt], str(tmp_path), info)
    (target,) = writer.targets
    if writer.is_dir:
        target.mkdir()
        (target / "old.png").write_bytes(b"old")
    else:
        target.write_bytes(b"old")
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
        assert os.listdir(target) == ["old.png"]
    else:
        assert target.read_bytes() == b"old"


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
                         "first_frame": 2, "last_frame": 5, "frames": 4, "mean_area": pytest.approx(49.0)}
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
