"""Pose pruning: area ratios, decisions, the per-product report, precision/recall of drops."""

import cv2
import numpy as np
import pytest

from dpsnet.synthesis.pose import area_ratios, drop_scores, pose_report, prune_poses


def ellipse_mask(size: int, axes: tuple) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    cv2.ellipse(m, (size // 2, size // 2), axes, 0, 0, 360, 1, -1)
    return m.astype(bool)


def record(image_id: int, cat: int, mask: np.ndarray, drop: str = "") -> dict:
    return {"image_id": image_id, "category_id": cat, "area": int(mask.sum()), "drop_reason": drop}


@pytest.fixture
def items():
    """Product 1: a full top view, a slightly tilted one, a thin side view; product 2: two views
    and a huge leaked mask that failed the quality check."""
    top = ellipse_mask(100, (40, 25))
    return [
        record(1, 1, top),
        record(2, 1, ellipse_mask(100, (40, 20))),  # 80 % of the top view
        record(3, 1, ellipse_mask(100, (40, 5))),  # thin side view, ~20 %
        record(4, 2, ellipse_mask(60, (20, 20))),
        record(5, 2, ellipse_mask(60, (20, 8))),  # 40 %: dropped
        record(6, 2, np.ones((100, 100), bool), drop="quality"),
    ]


def test_ratios_against_the_largest_usable_mask_of_the_product(items):
    prune_poses(items, 0.45)
    by_id = {it["image_id"]: it for it in items}
    assert by_id[1]["area_ratio"] == 1.0
    assert by_id[2]["area_ratio"] == pytest.approx(items[1]["area"] / items[0]["area"], abs=1e-4)
    assert by_id[3]["area_ratio"] < 0.3
    # The leaked mask (quality drop) does not set product 2's reference.
    assert by_id[4]["area_ratio"] == 1.0
    assert by_id[6]["area_ratio"] > 1.0


def test_pruning_decisions(items):
    prune_poses(items, 0.45)
    decided = {it["image_id"]: (it["kept"], it["drop_reason"]) for it in items}
    assert decided == {
        1: (True, ""),
        2: (True, ""),
        3: (False, "pose"),
        4: (True, ""),
        5: (False, "pose"),
        6: (False, "quality"),  # an earlier reason is kept
    }


def test_threshold_is_strict_and_from_the_caller():
    items = [record(1, 7, np.ones((10, 10), bool)), record(2, 7, np.ones((5, 9), bool))]
    prune_poses(items, 0.45)  # ratio exactly 0.45: not above the threshold
    assert [it["kept"] for it in items] == [True, False]
    relaxed = prune_poses([dict(it, drop_reason="") for it in items], 0.3)
    assert [it["kept"] for it in relaxed] == [True, True]
    off = prune_poses([dict(it, drop_reason="") for it in items], 0.45, enabled=False)
    assert [it["kept"] for it in off] == [True, True]


def test_area_ratios_edge_cases():
    r = area_ratios([10, 0, 5], [1, 1, 2], [False, True, False])
    assert r.tolist() == [0.0, 0.0, 0.0]  # no usable mask of positive area in either product
    assert area_ratios([], [], []).shape == (0,)
    assert prune_poses([], 0.45) == []


def test_report_per_product(items):
    prune_poses(items, 0.45)
    for it in items:
        it["file_name"] = f"/x/{it['image_id']}.jpg"
    cats = [{"id": 1, "name": "naru"}, {"id": 2, "name": "tezo"}, {"id": 3, "name": "unused"}]
    rep = pose_report(items, cats, 0.45)
    assert rep["min_area_ratio"] == 0.45
    assert rep["total"] == {"exemplars": 6, "kept": 3, "dropped_pose": 2, "dropped_quality": 1}
    p1, p2, p3 = rep["products"]
    assert (p1["name"], p1["exemplars"], p1["kept"], p1["dropped"]) == ("naru", 3, 2, {"pose": 1})
    assert p1["max_area"] == items[0]["area"]
    assert [d["image_id"] for d in p1["dropped_items"]] == [3]
    assert p1["dropped_items"][0]["file_name"] == "/x/3.jpg"
    assert p2["dropped"] == {"pose": 1, "quality": 1} and p2["max_area"] == items[3]["area"]
    assert p3["exemplars"] == 0 and p3["kept"] == 0


def test_drop_scores(items):
    prune_poses(items, 0.45)
    # Planted: 3 (dropped), 4 (kept: missed); 99 is not in the index and is ignored.
    s = drop_scores(items, [3, 4, 99])
    assert (s["dropped"], s["bad"], s["true_positives"]) == (2, 2, 1)
    assert s["precision"] == 0.5 and s["recall"] == 0.5
    assert s["false_drops"] == [5] and s["missed"] == [4]
    every = drop_scores(items, [3, 6], reasons=("pose", "quality"))
    assert every["precision"] == pytest.approx(2 / 3, abs=1e-4) and every["recall"] == 1.0
    none = drop_scores(items, [])
    assert none["recall"] is None and none["precision"] == 0.0
    assert drop_scores([dict(it, drop_reason="") for it in items], [3])["precision"] is None
