"""mask-video (FFV1 id maps) and overlay (H.264) writers, decoded back with PyAV."""

from __future__ import annotations

import av
import numpy as np
import pytest
from test_io_rle import expected_ids, make_video

from segcli.errors import OutputError
from segcli.io import open_writers
from segcli.io.mask_video import MaskVideoWriter
from segcli.io.overlay import OverlayWriter, render_overlay
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
