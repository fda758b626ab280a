"""Multi-scale deformable attention against a naive per-point loop, and the positional
encodings against their closed forms (omg-seg-inference.md §3.3, §4.2, §6.5)."""

from __future__ import annotations

import math

import torch

from segcli.model.msda import MultiScaleDeformableAttention, ms_deform_attn
from segcli.model.position import box_encoding, sine_2d, sine_3d


def bilinear_zero_pad(img: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """img (d, H, W); (x, y) in pixels with pixel centres at integer + 0.5 (align_corners=False)."""
    d, h, w = img.shape
    x, y = x - 0.5, y - 0.5
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(d, dtype=torch.float64)
    for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
        wt = (1 - abs(x - xx)) * (1 - abs(y - yy))
        if 0 <= xx < w and 0 <= yy < h:
            out += wt * img[:, yy, xx].double()
    return out


def test_msda_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 5), (6, 4)]
    b, m, d, nq, p = 2, 2, 3, 4, 3
    nv = sum(h * w for h, w in shapes)
    value = torch.randn(b, nv, m, d, generator=g)
    loc = torch.rand(b, nq, m, len(shapes), p, 2, generator=g) * 1.4 - 0.2  # some points fall outside
    wts = torch.rand(b, nq, m, len(shapes), p, generator=g)
    ours = ms_deform_attn(value, shapes, loc, wts)
    ref = torch.zeros(b, nq, m * d, dtype=torch.float64)
    for bi in range(b):
        for qi in range(nq):
            for hi in range(m):
                acc = torch.zeros(d, dtype=torch.float64)
                start = 0
                for li, (h, w) in enumerate(shapes):
                    img = value[bi, start:start + h * w, hi].T.reshape(d, h, w)
                    start += h * w
                    for pi in range(p):
                        x, y = loc[bi, qi, hi, li, pi].tolist()
                        acc += wts[bi, qi, hi, li, pi].double() * bilinear_zero_pad(img, x * w, y * h)
                ref[bi, qi, hi * d:(hi + 1) * d] = acc
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=1e-5)



def test_msda_module_reads_the_checkpoint_layout():
    """The module reorders the sampling offsets' output channels (x/y, level, head, point) for
    speed; it must compute what the official layout (head, level, point, x/y) means, with the
    attention weights' softmax over each head's levels and points."""
    g = torch.Generator().manual_seed(3)
    shapes = [(3, 5), (6, 4), (2, 2)]
    b, c, m, lv, p = 2, 12, 3, len(shapes), 2
    n = sum(h * w for h, w in shapes)
    attn = MultiScaleDeformableAttention(c, m, lv, p)
    with torch.no_grad():
        for param in attn.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.3)
    query, pos = torch.randn(b, n, c, generator=g), torch.randn(b, n, c, generator=g)
    ref = torch.rand(b, n, lv, 2, generator=g)
    with torch.no_grad():
        ours = attn(query, pos, ref, shapes)
        q = query + pos
        offsets = attn.sampling_offsets(q).view(b, n, m, lv, p, 2)
        weights = attn.attention_weights(q).view(b, n, m, lv * p).softmax(-1).view(b, n, m, lv, p)
        wh = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32)
        loc = ref[:, :, None, :, None, :] + offsets / wh[None, None, None, :, None, :]
        value = attn.value_proj(query).view(b, n, m, c // m)
        official = query + attn.output_proj(ms_deform_attn(value, shapes, loc, weights))
    torch.testing.assert_close(ours, official, atol=1e-6, rtol=1e-6)

def test_sine_2d_closed_form():
    h, w, f = 3, 4, 8
    pos = sine_2d(h, w, f)
    assert pos.shape == (h, w, 2 * f)
    r, c, k = 2, 3, 1  # 0-based row 2, column 3, frequency index 1
    y = (r + 1) / (h + 1e-6) * 2 * math.pi
    x = (c + 1) / (w + 1e-6) * 2 * math.pi
    freq = 10000 ** (2 * k / f)
    expected = [math.sin(y / freq), math.cos(y / freq), math.sin(x / freq), math.cos(x / freq)]
    got = [pos[r, c, 2 * k], pos[r, c, 2 * k + 1], pos[r, c, f + 2 * k], pos[r, c, f + 2 * k + 1]]
    for a, b in zip(got, expected):
        assert abs(float(a) - b) < 1e-5


def test_sine_3d_adds_time_term():
    t, h, w, f = 3, 2, 2, 4
    pos = sine_3d(t, h, w, f)
    assert pos.shape == (t, h, w, 2 * f)
    k = 1
    z = 2 / (t + 1e-6) * 2 * math.pi  # frame index 1 (0-based)
    g = 10000 ** (2 * k / (2 * f))
    diff = pos[1] - sine_2d(h, w, f)
    assert abs(float(diff[0, 0, 2 * k]) - math.sin(z / g)) < 1e-5
    assert abs(float(diff[1, 1, 2 * k + 1]) - math.cos(z / g)) < 1e-5
    assert not torch.allclose(pos[0], pos[2])


def test_box_encoding_order_y_x_w_h():
    f = 4
    box = torch.tensor([[0.1, 0.2, 0.3, 0.4]])  # cx, cy, w, h
    enc = box_encoding(box, f)
    assert enc.shape == (1, 4 * f)
    for slot, coord in enumerate((0.2, 0.1, 0.3, 0.4)):  # y, x, w, h
        a = coord * 2 * math.pi
        assert abs(float(enc[0, slot * f]) - math.sin(a)) < 1e-6
        assert abs(float(enc[0, slot * f + 3]) - math.cos(a / 10000 ** (2 / f))) < 1e-6
