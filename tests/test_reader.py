"""segcli.pipeline.reader: lazy decoding of videos, images, folders and stdin; errors."""

from __future__ import annotations

import io
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from segcli.errors import InputNotFoundError, UnreadableInputError, UsageError
from segcli.pipeline import reader as reader_mod
from segcli.pipeline.reader import Selection, _Indexer, open_source, orient_frame, rotation_matrix

COLOUR = (200, 50, 30)
W, H = 64, 48


def flat_frames(n: int, colour=COLOUR, marker=True) -> list[np.ndarray]:
    """n flat frames; a white 8x8 marker in the top-left corner makes orientation visible."""
    frames = []
    for _ in range(n):
        f = np.zeros((H, W, 3), np.uint8)
        f[:] = colour
        if marker:
            f[:8, :8] = 255
        frames.append(f)
    return frames


def write_video(path, frames, codec="libx264", pix_fmt="yuv420p", fps=10, rotation=None, hflip=False):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = pix_fmt
        if rotation is not None or hflip:
            stream.set_display_rotation(rotation or 0, hflip=hflip)
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def marker_corner(rgb: np.ndarray) -> tuple[str, str]:
    """Which corner holds the bright marker: ('top'|'bottom', 'left'|'right')."""
    ys, xs = np.nonzero(rgb.min(axis=2) > 230)
    h, w = rgb.shape[:2]
    return ("top" if ys.mean() < h / 2 else "bottom", "left" if xs.mean() < w / 2 else "right")


def test_h264_frames_count_size_colour_pts(tmp_path):
    path = write_video(tmp_path / "clip.mp4", flat_frames(8), fps=10)
    with open_source(path) as src:
        assert src.info.name == "clip"
        assert (src.info.width, src.info.height) == (W, H)
        assert src.info.fps == pytest.approx(10.0)
        assert src.info.num_frames == 8
        assert src.info.kind == "video"
        frames = list(src)
    assert [f.index for f in frames] == list(range(8))
    assert [f.name for f in frames] == [f"{i:05d}" for i in range(8)]
    assert [f.pts for f in frames] == pytest.approx([i / 10 for i in range(8)])
    for f in frames:
        assert f.rgb.dtype == np.uint8 and f.rgb.shape == (H, W, 3)
        # away from the marker the flat colour survives the yuv420p round trip within a few levels
        assert np.abs(f.rgb[30:, 30:].reshape(-1, 3).mean(0) - COLOUR).max() < 6
        assert marker_corner(f.rgb) == ("top", "left")


def test_iteration_is_repeatable_and_lazy(tmp_path):
    path = write_video(tmp_path / "clip.mp4", flat_frames(4))
    src = open_source(path)
    it = iter(src)
    first = next(it)
    assert first.index == 0  # a generator: frames are produced on demand
    assert len(list(src)) == 4  # a second pass re-opens the file
    src.close()


def test_start_end_range(tmp_path):
    path = write_video(tmp_path / "clip.mp4", flat_frames(8), fps=5)
    with open_source(path, start=2, end=5) as src:
        assert src.info.num_frames == 3
        frames = list(src)
    assert [f.index for f in frames] == [2, 3, 4]
    assert [f.pts for f in frames] == pytest.approx([0.4, 0.6, 0.8])
    with open_source(path, start=6) as src:
        assert [f.index for f in src] == [6, 7]
    with pytest.raises(UsageError):
        open_source(path, start=8)  # past the end
    with pytest.raises(UsageError):
        open_source(path, start=3, end=3)


def test_file_url_is_a_local_file(tmp_path):
    path = write_video(tmp_path / "clip one.mp4", flat_frames(3))
    with open_source("file://" + str(path).replace(" ", "%20")) as src:
        assert not src.info.live and src.info.num_frames == 3 and src.info.name == "clip one"
        assert len(list(src)) == 3


