"""mask-video (FFV1 id maps) and overlay (H.264) writers, decoded back with PyAV."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest
from PIL import Image
from test_io_rle import expected_ids, make_video

from segcli.errors import OutputError, UsageError
from segcli.io import open_writers
from segcli.io.mask_video import MaskVideoWriter
from segcli.io.overlay import OverlayWriter, interior_point, place_labels, render_overlay
from segcli.results import FrameResult, Segment


def _write(writer, frames):
    for f in frames:
        writer.write(f)
    writer.close()


def _decode(path):
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        meta = (stream.codec_context.name, stream.codec_context.pix_fmt, stream.width, stream.height)
        frames = [(fr.format.name, fr.to_ndarray()) for fr in c.decode(video=0)]
    return meta, frames


def _times(path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(fr.pts * fr.time_base) for fr in c.decode(video=0)]


@pytest.mark.parametrize("big_ids", [False, True])
def test_mask_video_is_lossless(tmp_path, big_ids):
    info, frames = make_video(big_ids=big_ids)  # big: id 300 appears on frame 3 -> gray16le
    (writer,) = open_writers(["mask-video"], str(tmp_path), info)
    assert writer.target == tmp_path / "clip.ids.mkv"
    _write(writer, frames)
    (codec, pix_fmt, w, h), decoded = _decode(tmp_path / "clip.ids.mkv")
    assert codec == "ffv1" and (w, h) == (37, 24)
    assert pix_fmt == ("gray16le" if big_ids else "gray")
    assert len(decoded) == len(frames)
    for f, (fmt, arr) in zip(frames, decoded):
        assert fmt == pix_fmt and arr.dtype == (np.uint16 if big_ids else np.uint8)
        assert np.array_equal(arr.astype(np.int64), expected_ids(f))
    assert [p.name for p in tmp_path.iterdir()] == ["clip.ids.mkv"]  # upgrade left no temp file


@pytest.mark.parametrize("first_id", [300, 65535])
def test_mask_video_with_a_big_id_on_the_first_frame(tmp_path, first_id):
    info, frames = make_video(frames=3)
    frames[0].segments[0].id = first_id  # used to crash: the 16-bit upgrade reopened the empty 8-bit file
    (writer,) = open_writers(["mask-video"], str(tmp_path), info)
    _write(writer, frames)
    (_, pix_fmt, _, _), decoded = _decode(tmp_path / "clip.ids.mkv")
    assert pix_fmt == "gray16le" and len(decoded) == 3
    for f, (_, arr) in zip(frames, decoded):
        assert np.array_equal(arr.astype(np.int64), expected_ids(f))


@pytest.mark.parametrize("fmt, name", [("mask-video", "clip.ids.mkv"), ("overlay", "clip.overlay.mp4")])
@pytest.mark.parametrize("big_ids", [False, True])
def test_video_timestamps_are_the_source_pts(tmp_path, fmt, name, big_ids):
    info, frames = make_video(frames=5, start=5, big_ids=big_ids)  # --start 5: frames 5..9 at 0.5 s...
    frames[3].pts = 0.8123  # a variable-rate source
    (writer,) = open_writers([fmt], str(tmp_path), info)
    _write(writer, frames)
    times = _times(tmp_path / name)
    assert times == pytest.approx([f.pts for f in frames], abs=5e-4)  # what jsonl says (mkv keeps ms)
    for f in frames:
        f.pts = None  # image folders: index / fps
    (writer,) = open_writers([fmt], str(tmp_path / "nopts"), info)
    _write(writer, frames)
    assert _times(tmp_path / "nopts" / name) == pytest.approx([f.index / 10 for f in frames], abs=5e-4)


def test_mask_video_is_deterministic_and_rejects_huge_ids(tmp_path):
    info, frames = make_video(frames=3, big_ids=True)
    _write(MaskVideoWriter(tmp_path / "a.mkv", info), frames)
    _write(MaskVideoWriter(tmp_path / "b.mkv", info), frames)
    assert (tmp_path / "a.mkv").read_bytes() == (tmp_path / "b.mkv").read_bytes()

    frames[0].segments.append(Segment(70000, 0, "dog", 0.5, np.ones((24, 37), bool)))
    writer = MaskVideoWriter(tmp_path / "c.mkv", info)
    with pytest.raises(OutputError, match="65535"):
        with writer:
            writer.write(frames[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mkv", "b.mkv"]


@pytest.mark.parametrize("size", [(38, 24), (37, 23)])
def test_overlay_decodes_with_input_frame_count_and_size(tmp_path, size):
    info, frames = make_video(width=size[0], height=size[1], frames=7)
    (writer,) = open_writers(["overlay"], str(tmp_path / "ov.mp4"), info)
    assert writer.needs_image
    _write(writer, frames)
    (codec, pix_fmt, w, h), decoded = _decode(tmp_path / "ov.mp4")
    assert codec == "h264" and pix_fmt == "yuv420p"
    assert (w, h) == (size[0] + size[0] % 2, size[1] + size[1] % 2)  # odd sizes padded to even
    assert len(decoded) == len(frames)
    with av.open(str(tmp_path / "ov.mp4")) as c:
        assert c.streams.video[0].average_rate == 10
    for f, (_, _) in zip(frames, decoded):
        drawn = render_overlay(f)
        assert drawn.shape == f.image.shape
        assert not np.array_equal(drawn, f.image)  # masks, contours and labels are drawn
    # decoded pixels are close to what was drawn (lossy, and tiny frames are all edges); an RGB/BGR
    # mix-up would give a mean error above 80
    with av.open(str(tmp_path / "ov.mp4")) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")[: size[1], : size[0]]
    assert np.abs(first.astype(int) - render_overlay(frames[0]).astype(int)).mean() < 25


def test_overlay_is_deterministic_and_needs_images(tmp_path):
    from segcli.runtime import keep_freed_memory

    keep_freed_memory()  # as the CLI runs: freed memory is reused, so stale bytes are everywhere
    info, frames = make_video(frames=3)
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        junk = [np.random.default_rng(ord(name[0])).bytes(1 << 20) for _ in range(16)]
        del junk  # leave different stale bytes in the heap before each encoding
        _write(OverlayWriter(tmp_path / name, info), frames)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes() == (tmp_path / "c.mp4").read_bytes()
    (tmp_path / "c.mp4").unlink()

    writer = OverlayWriter(tmp_path / "c.mp4", info)
    with pytest.raises(ValueError, match="no image"):
        with writer:
            writer.write(FrameResult(0, 0.0, 24, 37, []))
    assert not (tmp_path / "c.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]


def test_overlay_labels_sit_inside_their_objects_and_do_not_collide():
    h, w = 120, 160
    a = np.zeros((h, w), bool)
    a[10:110, 10:150] = True  # a big object ...
    b = np.zeros((h, w), bool)
    b[15:60, 15:100] = True  # ... and two overlapping ones sharing its top-left corner
    c = np.zeros((h, w), bool)
    c[15:50, 15:60] = True
    segs = [Segment(1, 0, "dog", 0.5, a), Segment(2, 1, "car", 0.7, b), Segment(3, 1, "car", 0.9, c)]
    frame = FrameResult(0, 0.0, h, w, segs, np.zeros((h, w, 3), np.uint8))
    drawn = render_overlay(frame)
    assert drawn.shape == (h, w, 3)
    visible = [frame.id_map() == s.id for s in segs]
    for vis in visible:
        x, y = interior_point(vis)
        assert vis[y, x]
    anchors = [interior_point(v) for v in visible]
    assert len(set(anchors)) == 3  # not all at the shared corner (15, 15)
    boxes = place_labels(anchors, [(50, 12)] * 3, w, h)
    for i in range(3):
        x0, y0, x1, y1 = boxes[i]
        assert 0 <= x0 and x1 <= w and 0 <= y0 and y1 <= h
        for j in range(i):
            bx0, by0, bx1, by1 = boxes[j]
            assert min(x1, bx1) <= max(x0, bx0) or min(y1, by1) <= max(y0, by0), (boxes[i], boxes[j])
    # colliding anchors are moved apart, the first keeps its place
    boxes = place_labels([(80, 60)] * 3, [(40, 10)] * 3, w, h)
    assert boxes[0] == (60, 55, 100, 65) and len(set(boxes)) == 3


def test_overlay_pngs_for_images(tmp_path):
    info, frames = make_video(frames=3, task="image")
    info.name = "photos"
    for f, stem in zip(frames, ["cat", "dog", "sofa"]):
        f.name, f.pts = stem, None
    frames[2] = FrameResult(2, None, 30, 41, [], np.full((30, 41, 3), 99, np.uint8), "sofa")  # any size
    (writer,) = open_writers(["overlay"], str(tmp_path), info)
    for f in frames:
        writer.write(f)
    assert not any(p.name.endswith(".png") for p in tmp_path.iterdir())  # moved into place at close
    writer.close()
    assert sorted(os.listdir(tmp_path)) == ["cat.overlay.png", "dog.overlay.png", "sofa.overlay.png"]
    for f in frames:
        with Image.open(tmp_path / f"{f.name}.overlay.png") as im:
            assert im.mode == "RGB" and np.array_equal(np.array(im), render_overlay(f))

    (writer,) = open_writers(["overlay"], str(tmp_path / "one.png"), info)  # -o FILE: exactly one image
    writer.write(frames[0])
    with pytest.raises(UsageError, match="one image"):
        writer.write(frames[1])
    writer.abort()
    assert not (tmp_path / "one.png").exists()
    with pytest.raises(UsageError, match="PNG"):
        open_writers(["overlay"], str(tmp_path / "one.mp4"), info)
