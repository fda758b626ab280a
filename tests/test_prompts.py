"""segcli.pipeline.prompts: prompt geometry, the head's box normalisation, the official eval click."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segcli.errors import PromptError
from segcli.pipeline.prompts import (
    boxes_to_unit_cxcywh,
    inverse_sigmoid,
    mask_center_point,
    mask_prompt_boxes,
    normalize_boxes,
    point_boxes,
    prompt_boxes,
    rescale_mask_nearest,
    scale_boxes,
    soft_distance_transform,
    validate_boxes,
    validate_mask,
    validate_points,
)


def test_golden_eval_clicks_from_gt_masks(bundle):
    i = bundle.inputs
    boxes = mask_prompt_boxes(i["sam_eval_gt_masks"], i["img_img_shape"])
    assert np.array_equal(boxes.numpy(), i["sam_eval_prompt_boxes"])  # exact
    assert (i["sam_eval_prompt_bp"] == 0).all()


def test_eval_click_is_not_an_exact_edt():
    """The official click comes from kornia's approximate DT, which picks other pixels than an exact
    Euclidean DT (spec §6.5: 2 of the 3 tiny_v1 masks); guard against 'simplifying' to scipy."""
    from scipy.ndimage import distance_transform_edt

    yy, xx = np.mgrid[:40, :60]
    triangle = (yy > 5) & (yy < 38) & (np.abs(xx - 30) < (yy - 5) * 0.8)
    x, y = mask_center_point(triangle, (40, 60))
    assert triangle[y, x]
    edt = distance_transform_edt(np.pad(triangle, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(edt.argmax(), edt.shape)
    assert (x, y) != (int(col), int(row))


def test_golden_user_clicks_and_box(bundle):
    i = bundle.inputs
    clicks = i["sam_user_clicks_xy"]  # already in resized pixels
    ref = i["sam_user_prompt_boxes"]
    n = len(clicks)
    assert np.array_equal(point_boxes(torch.from_numpy(clicks)).numpy(), ref[:n])
    # the same prompts given in ORIGINAL pixels come back to the resized ones
    sf = bundle.inputs["img_scale_factor"]
    boxes, bp = prompt_boxes(sf, points_xy=clicks / sf, boxes_xyxy=ref[n:] / np.tile(sf, 2))
    np.testing.assert_allclose(boxes.numpy(), ref, atol=1e-3, rtol=0)
    assert bp.tolist() == [0] * len(ref)


def test_rescale_mask_follows_the_keep_ratio_rule(bundle):
    i = bundle.inputs
    small = rescale_mask_nearest(i["sam_eval_gt_masks"][0], i["img_img_shape"])
    # img_shape itself came from the same rule on the same size, barring +-1 px rounding cases
    assert np.abs(np.array(small.shape) - i["img_img_shape"]).max() <= 1
    assert small.dtype == np.uint8 and set(np.unique(small)) <= {0, 1}


def test_soft_distance_transform_kornia_0_9_semantics():
    # one source pixel in the middle: pixels at chessboard distance d are reached at iteration d - 1
    # and get (d - 1) + v with v in (0, 1]; kornia < 0.8.2 added (3 * i) // 2 instead of i
    src = torch.zeros(11, 11)
    src[5, 5] = 1.0
    out = soft_distance_transform(src)
    assert out[5, 5] == 0
    assert float(out[5, 6]) == pytest.approx(1.0, abs=1e-5)  # one edge tap: -h * ln(exp(-1 / h)) = 1
    for d in range(2, 6):
        assert d - 1 < float(out[5, 5 + d]) <= d, d
    assert torch.equal(out, out.flip(0)) and torch.equal(out, out.T)  # symmetric kernel


def test_mask_center_point_of_a_rectangle():
    mask = np.zeros((40, 60), bool)
    mask[10:31, 20:51] = True  # 21 rows x 31 columns: the deepest pixels form a ridge on row 20
    x, y = mask_center_point(mask, (40, 60))
    assert y == 20 and 25 <= x <= 45
    # ties along the ridge go to the first maximum in row-major order, i.e. its left end
    dist = soft_distance_transform(torch.from_numpy(~np.pad(mask, 1)).float())[1:-1, 1:-1]
    assert float(dist[y, x]) == float(dist.max()) and float(dist[y, :x].max()) < float(dist.max())


def test_normalize_boxes_closed_form():
    """Resized-pixel boxes on a 256x171 (w x h) image -> (cx, cy, w, h) / image size, then mmdet's
    inverse_sigmoid(eps=1e-5) (which clamps to [0, 1] first) and sigmoid: inside (0, 1) a value is
    unchanged, at or below 0 it becomes eps / (1 + eps), at or above 1 it becomes 1 / (1 + eps).
    The expected values are written out here, not computed with the module's helpers."""
    eps = 1e-5
    lo, hi = eps / (1 + eps), 1 / (1 + eps)
    boxes = torch.tensor([
        [74.0, 83.0, 80.0, 89.0],  # inside: cx 77, cy 86, w 6, h 6
        [-3.0, -3.0, 3.0, 3.0],  # centred on the corner: cx = cy = 0
        [0.0, 0.0, 256.0, 171.0],  # the whole image: w = h = 1
        [-20.0, -30.0, -10.0, -4.0],  # left of and above the image: cx, cy < 0
        [-10.0, -10.0, 600.0, 400.0],  # larger than the image: cx, cy, w, h > 1
    ])
    expected = torch.tensor([
        [77 / 256, 86 / 171, 6 / 256, 6 / 171],
        [lo, lo, 6 / 256, 6 / 171],
        [0.5, 0.5, hi, hi],
        [lo, lo, 10 / 256, 26 / 171],
        [hi, hi, hi, hi],
    ], dtype=torch.float64)
    norm = normalize_boxes(boxes, (171, 256))  # img_shape is (h, w)
    assert norm.shape == (5, 4)
    torch.testing.assert_close(norm.double(), expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(boxes_to_unit_cxcywh(boxes, (171, 256))[4].double(),
                               torch.tensor([295 / 256, 195 / 171, 610 / 256, 410 / 171], dtype=torch.float64))
    # mmdet inverse_sigmoid: log(max(x, eps) / max(1 - x, eps)) of x clamped to [0, 1]
    x = torch.tensor([-1.0, 0.0, 0.25, 1.0, 2.0], dtype=torch.float64)
    ref = torch.tensor([math.log(eps), math.log(eps), math.log(1 / 3), math.log(1 / eps), math.log(1 / eps)],
                       dtype=torch.float64)
    torch.testing.assert_close(inverse_sigmoid(x), ref, atol=1e-12, rtol=0)


def test_scaling_to_resized_pixels():
    sf = (0.5, 0.25)
    boxes = scale_boxes([[10, 20, 30, 40]], sf)
    assert boxes.tolist() == [[5.0, 5.0, 15.0, 10.0]]
    pts, bp = prompt_boxes(sf, points_xy=[[10, 20]])
    assert pts.tolist() == [[2.0, 2.0, 8.0, 8.0]] and bp.tolist() == [0]
    empty, bp = prompt_boxes(sf)
    assert empty.shape == (0, 4) and bp.shape == (0,)


def test_validation_raises_prompt_error():
    validate_points([[0, 0], [99.5, 49]], 100, 50)
    validate_boxes([[0, 0, 100, 50]], 100, 50)
    with pytest.raises(PromptError, match="outside the 100x50 frame"):
        validate_points([[100, 10]], 100, 50)
    with pytest.raises(PromptError, match="outside"):
        validate_points([[-1, 10]], 100, 50)
    with pytest.raises(PromptError, match="outside"):
        validate_boxes([[10, 10, 101, 20]], 100, 50)
    with pytest.raises(PromptError, match="empty"):
        validate_boxes([[30, 10, 20, 20]], 100, 50)
    with pytest.raises(PromptError, match="non-finite"):
        validate_boxes([[float("nan"), 0, 1, 1]], 100, 50)
    validate_mask(np.zeros((50, 100), bool), 100, 50)
    with pytest.raises(PromptError, match="the frame is 100x50"):
        validate_mask(np.zeros((100, 50), bool), 100, 50)
