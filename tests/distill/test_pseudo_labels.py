"""Selection rules of distillation on hand-made teacher outputs."""

import numpy as np
import pytest

from dpsnet.distill.pseudo_labels import (
    IMAGE_LEVEL,
    INSTANCE_LEVEL,
    REJECTED,
    CountLayout,
    counts_agree,
    detection_count_vector,
    paint_regions,
    select_image,
    threshold_for_round,
)

# Four categories in two supercategories: {0, 1} -> 0, {2, 3} -> 1.
SUPER = np.array([0, 0, 1, 1])
TOTAL = CountLayout(("total",), num_classes=4)
ALL = CountLayout(("total", "supercategory", "category"), num_classes=4, class_to_super=SUPER)


def _select(scores, classes, counts, layout=TOTAL, threshold=0.8):
    return select_image(
        np.array(scores),
        np.array(classes),
        np.array(counts),
        layout,
        threshold=threshold,
        instance_threshold=0.95,
        uncertain_threshold=0.3,
    )


def test_count_vector_layout():
    v = detection_count_vector(np.array([0, 1, 3, 3]), ALL)
    assert ALL.num_channels == 1 + 2 + 4
    assert v.tolist() == [4, 2, 2, 1, 1, 0, 2]
    assert detection_count_vector(np.array([], dtype=int), ALL).tolist() == [0] * 7


def test_counts_agree_rounds_half_up_and_clips_negatives():
    assert counts_agree(np.array([0, 2]), np.array([2.49]), TOTAL)
    assert not counts_agree(np.array([0, 2]), np.array([2.5]), TOTAL)
    assert counts_agree(np.array([0, 2]), np.array([1.5]), TOTAL)
    assert counts_agree(np.array([], dtype=int), np.array([-0.7]), TOTAL)
    with pytest.raises(ValueError, match="channels"):
        counts_agree(np.array([0]), np.array([1.0, 0.0]), TOTAL)


def test_image_level_when_total_count_agrees():
    # Three detections >= 0.8, density says 3.1: the whole image is taken.
    sel = _select([0.99, 0.85, 0.81, 0.5, 0.1], [0, 1, 2, 2, 3], [3.1])
    assert sel.kind == IMAGE_LEVEL
    assert sel.keep.tolist() == [0, 1, 2]
    assert sel.ignore.size == 0  # the counts say nothing else is there: nothing painted


def test_per_category_disagreement_blocks_image_level():
    # Total agrees (3) but the category channels say two of class 3, not classes 1 and 2.
    counts = [3, 1, 2, 1, 0, 0, 2]
    sel = _select([0.99, 0.97, 0.9, 0.5], [0, 1, 2, 3], counts, layout=ALL)
    assert sel.kind == INSTANCE_LEVEL
    assert sel.keep.tolist() == [0, 1]  # >= 0.95
    assert sel.ignore.tolist() == [2, 3]  # uncertain, in [0.3, 0.95)
    good = [3, 2, 1, 1, 1, 1, 0]
    assert _select([0.99, 0.97, 0.9, 0.5], [0, 1, 2, 3], good, layout=ALL).kind == IMAGE_LEVEL


def test_instance_level_and_rejection():
    # Count says 4, only 2 confident detections: instance level keeps the one >= 0.95.
    sel = _select([0.96, 0.9, 0.2], [0, 1, 1], [4.0])
    assert sel.kind == INSTANCE_LEVEL
    assert sel.keep.tolist() == [0] and sel.ignore.tolist() == [1]
    # Nothing reaches 0.95 and counts disagree: rejected.
    assert _select([0.9, 0.85], [0, 1], [3.0]).kind == REJECTED
    # No detections at all: an empty tray is never taken whole, even when the count says 0.
    assert _select([], [], [0.0]).kind == REJECTED


def test_threshold_rising_with_rounds_changes_the_decision():
    scores, classes, counts = [0.99, 0.82], [0, 1], [2.0]
    assert _select(scores, classes, counts, threshold=0.80).kind == IMAGE_LEVEL
    assert _select(scores, classes, counts, threshold=0.85).kind == INSTANCE_LEVEL


def test_threshold_schedule():
    schedule = [0.80, 0.85, 0.90, 0.95]
    assert [threshold_for_round(schedule, r) for r in range(1, 7)] == [
        0.80,
        0.85,
        0.90,
        0.95,
        0.95,
        0.95,
    ]
    with pytest.raises(ValueError):
        threshold_for_round(schedule, 0)
    with pytest.raises(ValueError, match="decrease"):
        threshold_for_round([0.9, 0.8], 1)
    with pytest.raises(ValueError):
        threshold_for_round([], 1)


def test_layout_validation():
    with pytest.raises(ValueError):
        CountLayout(("bogus",), num_classes=2)
    with pytest.raises(ValueError, match="class_to_super"):
        CountLayout(("supercategory",), num_classes=4)


def test_paint_regions_spares_kept_boxes():
    image = np.full((20, 30, 3), 200, np.uint8)
    painted, n = paint_regions(
        image, np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([[5.0, 5.0, 15.0, 15.0]]), [1, 2, 3]
    )
    assert image[0, 0].tolist() == [200, 200, 200]  # input untouched
    assert painted[0, 0].tolist() == [1, 2, 3]
    assert painted[7, 7].tolist() == [200, 200, 200]  # inside the kept box
    assert painted[12, 20].tolist() == [200, 200, 200]  # outside every box
    assert n == 100 - 25


def test_class_ambiguous_finds_kept_boxes_another_product_claims():
    from dpsnet.distill.pseudo_labels import class_ambiguous

    boxes = np.array(
        [
            [0.0, 0.0, 10.0, 10.0],  # 0: kept, class 0
            [0.5, 0.0, 10.5, 10.0],  # 1: class 1 on the same object (IoU 0.9), score 0.3
            [20.0, 20.0, 30.0, 30.0],  # 2: kept, class 0
            [20.5, 20.0, 30.5, 30.0],  # 3: class 0 on object 2: same product, not a rival
            [40.0, 40.0, 50.0, 50.0],  # 4: kept, class 1
            [45.0, 40.0, 55.0, 50.0],  # 5: class 0 overlapping object 4 at IoU 0.33 only
        ]
    )
    scores = np.array([0.9, 0.3, 0.95, 0.4, 0.8, 0.5])
    classes = np.array([0, 1, 0, 0, 1, 0])
    keep = np.array([0, 2, 4])
    assert class_ambiguous(boxes, scores, classes, keep, min_score=0.2).tolist() == [0]
    # The rival must score at least min_score; 0 switches the rule off.
    assert class_ambiguous(boxes, scores, classes, keep, min_score=0.35).tolist() == []
    assert class_ambiguous(boxes, scores, classes, keep, min_score=0.0).tolist() == []
    assert class_ambiguous(boxes, scores, classes, keep[:0], min_score=0.2).tolist() == []
