"""segcli.pipeline.reader: lazy decoding of videos, images, folders and stdin; errors."""

from __future__ import annotations

import io

import av
import cv2
import numpy as np
import pytest

from segcli.errors import InputNotFoundError, UnreadableInputError, UsageError
from segcli.pipeline.reader import open_source, orient_frame, rotation_matrix

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
