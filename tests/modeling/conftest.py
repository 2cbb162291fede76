"""Tiny DPSNet configs and inputs for the model tests (random init, images of ~100 px)."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import Boxes, Instances

from dpsnet import add_dpsnet_config
from dpsnet.data.density import DensityLayout, DensityTargetGenerator


def _tiny_cfg():
    """A DPSNet small enough to train a step in about a second on one core."""
    cfg = get_cfg()
    add_dpsnet_config(cfg)
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.META_ARCHITECTURE", "DPSNet",
            "MODEL.BACKBONE.NAME", "build_dpsnet_resnet_fpn_backbone",
            "MODEL.RESNETS.DEPTH", 18,
            "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
            "MODEL.RESNETS.NORM", "GN",
            "MODEL.RESNETS.STRIDE_IN_1X1", False,
            "MODEL.RESNETS.OUT_FEATURES", ["res2", "res3", "res4", "res5"],
            "MODEL.FPN.IN_FEATURES", ["res2", "res3", "res4", "res5"],
            "MODEL.FPN.OUT_CHANNELS", 32,
            "MODEL.FPN.NORM", "GN",
            "MODEL.ANCHOR_GENERATOR.SIZES", [[16], [32], [64], [128], [256]],
            "MODEL.RPN.IN_FEATURES", ["p2", "p3", "p4", "p5", "p6"],
            "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200,
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50,
            "MODEL.RPN.PRE_NMS_TOPK_TEST", 100,
            "MODEL.RPN.POST_NMS_TOPK_TEST", 50,
            "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
            "MODEL.ROI_HEADS.IN_FEATURES", ["p2", "p3", "p4", "p5"],
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
            "MODEL.ROI_HEADS.NUM_CLASSES", 3,
            "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead",
            "MODEL.ROI_BOX_HEAD.NUM_FC", 2,
            "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
        ]
    )  # fmt: skip
    return cfg


def _make_input(height, width, boxes, classes, layout=None):
    """One training input: random image, ground truth and its density map."""
    layout = layout or DensityLayout(("total",), 3)
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    classes = torch.tensor(classes, dtype=torch.int64)
    instances = Instances((height, width))
    instances.gt_boxes = Boxes(boxes)
    instances.gt_classes = classes
    density = DensityTargetGenerator(layout)(boxes.numpy(), classes.numpy(), (height, width))
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8).float()
    return {"image": image, "instances": instances, "density": density}


@pytest.fixture
def cfg():
    """A fresh tiny DPSNet config (3 classes, "total" density)."""
    return _tiny_cfg()


@pytest.fixture
def make_input():
    """``make_input(height, width, boxes, classes, layout=None)`` -> one training input dict."""
    return _make_input
