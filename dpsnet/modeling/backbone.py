"""DPSNet's backbone: detectron2's ResNet-FPN detection pyramid plus the counting pyramid.

The detection pyramid (P2-P6) is detectron2's :class:`FPN`, unchanged, so detectron2 checkpoints
load into it under the same names. On top of its outputs sits the paper's second, top-down
pyramid, fused at one level (P3, stride 8, in the paper): every input level goes through a 1x1
lateral conv; coarser levels are merged top-down (P6 -> P5 -> P4, each upsampled and added to the
next), the result is upsampled and added to the fusion level's lateral, and finer levels (P2) are
max-pooled down to its size and added too. The fused map is the backbone output ``"count"``,
read by the counting head, while the detector keeps reading ``"p2"``-``"p6"``.
"""

import math

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from torch import nn

__all__ = [
    "COUNT_FEATURE",
    "CountingPyramid",
    "DPSNetFPN",
    "build_dpsnet_resnet_fpn_backbone",
    "max_pool",
]

# Name of the counting pyramid's output among the backbone's features.
COUNT_FEATURE = "count"


class CountingPyramid(nn.Module):
    """The counting view's top-down pyramid over detection-pyramid features, fused at one level.

    Args:
        input_shapes: name -> ShapeSpec of the detection levels it reads (strides log2-contiguous).
        out_stride: stride of the fusion level (must be one of the input strides).
        out_channels: channels of the laterals and of the output.
        norm: normalisation of the 1x1 laterals ("" for none, else a detectron2 norm name).
    """

    def __init__(
        self, input_shapes: dict[str, ShapeSpec], *, out_stride: int, out_channels: int, norm=""
    ):
        super().__init__()
        names = sorted(input_shapes, key=lambda k: input_shapes[k].stride)
        strides = [input_shapes[k].stride for k in names]
        if out_stride not in strides:
            raise ValueError(
                f"counting pyramid: fusion stride {out_stride} is not among its input levels "
                f"{dict(zip(names, strides))}"
            )
        self.in_features = names
        self.out_stride = out_stride
        self.out_channels = out_channels
        for name in names:
            lateral = Conv2d(
                input_shapes[name].channels,
                out_channels,
                kernel_size=1,
                bias=norm == "",
                norm=get_norm(norm, out_channels),
            )
            weight_init.c2_xavier_fill(lateral)
            self.add_module(f"lateral{int(math.log2(input_shapes[name].stride))}", lateral)
        # feature name -> name of its lateral conv (named by stage, like detectron2's FPN)
        self._lateral_names = {n: f"lateral{int(math.log2(s))}" for n, s in zip(names, strides)}
        fuse = strides.index(out_stride)
        self._finer = names[:fuse]
        self._fuse = names[fuse]
        self._coarser = names[fuse + 1 :][::-1]  # top-down order

    def _lateral(self, name: str) -> nn.Module:
        return getattr(self, self._lateral_names[name])

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, out_channels, H / out_stride, W / out_stride) fused counting feature."""
        out = self._lateral(self._fuse)(features[self._fuse])
        size = out.shape[-2:]
        top = None
        for name in self._coarser:
            lat = self._lateral(name)(features[name])
            top = (
                lat
                if top is None
                else lat + F.interpolate(top, size=lat.shape[-2:], mode="nearest")
            )
        if top is not None:
            out = out + F.interpolate(top, size=size, mode="nearest")
        for name in self._finer:
            x = features[name]
            k = x.shape[-1] // size[-1] if x.shape[-1] >= size[-1] else 1
            x = max_pool(x, k) if k > 1 else x
            if x.shape[-2:] != size:  # sizes not divisible by the stride ratio
                x = F.interpolate(x, size=size, mode="nearest")
            out = out + self._lateral(name)(x)
        return out


def max_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """``F.max_pool2d(x, k, k, ceil_mode=True)``; as a max of k * k strided slices when the size
    divides by k (always, for padded batches): several times faster on CPU, same values."""
    h, w = x.shape[-2:]
    if h % k or w % k:
        return F.max_pool2d(x, kernel_size=k, stride=k, ceil_mode=True)
    out = x[..., ::k, ::k]
    for i in range(k):
        for j in range(k):
            if i or j:
                out = torch.maximum(out, x[..., i::k, j::k])
    return out


class DPSNetFPN(FPN):
    """detectron2's FPN whose outputs also include the counting pyramid's ``"count"`` feature.

    Args:
        count_in_features: detection levels (e.g. ``["p2", ..., "p6"]``) the counting pyramid fuses.
        count_stride: stride of the counting feature (8 in the paper).
        count_channels: its channels; 0: the FPN's.
        count_norm: normalisation of its laterals.
        count_detach: feed the counting pyramid detached detection levels, so that the counting
            losses train the counting view only and never move the shared backbone and FPN.
        **kwargs: as :class:`detectron2.modeling.backbone.FPN`.
    """

    def __init__(
        self,
        *,
        count_in_features=("p2", "p3", "p4", "p5", "p6"),
        count_stride: int = 8,
        count_channels: int = 0,
        count_norm: str = "",
        count_detach: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.count_detach = count_detach
        shapes = super().output_shape()
        missing = [f for f in count_in_features if f not in shapes]
        if missing:
            raise ValueError(
                f"counting pyramid reads {missing}, which the FPN does not output ({list(shapes)})"
            )
        count_channels = count_channels or next(iter(shapes.values())).channels
        self.count_pyramid = CountingPyramid(
            {f: shapes[f] for f in count_in_features},
            out_stride=count_stride,
            out_channels=count_channels,
            norm=count_norm,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Detection levels ``"p2"``... plus ``"count"``, for a (B, 3, H, W) padded batch."""
        results = super().forward(x)
        inputs = {k: v.detach() for k, v in results.items()} if self.count_detach else results
        results[COUNT_FEATURE] = self.count_pyramid(inputs)
        return results

    def output_shape(self) -> dict[str, ShapeSpec]:
        shapes = super().output_shape()
        shapes[COUNT_FEATURE] = ShapeSpec(
            channels=self.count_pyramid.out_channels, stride=self.count_pyramid.out_stride
        )
        return shapes


@BACKBONE_REGISTRY.register()
def build_dpsnet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + FPN (P2-P6, as ``build_resnet_fpn_backbone``) + the counting pyramid.

    Returns:
        DPSNetFPN: outputs ``"p2"``-``"p6"`` and ``"count"`` (stride MODEL.COUNTING_HEAD.STRIDE).
    """
    pyramid = cfg.MODEL.DPSNET.COUNT_PYRAMID
    norm = cfg.MODEL.FPN.NORM if pyramid.NORM == "same" else pyramid.NORM
    return DPSNetFPN(
        bottom_up=build_resnet_backbone(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        count_in_features=tuple(pyramid.IN_FEATURES),
        count_stride=cfg.MODEL.COUNTING_HEAD.STRIDE,
        count_channels=pyramid.OUT_CHANNELS,
        count_norm=norm,
        count_detach=pyramid.DETACH_INPUT,
    )
