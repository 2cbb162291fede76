"""Placement and per-level sampling: pure functions of the composer (dpsnet.synthesis.placement)."""

from collections import Counter

import numpy as np
import pytest

from dpsnet.synthesis.placement import (
    find_position,
    iou_limits,
    level_of_index,
    max_iou,
    sample_instances,
)


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_max_iou_matches_pairwise():
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 50, size=(20, 2))
    wh = rng.integers(1, 30, size=(20, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    got = max_iou(boxes[:7], boxes[7:])
    want = [max(_iou(a, b) for b in boxes[7:]) for a in boxes[:7]]
    np.testing.assert_allclose(got, want)
    assert (max_iou(boxes[:3], np.zeros((0, 4))) == 0).all()


def test_iou_limits_relax_to_one():
    assert iou_limits(0.5, 0.1) == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert iou_limits(1.0, 0.3) == [1.0]
    with pytest.raises(ValueError):
        iou_limits(0.5, 0.0)


@pytest.mark.parametrize("limit", [0.0, 0.2, 0.5])
def test_placement_respects_the_iou_limit(limit):
    """While there is room, every placed box meets the starting limit against all earlier ones."""
    rng = np.random.default_rng(1)
    boxes = np.zeros((0, 4), np.int64)
    for _ in range(12):
        w, h = (int(v) for v in rng.integers(20, 60, size=2))
        p = find_position(w, h, (0, 0, 400, 400), boxes, rng, max_iou_limit=limit, attempts=200)
        box = np.array([[p.x, p.y, p.x + w, p.y + h]])
        assert 0 <= p.x and p.x + w <= 400 and 0 <= p.y and p.y + h <= 400
        assert p.iou_limit == limit
        assert p.iou <= limit + 1e-9
        if len(boxes):
            assert max(_iou(box[0], b) for b in boxes) <= limit + 1e-9
        boxes = np.concatenate([boxes, box])


def test_placement_relaxes_and_always_ends():
    """A crowded tray: the limit grows step by step, the box still fits, and every placement
    reports the limit it met (the smallest that its IoU passes)."""
    rng = np.random.default_rng(2)
    boxes = np.zeros((0, 4), np.int64)
    limits = []
    for _ in range(40):
        p = find_position(
            50, 50, (0, 0, 100, 100), boxes, rng, max_iou_limit=0.0, relax_step=0.25, attempts=5
        )
        assert p.iou <= p.iou_limit + 1e-9
        limits.append(p.iou_limit)
        boxes = np.concatenate([boxes, [[p.x, p.y, p.x + 50, p.y + 50]]])
    assert limits[0] == 0.0 and max(limits) > 0.0  # a 100 px tray holds few 50 px boxes
    assert set(limits) <= {0.0, 0.25, 0.5, 0.75, 1.0}


def test_accept_is_asked_below_the_last_limit_only():
    rng = np.random.default_rng(3)
    asked = []

    def never(x, y):
        asked.append((x, y))
        return False

    p = find_position(10, 10, (0, 0, 50, 50), np.zeros((0, 4)), rng, attempts=4, accept=never)
    assert p.iou_limit == 1.0
    assert len(asked) == 4 * (len(iou_limits(0.5, 0.1)) - 1)


def test_box_larger_than_bounds_is_an_error():
    with pytest.raises(ValueError, match="does not fit"):
        find_position(60, 10, (0, 0, 50, 50), np.zeros((0, 4)), np.random.default_rng(0))


@pytest.mark.parametrize(
    "categories,instances",
    [((3, 4), (3, 10)), ((5, 7), (10, 15)), ((8, 10), (15, 20)), ((2, 2), (2, 2))],
)
def test_counts_per_level_in_their_ranges(categories, instances):
    rng = np.random.default_rng(4)
    cat_ids = list(range(1, 13))
    seen_cats, seen_inst = set(), set()
    for _ in range(300):
        items = sample_instances(rng, cat_ids, categories, instances)
        n_cat = len(set(items))
        assert categories[0] <= n_cat <= categories[1]
        assert instances[0] <= len(items) <= instances[1]
        assert set(items) <= set(cat_ids)
        seen_cats.add(n_cat)
        seen_inst.add(len(items))
    # the whole ranges are used, not just one corner of them
    assert seen_cats == set(range(categories[0], categories[1] + 1))
    assert min(seen_inst) <= instances[0] + 1 and max(seen_inst) >= instances[1] - 1


def test_counts_clip_to_the_categories_that_exist():
    rng = np.random.default_rng(5)
    items = sample_instances(rng, [7, 9], (3, 4), (3, 5))
    assert set(items) == {7, 9} and 3 <= len(items) <= 5
    with pytest.raises(ValueError):
        sample_instances(rng, [], (1, 1), (1, 1))


def test_levels_follow_the_mix_and_depend_on_the_index_only():
    levels = [level_of_index(i, [1, 1, 2]) for i in range(4000)]
    share = Counter(levels)
    assert abs(share[0] / 4000 - 0.25) < 0.01 and abs(share[2] / 4000 - 0.5) < 0.01
    # any shard (every 4th index) still gets its share
    shard = Counter(levels[1::4])
    assert abs(shard[2] / 1000 - 0.5) < 0.03
    assert {level_of_index(i, [0, 0, 1]) for i in range(500)} == {2}
    assert {level_of_index(i, [1, 0, 0]) for i in range(500)} == {0}
    with pytest.raises(ValueError):
        level_of_index(0, [0, 0, 0])
