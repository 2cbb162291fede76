"""Set-valued pseudo-labels (DISTILL.CLASS_SET_RATIO): from the teacher's probabilities to the
student's loss."""

import json

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.events import EventStorage

from dpsnet.data.datasets.checkout import load_checkout_json
from dpsnet.distill.audit import audit_pseudo_labels
from dpsnet.distill.class_sets import (
    add_class_sets,
    attach_class_probabilities,
    class_set,
    confusable_pairs,
    confusion_counts,
    enable_class_sets,
    set_valued_cross_entropy,
)
from dpsnet.distill.labeller import pseudo_label_json, summarize
from dpsnet.utils.io import BadInputError


def test_class_set_is_relative_to_the_chosen_class():
    probs = np.array([0.80, 0.10, 0.03, 0.0])
    assert class_set(probs, 0, 0.05).tolist() == [0, 1]  # 0.10 >= 0.04; 0.03 is not
    assert class_set(probs, 0, 0.03).tolist() == [0, 1, 2]
    assert class_set(probs, 0, 0.0).tolist() == [0]  # off: the hard label
    assert class_set(probs, 1, 0.5).tolist() == [0, 1]  # the chosen class is always in


def test_set_valued_cross_entropy():
    torch.manual_seed(0)
    scores = torch.randn(6, 4, requires_grad=True)
    gt = torch.tensor([0, 1, 2, 3, 3, 1])
    one = torch.nn.functional.one_hot(gt, 4).bool()
    ce = torch.nn.functional.cross_entropy(scores, gt)
    assert set_valued_cross_entropy(scores, one).item() == pytest.approx(ce.item(), rel=1e-5)
    two = one.clone()
    two[0, 1] = True  # row 0 may be class 0 or 1
    p = torch.softmax(scores, 1)
    manual = -torch.log(p[0, 0] + p[0, 1]) - torch.log(p[torch.arange(1, 6), gt[1:]]).sum()
    assert set_valued_cross_entropy(scores, two).item() == pytest.approx(manual.item() / 6, 1e-5)
    assert set_valued_cross_entropy(scores, two) < set_valued_cross_entropy(scores, one)
    set_valued_cross_entropy(scores, two).backward()
    assert torch.isfinite(scores.grad).all()
    assert set_valued_cross_entropy(scores[:0], one[:0]).item() == 0.0


def _predictor(num_classes=3):
    torch.manual_seed(0)
    return FastRCNNOutputLayers(
        ShapeSpec(channels=8),
        box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
        num_classes=num_classes,
        test_score_thresh=0.0,
    )


class _Holder(torch.nn.Module):
    def __init__(self, predictor):
        super().__init__()
        self.roi_heads = torch.nn.Module()
        self.roi_heads.box_predictor = predictor


def _proposals(gt_classes, sets=None):
    n = len(gt_classes)
    p = Instances((100, 100))
    p.proposal_boxes = Boxes(torch.tensor([[10.0 * i, 0, 10.0 * i + 20, 20] for i in range(n)]))
    p.gt_boxes = Boxes(p.proposal_boxes.tensor + 1.0)
    p.gt_classes = torch.tensor(gt_classes)
    if sets is not None:
        p.gt_class_sets = sets
    return p


def test_loss_honours_class_sets_of_foreground_proposals_only():
    with EventStorage():  # detectron2's losses log classification statistics
        _check_loss()


def _check_loss():
    predictor = _predictor()
    model = enable_class_sets(_Holder(predictor))
    feats = torch.randn(4, 8)
    predictions = predictor(feats)
    scores = predictions[0]
    hard = _proposals([0, 1, 3, 3])
    plain = FastRCNNOutputLayers.losses(predictor, predictions, [hard])
    assert model.roi_heads.box_predictor.losses(predictions, [hard])["loss_cls"].item() == (
        pytest.approx(plain["loss_cls"].item(), rel=1e-5)
    )
    # Proposal 0 (foreground) may be class 0 or 2; proposal 2 is background: its set is ignored.
    sets = torch.tensor(
        [[True, False, True], [False, True, False], [True, True, True], [False, False, False]]
    )
    out = model.roi_heads.box_predictor.losses(predictions, [_proposals([0, 1, 3, 3], sets)])
    p = torch.softmax(scores, 1)
    manual = -(
        torch.log(p[0, 0] + p[0, 2]) + torch.log(p[1, 1]) + torch.log(p[2, 3]) + torch.log(p[3, 3])
    )
    assert out["loss_cls"].item() == pytest.approx(manual.item() / 4, rel=1e-5)
    assert out["loss_box_reg"].item() == pytest.approx(plain["loss_box_reg"].item(), rel=1e-5)
    # A batch mixing an image with sets and one without.
    mixed = model.roi_heads.box_predictor.losses(
        predictor(torch.randn(6, 8)), [_proposals([0, 3], sets[:2]), _proposals([1, 2, 3, 0])]
    )
    assert torch.isfinite(mixed["loss_cls"])


def test_teacher_detections_carry_their_class_probabilities():
    predictor = _predictor()
    attach_class_probabilities(_Holder(predictor))
    proposals = _proposals([0, 1, 2, 3])
    predictions = predictor(torch.randn(4, 8))
    results, kept = predictor.inference(predictions, [proposals])
    res = results[0]
    assert res.pred_probs.shape == (len(res), 3)
    chosen = res.pred_probs[torch.arange(len(res)), res.pred_classes]
    assert torch.allclose(chosen, res.scores)
    assert torch.allclose(
        res.pred_probs, predictor.predict_probs(predictions, [proposals])[0][kept[0], :-1]
    )


