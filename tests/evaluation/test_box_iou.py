"""dpsnet's one XYWH box IoU (dpsnet.evaluation.rpc_analysis.box_iou_xywh)."""

import numpy as np

from dpsnet.evaluation.rpc_analysis import box_iou_xywh


def test_iou_of_lists_and_arrays():
    iou = box_iou_xywh([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 1, 1]])
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]])
    assert iou.dtype == np.float64


def test_empty_and_degenerate_boxes():
    assert box_iou_xywh([], [[0, 0, 1, 1]]).shape == (0, 1)
    assert box_iou_xywh(np.zeros((2, 4)), np.zeros((3, 4))).tolist() == [[0.0] * 3] * 2
