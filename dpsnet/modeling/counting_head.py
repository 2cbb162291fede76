"""Counting heads: predict density maps from the counting pyramid's feature.

A counting head is a pluggable slot of :class:`~dpsnet.modeling.meta_arch.DPSNet`, with its own
registry. The default is the paper's density head: 3x3 conv, instance norm, ReLU, 1x1 conv to C
density channels, instance norm, ReLU; trained with a smooth L1 loss against the ground-truth
density map (see :mod:`dpsnet.data.density`).
"""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.utils.registry import Registry
from torch import nn

from dpsnet.data.density import density_layout_from_config

__all__ = [
    "COUNTING_HEAD_REGISTRY",
    "DensityCountingHead",
    "build_counting_head",
    "num_density_channels",
]

COUNTING_HEAD_REGISTRY = Registry("COUNTING_HEAD")
COUNTING_HEAD_REGISTRY.__doc__ = """
Registry for counting heads, which predict density maps from backbone features.

The registered object is called with ``(cfg, input_shape)``, ``input_shape`` a dict of backbone
output name -> ShapeSpec, and must return an ``nn.Module`` whose ``forward(features, targets=None)``
takes the backbone's feature dict and, in training, the (B, C, h, w) padded ground-truth density
maps, and returns ``(density (B, C, h, w), losses dict)``.
"""