def test_gray_video_becomes_rgb(tmp_path):
    path = write_video(tmp_path / "gray.mkv", flat_frames(3), codec="ffv1", pix_fmt="gray")
    with open_source(path) as src:
        frames = list(src)
    assert len(frames) == 3
    rgb = frames[0].rgb
    assert rgb.shape == (H, W, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    luma = 0.299 * COLOUR[0] + 0.587 * COLOUR[1] + 0.114 * COLOUR[2]
    assert abs(float(rgb[30:, 30:].mean()) - luma) < 6


def test_10bit_and_alpha_videos(tmp_path):
    ten = write_video(tmp_path / "ten.mkv", flat_frames(3), codec="ffv1", pix_fmt="yuv420p10le")
    alpha = write_video(tmp_path / "alpha.mov", flat_frames(3), codec="png", pix_fmt="rgba")
    with open_source(ten) as src:
        f = next(iter(src))
        assert f.rgb.dtype == np.uint8
        assert np.abs(f.rgb[30:, 30:].reshape(-1, 3).mean(0) - COLOUR).max() < 4
    with open_source(alpha) as src:
        frames = list(src)
    assert len(frames) == 3
    assert frames[0].rgb.shape == (H, W, 3)
    assert (frames[0].rgb[30:, 30:] == COLOUR).all()  # png is lossless, alpha dropped


@pytest.mark.parametrize(
    "rotation,hflip,shape,corner",
    [
        (90, False, (W, H), ("bottom", "left")),  # 90 deg counter-clockwise
        (-90, False, (W, H), ("top", "right")),  # 90 deg clockwise (a portrait phone video)
        (180, False, (H, W), ("bottom", "right")),
        (0, True, (H, W), ("top", "right")),  # mirror only
    ],
)
def test_rotation_metadata_gives_upright_frames(tmp_path, rotation, hflip, shape, corner):
    path = write_video(tmp_path / "rot.mp4", flat_frames(2), rotation=rotation, hflip=hflip)
    with open_source(path) as src:
        assert (src.info.height, src.info.width) == shape
        frames = list(src)
    assert frames[0].rgb.shape[:2] == shape
    assert marker_corner(frames[0].rgb) == corner


def test_orient_frame_matches_numpy_rotations():
    img = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    assert (orient_frame(img, None) == img).all()
    assert (orient_frame(img, rotation_matrix(0)) == img).all()
    assert (orient_frame(img, rotation_matrix(90)) == np.rot90(img, 1)).all()
    assert (orient_frame(img, rotation_matrix(-90)) == np.rot90(img, -1)).all()
    assert (orient_frame(img, rotation_matrix(180)) == np.rot90(img, 2)).all()
    assert (orient_frame(img, rotation_matrix(0, hflip=True)) == img[:, ::-1]).all()
    # rotate counter-clockwise by 90, then mirror: a transpose
    assert (orient_frame(img, rotation_matrix(90, hflip=True)) == np.rot90(img, 1)[:, ::-1]).all()


def test_single_image_and_exif_orientation(tmp_path):
    from PIL import Image

    img = flat_frames(1)[0]
    png = tmp_path / "photo.png"
    cv2.imwrite(str(png), img[..., ::-1])  # cv2 writes BGR
    with open_source(png) as src:
        assert src.info.kind == "image" and src.info.name == "photo" and src.info.fps is None
        frames = list(src)
    assert len(frames) == 1 and frames[0].pts is None and frames[0].name == "photo"
    assert (frames[0].rgb == img).all()  # RGB order, no channel swap

    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # EXIF orientation: display rotated 90 degrees clockwise
    jpg = tmp_path / "phone.jpg"
    pil.save(jpg, exif=exif, quality=95)
    with open_source(jpg) as src:
        assert (src.info.width, src.info.height) == (H, W)
        rgb = next(iter(src)).rgb
    assert rgb.shape == (W, H, 3)
    assert marker_corner(rgb) == ("top", "right")


def test_image_folder_sorted_by_name(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, name in enumerate(["00002.png", "00000.png", "00001.jpg"]):
        f = np.full((H, W, 3), 40 * (i + 1), np.uint8)
        cv2.imwrite(str(folder / name), f)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"junk")
    with open_source(folder) as src:
        assert src.info.kind == "folder" and src.info.name == "seq"
        assert src.info.num_frames == 3
        frames = list(src)
    assert [f.name for f in frames] == ["00000", "00001", "00002"]
    assert [f.index for f in frames] == [0, 1, 2]
    assert int(frames[0].rgb.mean()) == 80  # 00000.png was written second (value 80)
    with open_source(folder, start=1, end=2) as src:
        assert [f.name for f in src] == ["00001"]


def test_stdin_video_and_image(tmp_path):
    path = write_video(tmp_path / "clip.mp4", flat_frames(5))
    src = open_source("-", stdin=io.BytesIO(path.read_bytes()))
    spooled = src.path
    assert src.info.name == "stdin" and src.info.num_frames == 5
    assert len(list(src)) == 5
    src.close()
    assert not (tmp_path / spooled).exists()

    ok, png = cv2.imencode(".png", flat_frames(1)[0][..., ::-1])
    with open_source("-", stdin=io.BytesIO(png.tobytes())) as src:
        assert src.info.kind == "image"
        assert (next(iter(src)).rgb == flat_frames(1)[0]).all()


def test_stdin_replaced_by_an_in_memory_stream(tmp_path, monkeypatch):
    """A program that embeds segcli and sets sys.stdin to an in-memory stream (no raw file
    underneath, as CliRunner does) still reads "-"; a real stdin is read through its raw file."""
    path = write_video(tmp_path / "clip.mp4", flat_frames(4))

    class Stdin:
        buffer = io.BytesIO(path.read_bytes())

    monkeypatch.setattr("sys.stdin", Stdin)
    with open_source("-") as src:
        assert src.info.name == "stdin" and len(list(src)) == 4


def test_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(InputNotFoundError, match="no such file: .*nope.mp4"):
        open_source(missing)

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    with pytest.raises(UnreadableInputError, match="garbage.mp4") as err:
        open_source(garbage)
    assert "\n" not in str(err.value)

    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    (empty_dir / "readme.txt").write_text("x")
    with pytest.raises(UnreadableInputError, match="no images in folder .*empty"):
        open_source(empty_dir)

    bad_png = tmp_path / "broken.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(UnreadableInputError, match="broken.png"):
        open_source(bad_png)

    with pytest.raises(UnreadableInputError, match="stdin is empty"):
        open_source("-", stdin=io.BytesIO(b""))


def test_zero_frame_and_audio_only_files(tmp_path):
    # an MKV cut before its first cluster: a valid header, no frames
    full = write_video(tmp_path / "full.mkv", flat_frames(3), codec="ffv1", pix_fmt="yuv420p")
    data = full.read_bytes()
    cut = data.find(b"\x1f\x43\xb6\x75")  # Matroska Cluster element id
    assert cut > 0
    header_only = tmp_path / "header_only.mkv"
    header_only.write_bytes(data[:cut])
    with pytest.raises(UnreadableInputError, match="header_only.mkv"):
        open_source(header_only)

    audio = tmp_path / "audio.mkv"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(UnreadableInputError, match="no video stream in .*audio.mkv"):
        open_source(audio)


def test_reader_choice(tmp_path):
    path = write_video(tmp_path / "clip.mp4", flat_frames(2))
    with pytest.raises(UsageError, match="unknown reader"):
        open_source(path, reader="opencv")
    try:
        import decord  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="decord"):
            open_source(path, reader="decord")
    else:  # pragma: no cover - decord is optional
        with open_source(path, reader="decord") as src:
            assert len(list(src)) == 2