class _Mapper:
    """Stands for detectron2's mapper: non-crowd annotations become instances."""

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        annos = [a for a in dataset_dict.pop("annotations") if not a.get("iscrowd", 0)]
        inst = Instances(image_shape)
        inst.gt_classes = torch.tensor([a["category_id"] for a in annos], dtype=torch.int64)
        dataset_dict["instances"] = inst


def test_mapper_attaches_class_sets():
    mapper = add_class_sets(_Mapper())
    box = {"bbox": [0, 0, 5, 5], "bbox_mode": BoxMode.XYWH_ABS}
    record = {
        "annotations": [
            {**box, "category_id": 1, "iscrowd": 0, "category_set": [1, 4]},
            {**box, "category_id": 3, "iscrowd": 1},  # an ignore region: no instance
            {**box, "category_id": 2, "iscrowd": 0},
        ]
    }
    mapper._transform_annotations(record, T.HFlipTransform(100), (50, 100))
    sets = record["instances"].gt_class_sets
    assert sets.shape == (2, 5)
    assert sets[0].nonzero().flatten().tolist() == [1, 4]
    assert sets[1].nonzero().flatten().tolist() == [2]  # no set: its own class
    plain = {"annotations": [{**box, "category_id": 2, "iscrowd": 0}]}
    mapper._transform_annotations(plain, T.HFlipTransform(100), (50, 100))
    assert not plain["instances"].has("gt_class_sets")


def test_labeller_writes_sets_and_loader_maps_them(tmp_path, one_image_labelling):
    output, label = one_image_labelling.output, one_image_labelling.label
    # Box A: product 0 at 0.85 with product 1 at 0.12 (a twin); box B: product 2, sure.
    out = output(
        [[0.0, 0.0, 20.0, 20.0], [50.0, 50.0, 70.0, 70.0]],
        [0.85, 0.7],
        [0, 2],
        3.0,  # the counting view disagrees: instance level
        probs=[[0.85, 0.12, 0.01], [0.01, 0.02, 0.7]],
    )
    r = label(out, class_set_ratio=0.1)
    assert [a.get("category_set") for a in r["annotations"]] == [[10, 11], None]
    assert r["class_set_boxes"] == 1 and summarize([r])["class_set_boxes"] == 1
    off = label(out, class_set_ratio=0.0)
    assert not any("category_set" in a for a in off["annotations"])

    r["file_name"] = str(tmp_path / "tray.jpg")
    cats = [{"id": i, "name": f"p{i}", "supercategory": "p"} for i in (10, 11, 12)]
    data = pseudo_label_json([r], cats, {})
    assert data["annotations"][0]["category_set"] == [10, 11]
    assert "category_set" not in data["annotations"][1]
    path = tmp_path / "pseudo.json"
    path.write_text(json.dumps(data))
    objs = load_checkout_json(path, "")[0]["annotations"]
    assert objs[0]["category_set"] == [0, 1] and "category_set" not in objs[1]

    data["annotations"][0]["category_set"] = [10, 99]
    path.write_text(json.dumps(data))
    with pytest.raises(BadInputError, match="pseudo.json.*category_set.*99"):
        load_checkout_json(path, "")

    # The audit: the set holds the truth (product 11) although the named product (10) is wrong.
    data["annotations"][0]["category_set"] = [10, 11]
    gt = {
        "images": [{"id": 7, "width": 100, "height": 100}],
        "annotations": [
            {"image_id": 7, "category_id": 11, "bbox": [0, 0, 20, 20]},
            {"image_id": 7, "category_id": 12, "bbox": [50, 50, 20, 20]},
        ],
    }
    audit = audit_pseudo_labels(data, gt)
    assert audit["all"]["precision"] == 0.5
    assert audit["class_set_boxes"] == 1 and audit["class_set_precision"] == 1.0


def test_confusable_pairs_from_the_pools_hesitations():
    # Boxes named 0 leave product 1 within the ratio in 2 of 4 cases; product 2 never hesitates.
    probs = np.array(
        [[0.9, 0.09, 0.0], [0.9, 0.01, 0.0], [0.8, 0.1, 0.0], [0.9, 0.0, 0.0], [0.0, 0.0, 0.9]]
    )
    classes = np.array([0, 0, 0, 0, 2])
    scores = np.array([0.9, 0.9, 0.8, 0.9, 0.9])
    counts, totals = confusion_counts([(probs, classes, scores)], 3, 0.1, 0.6)
    assert totals.tolist() == [4, 0, 1]
    assert counts[0].tolist() == [4, 1, 0]  # 0.09 < 0.1 * 0.9; 0.1 >= 0.1 * 0.8
    low = confusion_counts([(probs, classes, np.full(5, 0.5))], 3, 0.1, 0.6)[1]
    assert low.sum() == 0  # boxes under min_score are not counted
    pairs = confusable_pairs(counts, totals, 0.25)
    assert pairs[0, 1] and pairs[1, 0] and pairs.sum() == 2  # symmetric, diagonal off
    assert not confusable_pairs(counts, totals, 0.5).any()
    assert not confusable_pairs(counts, totals, 0.0).any()
    # A box named 1 with no hesitation of its own still carries its twin.
    assert class_set(np.array([0.0, 0.95, 0.0]), 1, 0.1, pairs).tolist() == [0, 1]
    assert class_set(np.array([0.0, 0.95, 0.0]), 1, 0.1).tolist() == [1]