def build_counting_head(cfg, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """Build the counting head named by ``cfg.MODEL.COUNTING_HEAD.NAME``."""
    return COUNTING_HEAD_REGISTRY.get(cfg.MODEL.COUNTING_HEAD.NAME)(cfg, input_shape)


def num_density_channels(cfg) -> int:
    """MODEL.COUNTING_HEAD.NUM_CHANNELS, or the channels its LEVELS give with dataset metadata.

    Only metadata already in memory is used (a model builds from its config alone): the tool
    reads a lazily registered dataset's categories first (``read_layout_categories``).
    """
    if cfg.MODEL.COUNTING_HEAD.NUM_CHANNELS > 0:
        return cfg.MODEL.COUNTING_HEAD.NUM_CHANNELS
    return density_layout_from_config(cfg, in_memory=True).num_channels


def _norm(name: str, channels: int) -> nn.Module | None:
    if name == "IN":
        # Instance norm (affine, no running statistics) computed as a GroupNorm with one channel
        # per group: the same function and parameters, and several times faster on CPU.
        return nn.GroupNorm(channels, channels)
    return get_norm(name, channels)


@COUNTING_HEAD_REGISTRY.register()
class DensityCountingHead(nn.Module):
    """The paper's density head.

    Args:
        in_feature: backbone output to read (the counting pyramid's ``"count"``).
        in_channels: its channels.
        num_channels: C, density channels to predict.
        conv_dim: channels of the 3x3 conv.
        norm: normalisation after the 3x3 conv ("IN": instance norm, or a detectron2 norm).
        output_norm: normalisation of the C output channels before the final ReLU ("IN" or "").
        output_activation: "relu" (the paper) or "softplus": a ReLU whose inputs all turn
            negative passes no gradient and the map stays zero for good (seen when training from
            scratch with the count loss); softplus always passes one.
        mass: density mass of one object (for the count loss).
        smooth_l1_beta: beta of the smooth L1 density loss.
        count_loss_weight: weight of an L1 loss on the per-channel counts (0: off).
    """

    @configurable
    def __init__(
        self,
        *,
        in_feature: str,
        in_channels: int,
        num_channels: int,
        conv_dim: int = 0,
        norm: str = "IN",
        output_norm: str = "IN",
        output_activation: str = "relu",
        mass: float = 100.0,
        smooth_l1_beta: float = 1.0,
        count_loss_weight: float = 0.0,
    ):
        super().__init__()
        conv_dim = conv_dim or in_channels
        self.in_feature = in_feature
        self.num_channels = num_channels
        self.mass = mass
        self.smooth_l1_beta = smooth_l1_beta
        self.count_loss_weight = count_loss_weight
        activations = {"relu": F.relu, "softplus": F.softplus}
        if output_activation not in activations:
            raise ValueError(
                f"MODEL.COUNTING_HEAD.OUTPUT_ACTIVATION must be one of {sorted(activations)}, "
                f"got {output_activation!r}"
            )
        self.activation = activations[output_activation]
        self.conv = Conv2d(
            in_channels,
            conv_dim,
            kernel_size=3,
            padding=1,
            norm=_norm(norm, conv_dim),
            activation=F.relu,
        )
        self.predictor = Conv2d(
            conv_dim, num_channels, kernel_size=1, norm=_norm(output_norm, num_channels)
        )
        for layer in (self.conv, self.predictor):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        head = cfg.MODEL.COUNTING_HEAD
        if head.IN_FEATURE not in input_shape:
            raise ValueError(
                f"MODEL.COUNTING_HEAD.IN_FEATURE {head.IN_FEATURE!r} is not a backbone output "
                f"({sorted(input_shape)}); use the 'build_dpsnet_resnet_fpn_backbone' backbone"
            )
        shape = input_shape[head.IN_FEATURE]
        if shape.stride != head.STRIDE:
            raise ValueError(
                f"backbone feature {head.IN_FEATURE!r} has stride {shape.stride}, "
                f"MODEL.COUNTING_HEAD.STRIDE is {head.STRIDE}"
            )
        return {
            "in_feature": head.IN_FEATURE,
            "in_channels": shape.channels,
            "num_channels": num_density_channels(cfg),
            "conv_dim": head.CONV_DIM,
            "norm": head.NORM,
            "output_norm": head.OUTPUT_NORM,
            "output_activation": head.OUTPUT_ACTIVATION,
            "mass": head.MASS,
            "smooth_l1_beta": head.SMOOTH_L1_BETA,
            "count_loss_weight": head.COUNT_LOSS_WEIGHT,
        }

    def forward(
        self,
        features: dict[str, torch.Tensor],
        targets: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ):
        """Predict density maps; in training, also their losses.

        Args:
            features: backbone outputs; reads ``features[in_feature]`` (B, in_channels, h, w).
            targets: (B, C, h, w) ground-truth density maps (training only).
            weights: optional (B,) per-image loss weights (training only): 0 for an image whose
                map is not known in full (pseudo-labels with ignore regions), else 1.

        Returns:
            (B, C, h, w) non-negative density maps, and a dict of losses (empty in inference).
        """
        density = self.activation(self.predictor(self.conv(features[self.in_feature])))
        # Under bfloat16 autocast the convolutions above run in bf16; a count is a sum over
        # thousands of pixels divided by the mass, so the map, its sums and its losses are
        # float32 (bf16's 8-bit mantissa would cost whole items on a crowded tray).
        density = density.float()
        if not self.training:
            return density, {}
        return density, self.losses(density, targets, weights)

    def losses(
        self, density: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Smooth L1 between maps (mean over pixels), plus the optional count loss.

        With ``weights``, each image's losses count by its weight (a weighted mean over images;
        all-ones weights give the unweighted losses, all-zero weights zero losses).
        """
        if targets is None or targets.shape != density.shape:
            raise ValueError(
                f"density targets {None if targets is None else tuple(targets.shape)} do not match "
                f"the predicted maps {tuple(density.shape)}"
            )
        if weights is None:
            weights = density.new_ones(density.shape[0])
        weights = weights.to(density)
        norm = weights.sum().clamp(min=1.0)
        per_image = F.smooth_l1_loss(density, targets, beta=self.smooth_l1_beta, reduction="none")
        losses = {"loss_density": (per_image.mean(dim=(1, 2, 3)) * weights).sum() / norm}
        if self.count_loss_weight > 0:
            pred = density.sum(dim=(2, 3)) / self.mass
            gt = targets.sum(dim=(2, 3)) / self.mass
            count = F.l1_loss(pred, gt, reduction="none").mean(dim=1)
            losses["loss_count"] = self.count_loss_weight * (count * weights).sum() / norm
        return losses