# ---- frame selection: every / fps / max_frames / duration ------------------------------------


def test_every_fps_max_frames_duration_keep_source_indices(tmp_path):
    path = write_video(tmp_path / "clip.mp4", flat_frames(24), fps=10)
    cases = [
        (dict(every=5), [0, 5, 10, 15, 20], 2.0),
        (dict(every=5, start=3), [3, 8, 13, 18, 23], 2.0),
        (dict(every=4, end=9), [0, 4, 8], 2.5),
        (dict(fps=4), [0, 3, 5, 8, 10, 13, 15, 18, 20, 23], 4.0),  # first frame of each 0.25 s slot
        (dict(fps=2.5, start=1), [1, 5, 9, 13, 17, 21], 2.5),
        (dict(fps=50), list(range(24)), 10.0),  # faster than the source: every frame
        (dict(max_frames=3), [0, 1, 2], 10.0),
        (dict(max_frames=3, every=10), [0, 10, 20], 1.0),
        (dict(duration=0.5), [0, 1, 2, 3, 4], 10.0),
        (dict(duration=1.0, start=20), [20, 21, 22, 23], 10.0),
        (dict(duration=1.05, every=2, start=2), [2, 4, 6, 8, 10, 12], 5.0),
    ]
    for kwargs, indices, out_fps in cases:
        with open_source(path, **kwargs) as src:
            frames = list(src)
            assert src.info.num_frames == len(indices), kwargs
            assert src.info.output_fps == pytest.approx(out_fps), kwargs
            assert src.info.fps == pytest.approx(10.0)
        assert [f.index for f in frames] == indices, kwargs
        assert [f.pts for f in frames] == pytest.approx([i / 10 for i in indices]), kwargs
        assert [f.name for f in frames] == [f"{i:05d}" for i in indices]


