"""Exemplar masks: coarse masks, quality score, refinement."""

import cv2
import numpy as np
import pytest
import torch

from dpsnet.synthesis.coarse import (
    CoarseParams,
    box_extent,
    clean_mask,
    coarse_mask,
    fill_holes,
    mask_quality,
)
from dpsnet.synthesis.refine import (
    MattingParams,
    NetParams,
    matting_snap,
    net_input,
    net_output_to_box,
    net_target,
    predict_refiner,
    train_refiner,
)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def synthetic_exemplar(
    seed: int = 0, size: int = 160, angle: float = 30.0, shape: str = "rect", striped: bool = True
):
    """A product (striped, or plain) on a light, noisy turntable.

    Returns:
        (image (size, size, 3) uint8 BGR, true mask bool, tight bbox [x, y, w, h]).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    bg = 215 + 20 * (xx / size)[..., None] + rng.normal(0, 2, (size, size, 3))
    truth = np.zeros((size, size), np.uint8)
    c = (size // 2 + int(rng.integers(-8, 9)), size // 2 + int(rng.integers(-8, 9)))
    if shape == "rect":
        pts = cv2.boxPoints((c, (0.5 * size, 0.3 * size), angle)).astype(np.int32)
        cv2.fillPoly(truth, [pts], 1)
    else:
        cv2.ellipse(truth, c, (int(0.3 * size), int(0.2 * size)), angle, 0, 360, 1, -1)
    stripes = ((xx + yy) // 6) % 2 if striped else np.zeros_like(xx)
    fg = np.where(stripes[..., None] == 1, (40, 60, 200), (200, 90, 30)).astype(np.float64)
    image = np.where(truth[..., None] == 1, fg, bg)
    image = cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.uint8), (3, 3), 0)
    ys, xs = np.nonzero(truth)
    bbox = [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)]
    return image, truth.astype(bool), bbox


def box_truth(truth: np.ndarray, bbox) -> np.ndarray:
    x0, y0, x1, y1 = box_extent(bbox, *truth.shape)
    return truth[y0:y1, x0:x1]


def test_box_extent_is_integer_cover_clipped_to_image():
    assert box_extent([10.2, 5.0, 20.5, 7.9], 100, 100) == (10, 5, 31, 13)
    assert box_extent([-3, -1, 10, 10], 8, 6) == (0, 0, 6, 8)


def test_fill_holes_and_clean_keep_the_largest_piece():
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5:8, 5:8] = False  # a hole
    m[15:17, 15:17] = True  # a speck
    filled = fill_holes(m)
    assert filled[6, 6] and filled[16, 16]
    cleaned, share = clean_mask(m)
    assert cleaned[6, 6] and not cleaned[16, 16]
    assert share == pytest.approx((100 - 9) / (100 - 9 + 4))


@pytest.mark.parametrize("method,min_iou", [("grabcut", 0.9), ("edges", 0.8)])
@pytest.mark.parametrize("shape", ["rect", "ellipse"])
def test_coarse_mask_finds_the_product(method, min_iou, shape):
    image, truth, bbox = synthetic_exemplar(shape=shape)
    mask, share = coarse_mask(image, bbox, CoarseParams(method=method), seed=0)
    assert mask.shape == box_truth(truth, bbox).shape
    assert share > 0.5
    assert iou(mask, box_truth(truth, bbox)) >= min_iou


def test_grabcut_is_seeded():
    image, _, bbox = synthetic_exemplar(seed=3)
    params = CoarseParams(iterations=2)
    a, _ = coarse_mask(image, bbox, params, seed=7)
    coarse_mask(image, bbox, params, seed=1)  # moves OpenCV's generator
    b, _ = coarse_mask(image, bbox, params, seed=7)
    assert np.array_equal(a, b)


def test_flat_image_gives_an_empty_mask():
    image = np.full((64, 64, 3), 200, np.uint8)
    mask, share = coarse_mask(image, [10, 10, 30, 30], CoarseParams(), seed=0)
    assert mask.shape == (30, 30)
    assert share == 0.0 and not mask.any()
    assert mask_quality(image, [10, 10, 30, 30], mask, share)["quality"] == 0.0


def test_unknown_coarse_method_is_refused():
    image, _, bbox = synthetic_exemplar()
    with pytest.raises(ValueError, match="unknown coarse mask method"):
        coarse_mask(image, bbox, CoarseParams(method="magic"))


def test_quality_prefers_the_true_mask_to_broken_ones():
    image, truth, bbox = synthetic_exemplar(shape="ellipse", striped=False)
    t = box_truth(truth, bbox)
    good = mask_quality(image, bbox, t, 1.0)
    assert good["quality"] > 0.8 and good["tightness"] == 1.0
    half = t.copy()
    half[:, : t.shape[1] // 2] = False  # misses a side of the box
    assert mask_quality(image, bbox, half, 1.0)["quality"] < 0.6
    shrunk = cv2.erode(t.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0  # outline off the edges
    assert mask_quality(image, bbox, shrunk, 1.0)["edge_support"] < 0.5 * good["edge_support"]
    assert mask_quality(image, bbox, t, 0.5)["quality"] == pytest.approx(good["quality"] / 2, 0.01)


def test_matting_snap_moves_a_shifted_outline_back():
    image, truth, bbox = synthetic_exemplar(shape="ellipse", angle=10)
    t = box_truth(truth, bbox)
    k = np.ones((3, 3), np.uint8)
    for wrong in (cv2.erode(t.astype(np.uint8), k) > 0, cv2.dilate(t.astype(np.uint8), k) > 0):
        snapped = matting_snap(image, bbox, wrong, MattingParams(band=1, radius=2.0))
        assert snapped.shape == t.shape
        assert iou(snapped, t) > iou(wrong, t)
    assert not matting_snap(image, bbox, np.zeros_like(t), MattingParams()).any()


def test_refiner_network_trains_and_maps_back_to_the_box():
    params = NetParams(input_size=32, width=4, iterations=12, batch_size=4, seed=0)
    xs, ys, views = [], [], []
    for s in range(4):
        image, truth, bbox = synthetic_exemplar(seed=s, size=96, angle=20 * s)
        x, window = net_input(image, bbox, params)
        extent = box_extent(bbox, *image.shape[:2])
        xs.append(x)
        ys.append(net_target(box_truth(truth, bbox), extent, window, params.input_size))
        views.append((extent, window, box_truth(truth, bbox)))
    assert xs[0].shape == (4, 32, 32) and ys[0].shape == (32, 32)
    assert 0.0 < ys[0].mean() < 1.0
    net = train_refiner(np.stack(xs), np.stack(ys), params)
    again = train_refiner(np.stack(xs), np.stack(ys), params)
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)  # seeded
    prob = predict_refiner(net, np.stack(xs), batch_size=3)
    assert prob.shape == (4, 32, 32) and np.isfinite(prob).all()
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    extent, window, t = views[0]
    assert net_output_to_box(prob[0], extent, window).shape == t.shape
    with pytest.raises(ValueError, match="no clean coarse masks"):
        train_refiner(np.zeros((0, 4, 32, 32), np.float32), np.zeros((0, 32, 32)), params)
