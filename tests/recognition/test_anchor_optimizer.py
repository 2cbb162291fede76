"""Anchor optimisation: the search beats detectron2's default anchors on a dataset's boxes."""

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from dpsnet.recognition.anchors import (
    DEFAULT_RATIOS,
    DEFAULT_SIZES,
    anchor_shapes,
    dataset_boxes_wh,
    mean_best_iou,
    optimize_anchors,
    shape_iou,
)

ROOT = Path(__file__).resolve().parents[2]


def test_anchor_shapes_follow_detectron2():
    # detectron2: ratio = height / width, area = size^2.
    wh = anchor_shapes([32], [0.5, 1.0, 2.0])
    assert np.allclose(wh.prod(1), 32**2)
    assert np.allclose(wh[:, 1] / wh[:, 0], [0.5, 1.0, 2.0])


def test_shape_iou_by_hand():
    iou = shape_iou(np.array([[10.0, 20.0]]), np.array([[10.0, 20.0], [20.0, 10.0], [5, 5]]))
    assert np.allclose(iou, [[1.0, 100 / 300, 25 / 200]])


def test_optimised_anchors_fit_tall_boxes_better_than_the_default():
    rng = np.random.default_rng(0)
    # Tall boxes (h / w about 3) of sizes 20..60 px: far from the default ratios and sizes.
    w = rng.uniform(12, 35, 300)
    boxes = np.stack([w, w * rng.uniform(2.6, 3.4, 300)], 1)
    sizes, ratios, iou = optimize_anchors(boxes, num_levels=5, scales_per_level=1, num_ratios=3)
    default = mean_best_iou(boxes, DEFAULT_SIZES, DEFAULT_RATIOS)
    assert len(sizes) == 5 and all(len(level) == 1 for level in sizes)
    assert all(b[0] == pytest.approx(2 * a[0], rel=0.01) for a, b in zip(sizes, sizes[1:]))
    assert len(ratios) == 3 and ratios == sorted(ratios)
    assert iou == pytest.approx(mean_best_iou(boxes, [s for lv in sizes for s in lv], ratios))
    assert iou > default + 0.1
    assert max(ratios) > 2.0  # it found the tall shape
    assert iou > 0.75


def test_three_scales_per_level():
    boxes = np.array([[30.0, 30.0], [60.0, 45.0], [100.0, 120.0]])
    sizes, ratios, iou = optimize_anchors(boxes, num_levels=5, scales_per_level=3, num_ratios=2)
    assert [len(level) for level in sizes] == [3] * 5 and len(ratios) == 2
    assert 0 < iou <= 1


def test_no_boxes():
    with pytest.raises(ValueError):
        optimize_anchors(np.zeros((0, 2)))


def test_dataset_boxes_follow_the_test_resize():
    from detectron2.structures import BoxMode

    records = [
        {
            "height": 200,
            "width": 400,
            "annotations": [{"bbox": [0, 0, 50, 20], "bbox_mode": BoxMode.XYWH_ABS}],
        }
    ]
    assert np.allclose(dataset_boxes_wh(records), [[50, 20]])
    assert np.allclose(dataset_boxes_wh(records, 100, 1000), [[25, 10]])
    assert np.allclose(dataset_boxes_wh(records, 100, 150), [[18.75, 7.5]])  # capped long side


def _tool():
    return runpy.run_path(str(ROOT / "tools" / "optimize_anchors.py"))["main"]


def test_tool_on_a_registered_dataset(mini_world, tmp_path, capsys):
    """tools/optimize_anchors.py prints config lines and beats the default anchors."""
    out = tmp_path / "anchors.json"
    assert _tool()([mini_world.names["val"], "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ANCHOR_GENERATOR:" in printed and "ASPECT_RATIOS:" in printed
    result = json.loads(out.read_text())
    assert result["boxes"] == mini_world.counts["val"]["instances"]
    assert result["iou"] >= result["default_iou"]
    assert len(result["sizes"]) == 1 and len(result["sizes"][0]) == 5  # detectron2's layout
    assert result["sizes"][0][1] == pytest.approx(2 * result["sizes"][0][0], rel=0.01)


def test_tool_with_an_fpn_config(mini_world, tmp_path):
    out = tmp_path / "anchors.json"
    config = ROOT / "configs" / "OpenSet" / "faster_rcnn_R_18_FPN_agnostic_mini.yaml"
    argv = [mini_world.names["val"], "--json", str(out), "--config-file", str(config)]
    assert _tool()([*argv, "--num-ratios", "2"]) == 0
    result = json.loads(out.read_text())
    assert [len(level) for level in result["sizes"]] == [1] * 5 and len(result["ratios"]) == 2
    assert result["iou"] >= result["default_iou"]


def test_tool_refuses_an_unknown_dataset(capsys):
    assert _tool()(["no_such_dataset_xyz"]) == 2
    assert "no_such_dataset_xyz" in capsys.readouterr().err