def test_selection_count_matches_iteration():
    for kwargs in [dict(every=3, start=2, end=20), dict(fps=7, start=5), dict(fps=3.3, duration=2.2),
                   dict(duration=1.25, every=2), dict(max_frames=7, fps=2)]:  # fmt: skip
        sel = Selection(**kwargs)
        selector = reader_mod._Selector(sel, 24.0)
        kept = []
        for i in range(60):
            d = selector.decide(i, i / 24)
            if d == reader_mod._STOP:
                break
            if d == reader_mod._KEEP:
                kept.append(i)
                if selector.done:
                    break
        assert sel.count(60, 24.0) == len(kept), kwargs


def test_invalid_selection_options(tmp_path):
    path = write_video(tmp_path / "clip.mp4", flat_frames(2))
    for kwargs, message in [(dict(every=0), "--every"), (dict(every=2.5), "--every"), (dict(fps=0), "--fps"),
                            (dict(fps=5, every=2), "either --every or --fps"), (dict(max_frames=0), "--max-frames"),
                            (dict(duration=-1), "--duration"), (dict(timeout=0), "timeout")]:  # fmt: skip
        with pytest.raises(UsageError, match=message):
            open_source(path, **kwargs)


def test_image_folder_every_and_max_frames(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    for i in range(7):
        cv2.imwrite(str(folder / f"{i:05d}.png"), np.full((H, W, 3), 10 * i, np.uint8))
    with open_source(folder, every=3) as src:
        assert src.info.num_frames == 3
        assert [f.index for f in src] == [0, 3, 6]
    with open_source(folder, start=1, every=2, max_frames=2) as src:
        assert [f.name for f in src] == ["00001", "00003"]
    with pytest.raises(UsageError, match="image folders have no timestamps"):
        open_source(folder, fps=2)
    with pytest.raises(UsageError, match="past the end"):
        open_source(folder, start=7)


# ---- start past the end ----------------------------------------------------------------------


@pytest.mark.parametrize("name,codec", [("clip.mkv", "ffv1"), ("clip.mp4", "libx264")])
def test_start_past_the_end_is_a_usage_error(tmp_path, name, codec):
    path = write_video(tmp_path / name, flat_frames(24), codec=codec, fps=24)
    with pytest.raises(UsageError, match=r"^--start 50 is past the end of the video \(24 frames\)$"):
        open_source(path, start=50)
    with pytest.raises(UsageError, match=r"^--start 24 is past the end of the video \(24 frames\)$"):
        open_source(path, start=24)
    with open_source(path, start=23) as src:
        assert [f.index for f in src] == [23]


def test_start_past_the_end_found_by_the_iteration(tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.mkv", flat_frames(5), codec="ffv1")
    monkeypatch.setattr(reader_mod.PyAVSource, "_count_packets", lambda self, limit: limit)  # no cheap count
    src = open_source(path, start=9)
    with pytest.raises(UsageError, match=r"--start 9 is past the end of the video \(5 frames\)"):
        list(src)


# ---- indices true to the source when packets are lost -----------------------------------------


def write_mjpeg(path, n=10, fps=10, drop=(), pts=None):
    """MJPEG frames with grey levels 0, 20, 40...; `drop`: packets not muxed; `pts`: explicit timestamps."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuvj420p"
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), 20 * i, np.uint8), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                if i not in drop:
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def corrupt_jpeg(path, k: int) -> None:
    """Overwrite the k-th JPEG of the file with garbage (same size: the container stays intact)."""
    data = bytearray(Path(path).read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    a, b = starts[k], starts[k + 1]
    data[a:b - 16] = np.random.default_rng(0).integers(0, 256, b - 16 - a, dtype=np.uint8).tobytes()
    Path(path).write_bytes(bytes(data))


@pytest.mark.parametrize("ext", ["avi", "mkv"])
def test_corrupt_mjpeg_packet_leaves_a_gap_not_a_shift(tmp_path, ext):
    path = write_mjpeg(tmp_path / f"cam.{ext}")
    corrupt_jpeg(path, 3)
    notices = []
    with open_source(path, notice=notices.append) as src:
        frames = list(src)
        assert src.missing == 1
    assert [f.index for f in frames] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert [f.pts for f in frames] == pytest.approx([f.index / 10 for f in frames])
    assert [round(float(f.rgb.mean()) / 20) for f in frames] == [f.index for f in frames]  # result k = source k
    assert notices == [f"frame 3 of {path} could not be decoded: skipped"]
    with open_source(path, start=4, notice=notices.append) as src:  # outside the range: not reported
        assert [f.index for f in src][:2] == [4, 5] and src.missing == 0
    with open_source(path, every=3) as src:
        assert [f.index for f in src] == [0, 6, 9]  # frame 3 is missing, the grid stays


def test_lost_packets_and_a_corrupt_last_packet(tmp_path):
    path = write_mjpeg(tmp_path / "lost.mkv", drop=(2, 5, 6))
    notices = []
    with open_source(path, notice=notices.append) as src:
        assert [f.index for f in src] == [0, 1, 3, 4, 7, 8, 9]
        assert src.missing == 3
    assert notices == [f"frame 2 of {path} could not be decoded: skipped",
                       f"frames 5-6 of {path} could not be decoded: skipped"]  # fmt: skip
    tail = write_mjpeg(tmp_path / "tail.avi")
    corrupt_jpeg(tail, 8)
    with open_source(tail) as src:
        assert [f.index for f in src] == [0, 1, 2, 3, 4, 5, 6, 7, 9]
        assert src.missing == 1


def test_variable_frame_rate_counts_frames(tmp_path):
    pts = [0, 40, 130, 170, 300, 340, 345, 420]  # ms: no constant grid
    path = write_mjpeg(tmp_path / "vfr.mkv", n=8, pts=pts)
    with av.open(str(path)) as c:  # the container agrees: these are the frame times
        assert [p.pts for p in c.demux(video=0) if p.size] == pts
    notices = []
    with open_source(path, notice=notices.append) as src:
        frames = list(src)
        assert src.missing == 0 and notices == []
    assert [f.index for f in frames] == list(range(8))
    assert [f.pts for f in frames] == pytest.approx([p / 1000 for p in pts])
    with open_source(path, duration=0.3) as src:
        assert [f.index for f in src] == [0, 1, 2, 3]
    with open_source(path, fps=5) as src:  # 0.2 s slots by timestamp
        assert [f.index for f in src] == [0, 4, 7]


def test_indexer_rate_confirmation():
    # a live stream whose probed rate is twice the real one (e.g. field rate): counted, not "missing"
    idx = _Indexer(Fraction(1, 90000), 40, None, confirmed=False)
    placed = [idx.place(3000 + 4500 * i) for i in range(5)]
    assert [p[0] for p in placed] == [0, 1, 2, 3, 4] and not any(p[2] for p in placed)
    # confirmed by one single-frame step, a gap is a loss
    idx = _Indexer(Fraction(1, 90000), 20, None, confirmed=False)
    placed = [idx.place(4500 * i) for i in (0, 1, 2, 5, 6)]
    assert [p[0] for p in placed] == [0, 1, 2, 5, 6] and list(placed[3][2]) == [3, 4]
    # undecodable packets without timestamps are counted in frame-counting mode
    idx = _Indexer(Fraction(1, 1000), None, 0)
    idx.failed(None)
    assert idx.place(100)[0] == 1 and idx.place(200)[0] == 2
    idx.failed(300)
    assert list(idx.finish()) == [3]


# ---- decord ----------------------------------------------------------------------------------

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.mp4"))
needs_decord = pytest.mark.skipif(not reader_mod._decord_installed(), reason="decord not installed")


@needs_decord
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_decord_matches_pyav_bit_exact_on_samples(sample):
    for kwargs in [{}, dict(start=10, every=7), dict(fps=5, max_frames=6, start=3)]:
        with open_source(sample, **kwargs) as a, open_source(sample, reader="decord", **kwargs) as b:
            assert b.info.reader == "decord" and a.info.reader == "pyav"
            for field in ("width", "height", "fps", "num_frames", "output_fps", "name"):
                assert getattr(a.info, field) == getattr(b.info, field), field
            fa, fb = list(a), list(b)
        assert len(fa) == len(fb) == a.info.num_frames
        assert [f.index for f in fa] == [f.index for f in fb]
        assert [f.pts for f in fa] == [f.pts for f in fb]  # exact: both from the container timestamps
        assert all(x.rgb.shape == y.rgb.shape and (x.rgb == y.rgb).all() for x, y in zip(fa, fb))
    with open_source(sample, reader="auto") as src:
        assert src.info.reader == "decord"  # measured faster (benchmarks/sources.py) and exact here


@needs_decord
def test_decord_refuses_rotation_and_auto_falls_back(tmp_path):
    rotated = write_video(tmp_path / "phone.mp4", flat_frames(3), rotation=-90)
    with pytest.raises(UsageError, match="decord reader cannot apply the rotation metadata of .*phone.mp4"):
        open_source(rotated, reader="decord")
    with open_source(rotated, reader="auto") as src:
        assert src.info.reader == "pyav" and (src.info.width, src.info.height) == (H, W)
    mkv = write_video(tmp_path / "clip.mkv", flat_frames(3), codec="ffv1")
    with open_source(mkv, reader="auto") as src:
        assert src.info.reader == "pyav"  # no frame count in the container: decord's length is a guess


@needs_decord
def test_decord_ten_bit_within_tolerance(tmp_path):
    path = write_video(tmp_path / "ten.mkv", flat_frames(3), codec="ffv1", pix_fmt="yuv420p10le")
    with open_source(path) as a, open_source(path, reader="decord") as b:
        for x, y in zip(a, b):
            diff = np.abs(x.rgb.astype(int) - y.rgb.astype(int))
            assert diff.max() <= 32 and diff.mean() < 1.0  # decord's own 10-bit conversion (edges differ)


def test_auto_reader_policy(monkeypatch):
    monkeypatch.setattr(reader_mod, "_decord_installed", lambda: True)
    probe = reader_mod._Probe("mov,mp4,m4a,3gp,3g2,mj2", "yuv420p", 60, None, 24.0, 320 * 192)
    assert reader_mod._auto_prefers_decord(probe)
    for change in [dict(pixels=1280 * 720), dict(pixels=480 * 270), dict(frames=None), dict(pix_fmt="yuv420p10le"),
                   dict(format="matroska,webm"), dict(matrix=rotation_matrix(90))]:  # fmt: skip
        assert not reader_mod._auto_prefers_decord(reader_mod._Probe(**{**probe.__dict__, **change})), change
    monkeypatch.setattr(reader_mod, "_decord_installed", lambda: False)
    assert not reader_mod._auto_prefers_decord(probe)


def test_decord_not_installed_is_one_line(tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.mp4", flat_frames(2))
    monkeypatch.setitem(sys.modules, "decord", None)  # import decord -> ImportError
    message = r"^reader 'decord' is not installed \(pip install decord\); use --reader pyav$"
    with pytest.raises(UsageError, match=message):
        open_source(path, reader="decord")
    with open_source(path, reader="auto") as src:
        assert src.info.reader == "pyav"
