"""Count-guided inference: keep the top-N detections per group, within the score bounds."""

import pytest
import torch
from detectron2.structures import Boxes, Instances

from dpsnet.modeling.postprocess import count_guided_keep, select_by_count


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
