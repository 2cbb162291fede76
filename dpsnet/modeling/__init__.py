"""DPSNet's model parts, registered with detectron2 on import."""

from dpsnet.modeling import (
    backbone,  # noqa: F401  (registers build_dpsnet_resnet_fpn_backbone)
    counting_head,  # noqa: F401  (registers DensityCountingHead)
    meta_arch,  # noqa: F401  (registers the DPSNet meta-architecture)
)
from dpsnet.modeling.backbone import DPSNetFPN, build_dpsnet_resnet_fpn_backbone
from dpsnet.modeling.counting_head import COUNTING_HEAD_REGISTRY, build_counting_head
from dpsnet.modeling.meta_arch import DPSNet

__all__ = [
    "COUNTING_HEAD_REGISTRY",
    "DPSNet",
    "DPSNetFPN",
    "build_counting_head",
    "build_dpsnet_resnet_fpn_backbone",
]
