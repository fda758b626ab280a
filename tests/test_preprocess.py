"""segcli.pipeline.preprocess against the official resize / normalise / pad (golden inputs.npz)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcli.pipeline.preprocess import (
    FrameMeta,
    frame_meta,
    normalize_and_pad,
    preprocess_frames,
    resize_frame,
    resize_shape,
)


@pytest.mark.parametrize(
    "h,w,scale,expected",
    [
        (1080, 1920, (1280, 736), (720, 1280)),  # spec §1.2 example
        (1920, 1080, (1280, 736), (1280, 720)),  # portrait: same limits, swapped
        (480, 640, (1333, 800), (800, 1067)),  # upscaling happens too
        (100, 100, (2560, 640), (640, 640)),
        (720, 1280, (1024, 1024), (576, 1024)),
    ],
)
def test_resize_shape_rule(h, w, scale, expected):
    new_h, new_w, (sw, sh) = resize_shape(h, w, scale)
    assert (new_h, new_w) == expected
    assert sw == new_w / w and sh == new_h / h


def test_resize_shape_rounds_half_up():
    # factor = 10/3: 3 * 10/3 = 10.0 exactly, 1 * 10/3 = 3.33 -> 3; int(x + 0.5) rounding
    assert resize_shape(1, 3, (10, 10))[:2] == (3, 10)
    assert resize_shape(3, 5, (7, 7))[:2] == (4, 7)  # 3 * 1.4 = 4.2 -> 4


def _raw_and_resized(bundle, prefix):
    if prefix == "vid":
        return bundle.inputs["vid_frames_raw_rgb"], bundle.inputs["vid_frames_resized_rgb"]
    return bundle.inputs["img_raw_rgb"][None], bundle.inputs["img_resized_rgb"][None]


@pytest.mark.parametrize(
    "prefix,scale_key", [("vid", "video_resize_scale_wh"), ("img", "image_resize_scale_wh")]
)
def test_golden_resize_normalize_pad(bundle, prefix, scale_key):
    cfg = bundle.config["preprocessing"]
    scale = cfg[scale_key]
    raw, resized_ref = _raw_and_resized(bundle, prefix)

    resized = np.stack([resize_frame(f, scale) for f in raw])
    assert resized.shape == resized_ref.shape
    assert np.abs(resized.astype(int) - resized_ref.astype(int)).max() <= 1  # observed: 0

    batch = normalize_and_pad(list(resized), cfg["pad_size_divisor"], cfg["mean"], cfg["std"])
    ref = bundle.inputs[f"{prefix}_batch_inputs"].reshape(batch.shape)
    np.testing.assert_allclose(batch.numpy(), ref, atol=1e-5, rtol=0)  # observed: 0.0

    batch2, metas = preprocess_frames(list(raw), scale, cfg["pad_size_divisor"], cfg["mean"], cfg["std"])
    assert torch.equal(batch2, batch)
    for meta in metas + [frame_meta(raw.shape[1], raw.shape[2], scale, cfg["pad_size_divisor"])]:
        assert meta.ori_shape == tuple(bundle.inputs[f"{prefix}_ori_shape"])
        assert meta.img_shape == tuple(bundle.inputs[f"{prefix}_img_shape"])
        assert meta.pad_shape == tuple(bundle.inputs[f"{prefix}_pad_shape"])
        assert meta.pad_shape == tuple(bundle.inputs[f"{prefix}_batch_input_shape"])
        np.testing.assert_allclose(
            meta.scale_factor, bundle.inputs[f"{prefix}_scale_factor"], rtol=0, atol=1e-12
        )


def test_channel_order_does_not_matter_for_resize(bundle):
    raw = bundle.inputs["img_raw_rgb"]
    scale = bundle.config["preprocessing"]["image_resize_scale_wh"]
    via_bgr = resize_frame(np.ascontiguousarray(raw[..., ::-1]), scale)[..., ::-1]
    assert np.array_equal(via_bgr, resize_frame(raw, scale))


def test_padding_is_zero_after_normalisation():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 50, 70, 3), dtype=np.uint8)
    out = normalize_and_pad(frames, pad_divisor=32)
    assert out.shape == (2, 3, 64, 96) and out.dtype == torch.float32
    assert (out[:, :, 50:, :] == 0).all() and (out[:, :, :, 70:] == 0).all()
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    expected = (torch.from_numpy(frames[1]).permute(2, 0, 1).float() - mean) / std
    assert torch.equal(out[1, :, :50, :70], expected)  # channel 0 is R: no BGR swap
    # a pixel equal to the mean normalises to exactly the padding value
    grey = np.zeros((1, 32, 32, 3), np.uint8)
    assert normalize_and_pad(grey, pad_divisor=16).shape == (1, 3, 32, 32)


def test_mixed_sizes_pad_to_largest():
    a = np.zeros((30, 40, 3), np.uint8)
    b = np.zeros((33, 20, 3), np.uint8)
    assert normalize_and_pad([a, b], pad_divisor=32).shape == (2, 3, 64, 64)


def test_frame_meta_is_plain_data():
    meta = frame_meta(1080, 1920, (1280, 736))
    assert meta == FrameMeta((1080, 1920), (720, 1280), (736, 1280), (1280 / 1920, 720 / 1080))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU (benchmarks/gpu_run.sh runs it on a lent one)"))])
def test_normalising_on_the_device_gives_the_host_numbers(device):
    """On a GPU the uint8 pixels travel (pinned, non-blocking) and are normalised there: the
    same float32 numbers as the host's, bit for bit, and the padding still exactly 0."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8), rng.integers(0, 256, size=(40, 70, 3),
                                                                                   dtype=np.uint8)]
    host = normalize_and_pad(frames, pad_divisor=32)
    there = normalize_and_pad(frames, pad_divisor=32, device=device)
    assert there.device.type == device and there.shape == host.shape == (2, 3, 64, 96)
    assert torch.equal(there.cpu(), host)
    assert (there[1, :, 40:] == 0).all()


def test_segmenter_normalises_on_a_gpu_only(segmenter, monkeypatch):
    assert segmenter.input_device is None  # CPU: the host is the device
    monkeypatch.setattr(segmenter, "device", torch.device("cuda", 0))
    assert segmenter.input_device == torch.device("cuda", 0)
