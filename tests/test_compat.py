"""The detectron2 0.6 shims: each applied only when needed, each doing its job."""

import numpy as np
import pytest
from PIL import Image

from dpsnet import compat


def test_pillow_linear_alias():
    assert Image.LINEAR == Image.BILINEAR
    # detectron2's transform module uses Image.LINEAR as a default argument at import time.
    from detectron2.data.transforms import ExtentTransform

    assert ExtentTransform((0, 0, 4, 4), (2, 2)).interp == Image.BILINEAR


def test_numpy_aliases():
    assert np.float is float
    assert np.int is int
    from detectron2.structures.masks import polygons_to_bitmask

    # The empty-polygon path used np.bool, removed in numpy 1.24.
    assert polygons_to_bitmask([], 3, 4).shape == (3, 4)


@pytest.mark.skipif(compat.has_compiled_ops(), reason="detectron2 has its compiled ops")
def test_missing_compiled_op_is_a_clear_error():
    import torch
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    boxes = torch.tensor([[5.0, 5.0, 2.0, 2.0, 0.0]])
    with pytest.raises(compat.MissingCompiledOpsError, match="box_iou_rotated.*rotated boxes"):
        pairwise_iou_rotated(boxes, boxes)


@pytest.mark.skipif(compat.has_compiled_ops(), reason="detectron2 has its compiled ops")
def test_missing_deform_conv_op_is_a_clear_error():
    # On CPU detectron2 routes DeformConv to torchvision; the compiled path is the CUDA one, so
    # reach the placeholder directly, as the CUDA branch would.
    import detectron2.layers.deform_conv as dc

    with pytest.raises(compat.MissingCompiledOpsError, match="deform_conv_forward.*deformable"):
        getattr(dc._C, "deform_conv_forward")  # noqa: B009


def test_deform_conv_runs_on_cpu_through_torchvision():
    import torch
    from detectron2.layers import DeformConv

    conv = DeformConv(2, 2, 3, padding=1)
    out = conv(torch.ones(1, 2, 5, 5), torch.zeros(1, 18, 5, 5))
    assert out.shape == (1, 2, 5, 5)


def test_model_zoo_imports():
    # needs pkg_resources, i.e. setuptools < 81 in the environment
    import detectron2.model_zoo  # noqa: F401


def test_cpu_ddp_shim_drops_device_ids(monkeypatch):
    import torch
    from detectron2.engine import defaults
    from detectron2.utils import comm

    seen = {}

    class FakeDDP:
        def __init__(self, model, **kwargs):
            seen.update(kwargs)

    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(defaults, "DistributedDataParallel", FakeDDP)
    defaults.create_ddp_model(torch.nn.Linear(2, 2), broadcast_buffers=False)
    assert seen["device_ids"] is None
    assert "cpu_ddp" in compat.APPLIED


def test_retinanet_head_with_group_norm_builds():
    # detectron2 0.6 probes the norm with one channel: GroupNorm(32, 1) fails under torch 2.
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
    from torch import nn

    head = RetinaNetHead(
        input_shape=[ShapeSpec(channels=8)] * 2, num_classes=1, num_anchors=1, conv_dims=[32],
        norm="GN",
    )  # fmt: skip
    assert isinstance(head.cls_subnet[1], nn.GroupNorm) and head.cls_subnet[1].num_groups == 32


def test_import_without_detectron2_says_how(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "detectron2" else real(name)
    )
    with pytest.raises(ImportError, match="make install"):
        compat.apply()
