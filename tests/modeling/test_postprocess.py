"""Count-guided inference: keep the top-N detections per group, within the score bounds; and
cross-class merging: one detection per object, scored by the sum of its detections' scores."""

import pytest
import torch
from detectron2.structures import Boxes, Instances

from dpsnet.modeling.postprocess import count_guided_keep, merge_across_classes, select_by_count


def keep(scores, groups, counts, min_score=0.2, keep_score=0.9):
    return count_guided_keep(
        torch.tensor(scores),
        torch.tensor(groups),
        torch.tensor(counts, dtype=torch.float32),
        min_score=min_score,
        keep_score=keep_score,
    ).tolist()


def test_top_n_by_score():
    # count 2.4 -> 2: the two best of the uncertain detections
    assert keep([0.5, 0.8, 0.3, 0.6], [0, 0, 0, 0], [2.4]) == [False, True, False, True]


def test_score_bounds_win_over_the_count():
    # confident detections stay even when the count says fewer
    assert keep([0.95, 0.92, 0.5], [0, 0, 0], [1.0]) == [True, True, False]
    # detections below min_score go even when the count says more
    assert keep([0.5, 0.1, 0.05], [0, 0, 0], [3.0]) == [True, False, False]
    # a negative or zero count keeps only the confident ones
    assert keep([0.95, 0.5], [0, 0], [-0.7]) == [True, False]


def test_counts_per_group():
    scores = [0.5, 0.6, 0.7, 0.4, 0.3]
    groups = [0, 1, 1, 0, 1]
    assert keep(scores, groups, [1.0, 2.0]) == [True, True, True, False, False]
    assert keep(scores, groups, [0.49, 3.0]) == [False, True, True, False, True]


def test_empty_and_bad_bounds():
    assert keep([], [], [3.0]) == []
    with pytest.raises(ValueError, match="above"):
        keep([0.5], [0], [1.0], min_score=0.9, keep_score=0.5)


def test_select_by_count_keeps_order_and_fields():
    inst = Instances((10, 10))
    inst.pred_boxes = Boxes(torch.arange(16, dtype=torch.float32).reshape(4, 4))
    inst.scores = torch.tensor([0.9, 0.3, 0.5, 0.4])
    inst.pred_classes = torch.tensor([2, 0, 1, 2])
    # level "supercategory": classes 0, 1 -> group 0; class 2 -> group 1
    out = select_by_count(
        inst, torch.tensor([1.0, 1.0]), torch.tensor([0, 0, 1]), min_score=0.0, keep_score=1.0
    )
    assert out.scores.tolist() == pytest.approx([0.9, 0.5])
    assert out.pred_boxes.tensor[:, 0].tolist() == [0.0, 8.0]


def detections(boxes, scores, classes):
    inst = Instances((100, 100))
    inst.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes)
    inst.pred_probs = torch.arange(len(scores), dtype=torch.float32)[:, None]  # a tag per row
    return inst


def test_look_alike_boxes_on_one_object_become_one_detection():
    # one object seen as product 3 (0.45) and as its look-alike 5 (0.35); a second object apart
    inst = detections(
        [[10, 10, 40, 40], [11, 10, 40, 41], [60, 60, 90, 90]], [0.35, 0.45, 0.3], [5, 3, 1]
    )
    out = merge_across_classes(inst, 0.5)
    assert out.pred_classes.tolist() == [3, 1]  # named by the best, by decreasing score
    assert out.scores.tolist() == pytest.approx([0.8, 0.3])
    assert out.pred_boxes.tensor[0].tolist() == [11, 10, 40, 41]  # the best one's box
    assert out.pred_probs[:, 0].tolist() == [1.0, 2.0]  # and its other fields
    # at a threshold of 0.5 the object counts once as product 3; before, not at all
    assert (out.scores >= 0.5).sum() == 1 and (inst.scores >= 0.5).sum() == 0


def test_merged_score_caps_at_one_and_overlap_below_iou_stays_apart():
    inst = detections([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.6], [0, 1])
    assert merge_across_classes(inst, 0.5).scores.tolist() == [1.0]
    # IoU 1/3: two objects side by side, both kept with their own scores
    apart = detections([[0, 0, 20, 10], [10, 0, 30, 10]], [0.9, 0.6], [0, 1])
    assert merge_across_classes(apart, 0.5).scores.tolist() == pytest.approx([0.9, 0.6])


def test_a_suppressed_detection_adds_to_the_one_that_suppressed_it_only():
    # a (0.6) overlaps b (0.3), b overlaps c (0.2), a does not overlap c: greedy NMS keeps a and
    # c; b's score goes to a
    inst = detections([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]], [0.6, 0.3, 0.2], [0, 1, 2])
    out = merge_across_classes(inst, 0.4)
    assert out.pred_classes.tolist() == [0, 2]
    assert out.scores.tolist() == pytest.approx([0.9, 0.2])


def test_merge_of_nothing_or_one_detection_is_the_identity():
    assert len(merge_across_classes(detections(torch.zeros((0, 4)), [], []), 0.5)) == 0
    one = detections([[0, 0, 10, 10]], [0.4], [2])
    assert merge_across_classes(one, 0.5).scores.tolist() == pytest.approx([0.4])
