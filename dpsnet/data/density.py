"""Ground-truth density maps of the counting view: one Gaussian per object, fixed mass.

The paper's rule: each object adds a Gaussian centred on its box centre that integrates to a fixed
mass (100, so that count = map sum / 100), with sigma = max(min_sigma, min(w, h) / 2 * 5 / 12) in
density-map pixels (box size divided by the map's stride). The map is built by the dataset mapper
from the boxes *after* geometric augmentation, so resizing, flipping and cropping move the map
with the image.

The Gaussian is integrated over each density pixel (differences of the normal CDF, separably in x
and y) and renormalised over the map, so every object contributes exactly ``mass`` even when its
centre sits near a border: the map of an image integrates to ``mass`` times its object count, per
channel.
"""

import math
from collections.abc import Sequence

import numpy as np
import torch

from dpsnet.data.catalogue import LEVELS, CountingLayout
from dpsnet.data.datasets.checkout import layout_dataset, require_categories_in_memory

__all__ = ["LEVELS", "DensityLayout", "DensityTargetGenerator", "density_layout_from_config"]

#: The counting view's channel layout lives in :mod:`dpsnet.data.catalogue` (one type for the
#: density targets, the pseudo-labeller, the evaluator and the receipts); these names stay.
DensityLayout = CountingLayout


def density_layout_from_config(
    cfg, dataset_name: str | None = None, *, in_memory: bool = False
) -> CountingLayout:
    """The layout of ``cfg.MODEL.COUNTING_HEAD.LEVELS`` (see :meth:`CountingLayout.from_config`).

    Args:
        in_memory: read no file (a model's ``from_config``): a lazily registered dataset whose
            categories the tool has not read yet (``read_layout_categories``) is an error.
    """
    if in_memory and "supercategory" in cfg.MODEL.COUNTING_HEAD.LEVELS:
        require_categories_in_memory(dataset_name or layout_dataset(cfg))
    return CountingLayout.from_config(cfg, dataset_name)


class DensityTargetGenerator:
    """Callable that turns boxes and classes into a ground-truth density map.

    Args:
        layout: the channel layout.
        stride: density-map stride in input pixels (8 in the paper).
        mass: what one object integrates to (100 in the paper).
        min_sigma: the smallest Gaussian sigma, in density-map pixels.
        sigma_scale: sigma = max(min_sigma, min(w, h) / 2 * sigma_scale), w and h in map pixels.
    """

    def __init__(
        self,
        layout: DensityLayout,
        *,
        stride: int = 8,
        mass: float = 100.0,
        min_sigma: float = 1.0,
        sigma_scale: float = 5.0 / 12.0,
    ):
        if stride < 1 or mass <= 0 or min_sigma <= 0 or sigma_scale < 0:
            raise ValueError(
                f"bad density parameters: stride={stride}, mass={mass}, "
                f"min_sigma={min_sigma}, sigma_scale={sigma_scale}"
            )
        self.layout = layout
        self.stride = int(stride)
        self.mass = float(mass)
        self.min_sigma = float(min_sigma)
        self.sigma_scale = float(sigma_scale)
        self._channels = torch.as_tensor(layout.channel_table())  # (K, L)

    def map_size(self, image_size: Sequence[int]) -> tuple[int, int]:
        """(h, w) of the map of an image of ``image_size`` (h, w): ceil(size / stride)."""
        return (-(-int(image_size[0]) // self.stride), -(-int(image_size[1]) // self.stride))

    def __call__(self, boxes, classes, image_size: Sequence[int]) -> torch.Tensor:
        """Build the density map of one image.

        Args:
            boxes: (N, 4) XYXY boxes in input-image pixels (array or tensor); boxes are expected
                inside the image (detectron2's mapper clips them), centres outside are clamped.
            classes: (N,) contiguous class indices.
            image_size: (H, W) of the (augmented) input image.

        Returns:
            (C, ceil(H / stride), ceil(W / stride)) float32 tensor; channel c sums to
            ``mass`` times the number of objects falling into channel c.
        """
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        classes = torch.as_tensor(np.asarray(classes, dtype=np.int64).reshape(-1))
        if len(boxes) != len(classes):
            raise ValueError(f"{len(boxes)} boxes but {len(classes)} classes")
        h, w = self.map_size(image_size)
        out = torch.zeros(self.layout.num_channels, h, w, dtype=torch.float64)
        if len(boxes) == 0:
            return out.float()
        if classes.min() < 0 or classes.max() >= self.layout.num_classes:
            raise ValueError(
                f"class index out of range 0..{self.layout.num_classes - 1}: {classes.tolist()}"
            )
        b = boxes / self.stride
        size = torch.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]).clamp(min=0)
        sigma = (size / 2 * self.sigma_scale).clamp(min=self.min_sigma)
        cx = ((b[:, 0] + b[:, 2]) / 2).clamp(0, w)
        cy = ((b[:, 1] + b[:, 3]) / 2).clamp(0, h)
        gx = _pixel_gaussian(cx, sigma, w)  # (N, w)
        gy = _pixel_gaussian(cy, sigma, h)  # (N, h)
        blobs = torch.einsum("nh,nw->nhw", gy, gx) * self.mass
        for channels in self._channels[classes].T:  # one level at a time
            out.index_add_(0, channels, blobs)
        return out.float()


def _pixel_gaussian(mu: torch.Tensor, sigma: torch.Tensor, n: int) -> torch.Tensor:
    """(N, n) weights of 1-D Gaussians over pixels [j, j + 1), each row summing to 1."""
    edges = torch.arange(n + 1, dtype=torch.float64)
    cdf = 0.5 * (1 + torch.erf((edges[None] - mu[:, None]) / (sigma[:, None] * math.sqrt(2))))
    weights = cdf[:, 1:] - cdf[:, :-1]
    total = weights.sum(dim=1, keepdim=True)
    # A centre far outside the map (not produced by detectron2's clipped boxes) underflows to 0:
    # put its mass on the nearest pixel rather than dropping the object.
    empty = total[:, 0] <= 0
    if empty.any():
        nearest = mu[empty].floor().clamp(0, n - 1).long()
        weights[empty] = 0
        weights[empty, nearest] = 1
        total = weights.sum(dim=1, keepdim=True)
    return weights / total
