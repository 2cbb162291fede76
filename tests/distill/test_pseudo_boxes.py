"""DISTILL.PSEUDO_BOX_REGRESSION False: pseudo boxes train the classifier, not the regression."""

import pytest
import torch
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage
from test_class_sets import _Holder, _predictor, _proposals

from dpsnet.distill.class_sets import enable_class_sets
from dpsnet.distill.pseudo_boxes import (
    PSEUDO_KEY,
    disable_pseudo_box_regression,
    mark_pseudo_instances,
)


def _pseudo(gt_classes, sets=None):
    p = _proposals(gt_classes, sets)
    p.gt_pseudo = torch.ones(len(p), dtype=torch.bool)
    return p


def test_regression_loss_leaves_out_pseudo_boxes_only():
    with EventStorage():
        predictor = _predictor()
        model = disable_pseudo_box_regression(_Holder(predictor))
        losses = model.roi_heads.box_predictor.losses
        feats = torch.randn(7, 8)
        preds = predictor(feats)
        synth = [0, 1, 3, 2]  # class 3 is background (3 classes)
        plain = FastRCNNOutputLayers.losses(
            predictor, preds, [_proposals(synth), _proposals([2, 0, 3])]
        )
        # No marked image: detectron2's losses exactly.
        same = losses(preds, [_proposals(synth), _proposals([2, 0, 3])])
        for k in plain:
            assert same[k].item() == pytest.approx(plain[k].item(), rel=1e-6)
        out = losses(preds, [_proposals(synth), _pseudo([2, 0, 3])])
        assert out["loss_cls"].item() == pytest.approx(plain["loss_cls"].item(), rel=1e-6)
        # The synthesized image's foreground alone, over all 7 sampled proposals.
        first = predictor(feats[:4])
        alone = FastRCNNOutputLayers.losses(predictor, first, [_proposals(synth)])["loss_box_reg"]
        assert out["loss_box_reg"].item() == pytest.approx(alone.item() * 4 / 7, rel=1e-5)
        assert out["loss_box_reg"].item() < plain["loss_box_reg"].item()
        # No gradient reaches the pseudo image's box deltas.
        deltas = preds[1].detach().requires_grad_(True)
        losses((preds[0], deltas), [_proposals(synth), _pseudo([2, 0, 3])])[
            "loss_box_reg"
        ].backward()
        assert deltas.grad[4:].abs().sum() == 0 and deltas.grad[:3].abs().sum() > 0
        # A batch of pseudo images only: no regression loss, still a tensor.
        only = losses(predictor(feats[:3]), [_pseudo([2, 0, 3])])
        assert only["loss_box_reg"].item() == 0.0


def test_composes_with_class_sets():
    with EventStorage():
        predictor = _predictor()
        model = enable_class_sets(disable_pseudo_box_regression(_Holder(predictor)))
        preds = predictor(torch.randn(2, 8))
        sets = torch.tensor([[True, False, True], [False, True, False]])
        out = model.roi_heads.box_predictor.losses(preds, [_pseudo([0, 1], sets)])
        p = torch.softmax(preds[0], 1)
        manual = -(torch.log(p[0, 0] + p[0, 2]) + torch.log(p[1, 1])) / 2
        assert out["loss_cls"].item() == pytest.approx(manual.item(), rel=1e-5)
        assert out["loss_box_reg"].item() == 0.0


def test_mark_pseudo_instances():
    def mapper(d):
        inst = Instances((10, 10))
        inst.gt_classes = torch.tensor([0, 1])
        return {"instances": inst, "file_name": d["file_name"]}

    mark = mark_pseudo_instances(mapper)
    assert mark({"file_name": "a", PSEUDO_KEY: True})["instances"].gt_pseudo.tolist() == [1, 1]
    assert not mark({"file_name": "b"})["instances"].has("gt_pseudo")
    assert mark_pseudo_instances(lambda d: None)({PSEUDO_KEY: True}) is None
