"""DPSNet end to end on tiny random inputs: training step, pinned losses, inference outputs,
count-guided inference and loading a detectron2 detector's checkpoint."""

import logging
import pickle

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from dpsnet.modeling import DPSNet
from dpsnet.utils.weights import WeightsError
from dpsnet.utils.weights import configure as configure_weights

# Odd sizes; one image with two objects, one with none (half-empty batch).
BOXES = [[5.0, 6.0, 40.0, 31.0], [50.0, 20.0, 90.0, 71.0]]


def batch(make_input):
    return [make_input(97, 123, BOXES, [0, 2]), make_input(61, 77, [], [])]


def train_step(model, inputs):
    model.train()
    with EventStorage():
        losses = model(inputs)
        sum(losses.values()).backward()
    return {k: v.item() for k, v in losses.items()}


def test_training_step_with_empty_and_half_empty_ground_truth(cfg, make_input):
    model = build_model(cfg)
    assert isinstance(model, DPSNet)
    losses = train_step(model, batch(make_input))
    assert set(losses) == {
        "loss_cls",
        "loss_box_reg",
        "loss_rpn_cls",
        "loss_rpn_loc",
        "loss_density",
    }
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    for name in ("counting_head.predictor.weight", "backbone.count_pyramid.lateral2.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # every image empty
    losses = train_step(model, [make_input(64, 96, [], []), make_input(70, 50, [], [])])
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_losses_pinned_for_a_fixed_seed(cfg, make_input):
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.manual_seed(1)
    inputs = batch(make_input)
    torch.manual_seed(2)  # RPN / ROI sampling
    losses = train_step(model, inputs)
    expected = {
        "loss_cls": 1.41346,
        "loss_box_reg": 0.000735,
        "loss_rpn_cls": 0.69406,
        "loss_rpn_loc": 0.004343,
        "loss_density": 0.49796,
    }
    assert losses == pytest.approx(expected, rel=2e-3, abs=1e-4)


def test_density_loss_weight_scales_the_density_loss(cfg, make_input):
    inputs = batch(make_input)
    torch.manual_seed(0)
    base = train_step(build_model(cfg), inputs)["loss_density"]
    cfg.MODEL.DPSNET.DENSITY_LOSS_WEIGHT = 3.0
    torch.manual_seed(0)
    assert train_step(build_model(cfg), inputs)["loss_density"] == pytest.approx(3 * base, rel=1e-5)


def test_training_without_density_targets_says_which_mapper(cfg, make_input):
    model = build_model(cfg).train()
    inputs = batch(make_input)
    for x in inputs:
        del x["density"]
    with EventStorage(), pytest.raises(ValueError, match="DPSNetDatasetMapper"):
        model(inputs)


def test_inference_returns_density_and_counts(cfg, make_input):
    model = build_model(cfg).eval()
    inputs = [make_input(97, 123, BOXES, [0, 2]), make_input(61, 77, [], [])]
    inputs[0].update(height=194, width=246)  # outputs in the original resolution
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == 2
    for out, (h, w) in zip(outputs, [(97, 123), (61, 77)]):
        assert out["density"].shape == (1, -(-h // 8), -(-w // 8))
        assert out["counts"].shape == (1,)
        assert torch.allclose(out["counts"], out["density"].sum(dim=(1, 2)) / 100.0)
    assert outputs[0]["instances"].image_size == (194, 246)
    assert outputs[1]["instances"].image_size == (61, 77)


def test_test_flip_merges_each_image_with_its_mirror(cfg, make_input):
    from dpsnet.modeling.flip import merge_flip_outputs, mirror_inputs

    torch.manual_seed(0)
    plain = build_model(cfg).eval()
    cfg.MODEL.DPSNET.TEST_FLIP = True
    flipping = build_model(cfg).eval()
    flipping.load_state_dict(plain.state_dict())
    inputs = [make_input(97, 123, BOXES, [0, 2]), make_input(61, 77, [], [])]
    with torch.no_grad():
        merged = flipping(inputs)
        views = plain(inputs), plain(mirror_inputs(inputs))
    assert len(merged) == 2
    for out, a, b in zip(merged, *views, strict=True):
        expected = merge_flip_outputs(a, b)
        assert out["counts"].tolist() == pytest.approx(((a["counts"] + b["counts"]) / 2).tolist())
        assert out["counts"].tolist() != pytest.approx(a["counts"].tolist())  # two views differ
        assert out["density"].shape == a["density"].shape
        assert torch.allclose(out["density"], (a["density"] + b["density"].flip(-1)) / 2)
        assert out["instances"].scores.tolist() == pytest.approx(
            expected["instances"].scores.tolist(), abs=1e-5
        )
    # ``inference`` itself stays one view (export and count-guided comparison rely on it).
    with torch.no_grad():
        one = flipping.inference(inputs)
    assert one[0]["counts"].tolist() == pytest.approx(views[0][0]["counts"].tolist())


def test_cross_class_merge_applies_to_forward_not_to_inference(cfg, make_input):
    from dpsnet.modeling.postprocess import merge_across_classes

    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # a random head: many overlapping products
    torch.manual_seed(0)
    plain = build_model(cfg).eval()
    cfg.MODEL.DPSNET.CROSS_CLASS_IOU = 0.5
    merging = build_model(cfg).eval()
    merging.load_state_dict(plain.state_dict())
    inputs = batch(make_input)
    with torch.no_grad():
        before, after = plain(inputs), merging(inputs)
        one = merging.inference(inputs)
    assert len(after[0]["instances"]) < len(before[0]["instances"])
    for b, a, o in zip(before, after, one, strict=True):
        expected = merge_across_classes(b["instances"], 0.5)
        assert a["instances"].scores.tolist() == pytest.approx(expected.scores.tolist())
        assert a["instances"].pred_classes.tolist() == expected.pred_classes.tolist()
        assert len(o["instances"]) == len(b["instances"])  # inference() leaves them apart


def test_count_guided_inference_keeps_the_predicted_number(cfg, make_input):
    inputs = [make_input(97, 123, BOXES, [0, 2]), make_input(61, 77, [], [])]
    torch.manual_seed(0)
    plain = build_model(cfg).eval()
    cfg.MODEL.DPSNET.COUNT_GUIDED.ENABLED = True
    cfg.MODEL.DPSNET.COUNT_GUIDED.MIN_SCORE = 0.0  # the count alone decides
    cfg.MODEL.DPSNET.COUNT_GUIDED.KEEP_SCORE = 1.0
    guided = build_model(cfg).eval()
    guided.load_state_dict(plain.state_dict())
    with torch.no_grad():
        before, after = plain(inputs), guided(inputs)
    for b, a in zip(before, after):
        n = int(torch.floor(a["counts"][0] + 0.5))
        assert len(a["instances"]) == min(n, len(b["instances"]))
        assert (
            a["instances"].scores.tolist() == b["instances"].scores[: len(a["instances"])].tolist()
        )


def test_count_guided_level_must_be_predicted(cfg):
    cfg.MODEL.DPSNET.COUNT_GUIDED.ENABLED = True
    cfg.MODEL.DPSNET.COUNT_GUIDED.LEVEL = "category"
    with pytest.raises(ValueError, match="COUNT_GUIDED.LEVEL"):
        build_model(cfg)


def test_detectron2_checkpoint_loads_with_a_one_line_note(cfg, tmp_path, caplog):
    detector_cfg = cfg.clone()
    detector_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    detector_cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    detector = build_model(detector_cfg)
    DetectionCheckpointer(detector, save_dir=str(tmp_path)).save("detector")
    model = build_model(cfg)
    with caplog.at_level(logging.INFO):
        DetectionCheckpointer(model).load(str(tmp_path / "detector.pth"))
    notes = [r for r in caplog.records if "no counting view" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    ours, theirs = model.state_dict(), detector.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in theirs.items())


def test_detectron2_model_zoo_pkl_loads_with_a_one_line_note(cfg, tmp_path, caplog):
    """A ``.pkl`` (detectron2 model-zoo format: numpy arrays, name-matching heuristics)."""
    detector_cfg = cfg.clone()
    detector_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    detector_cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    detector = build_model(detector_cfg)
    state = {k: v.numpy() for k, v in detector.state_dict().items()}
    with open(tmp_path / "detector.pkl", "wb") as f:
        pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo"}, f)
    model = build_model(cfg)
    # Unpickling runs code: refused unless the user opts in (MODEL.TRUST_PICKLE, --trust-pickle).
    with pytest.raises(WeightsError, match="refusing a .pkl"):
        DetectionCheckpointer(model).load(str(tmp_path / "detector.pkl"))
    configure_weights(trust_pickle=True)
    try:
        with caplog.at_level(logging.INFO):
            DetectionCheckpointer(model).load(str(tmp_path / "detector.pkl"))
    finally:
        configure_weights(trust_pickle=False)
    assert len([r for r in caplog.records if "no counting view" in r.getMessage()]) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "Unpickling" in warnings[0]  # the opt-in is logged
    ours = model.state_dict()
    assert all(torch.equal(ours[k], torch.as_tensor(v)) for k, v in state.items())


def test_partial_counting_view_is_still_reported(cfg):
    model = build_model(cfg)
    state = model.state_dict()
    del state["counting_head.predictor.weight"]
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["counting_head.predictor.weight"]
