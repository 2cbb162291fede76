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
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["LEVELS", "DensityLayout", "DensityTargetGenerator", "density_layout_from_config"]

LEVELS = ("total", "supercategory", "category")


@dataclass(frozen=True)
class DensityLayout:
    """What the density channels mean: levels laid out one after another.

    "total" is one channel, "supercategory" one per supercategory, "category" one per contiguous
    class. With ``levels=("total", "category")`` and K classes there are 1 + K channels; class k
    lands in channel 0 and channel 1 + k.

    Attributes:
        levels: non-empty subset of :data:`LEVELS`, in channel order.
        num_classes: K, the number of contiguous classes.
        class_to_super: K supercategory indices (0..S-1), one per class; needed only when
            "supercategory" is among ``levels``.
    """

    levels: tuple[str, ...]
    num_classes: int
    class_to_super: tuple[int, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "levels", tuple(self.levels))
        if not self.levels or any(lv not in LEVELS for lv in self.levels):
            raise ValueError(
                f"density levels must be a non-empty subset of {LEVELS}: {self.levels}"
            )
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"density levels repeat: {self.levels}")
        if self.class_to_super is not None:
            object.__setattr__(self, "class_to_super", tuple(int(s) for s in self.class_to_super))
        if "supercategory" in self.levels:
            if self.class_to_super is None or len(self.class_to_super) != self.num_classes:
                raise ValueError(
                    "a 'supercategory' density level needs one supercategory index per class "
                    f"({self.num_classes}); got "
                    f"{None if self.class_to_super is None else len(self.class_to_super)}"
                )
            if min(self.class_to_super) < 0:
                raise ValueError("supercategory indices must be >= 0")

    @property
    def num_supercategories(self) -> int:
        return max(self.class_to_super) + 1 if self.class_to_super else 0

    def level_size(self, level: str) -> int:
        return {
            "total": 1,
            "supercategory": self.num_supercategories,
            "category": self.num_classes,
        }[level]

    def level_offset(self, level: str) -> int:
        """Index of the first channel of ``level``."""
        offset = 0
        for lv in self.levels:
            if lv == level:
                return offset
            offset += self.level_size(lv)
        raise KeyError(f"density level {level!r} is not among {self.levels}")

    @property
    def num_channels(self) -> int:
        return sum(self.level_size(lv) for lv in self.levels)

    def group_of_class(self, level: str) -> np.ndarray:
        """(K,) int64: the group (index within ``level``) of each class."""
        if level == "total":
            return np.zeros(self.num_classes, np.int64)
        if level == "supercategory":
            return np.asarray(self.class_to_super, np.int64)
        if level == "category":
            return np.arange(self.num_classes, dtype=np.int64)
        raise KeyError(f"unknown density level {level!r}; expected one of {LEVELS}")

    def channel_table(self) -> np.ndarray:
        """(K, L) int64: the channel of each class at each of the L levels."""
        cols = [self.level_offset(lv) + self.group_of_class(lv) for lv in self.levels]
        return np.stack(cols, axis=1)


def density_layout_from_config(cfg, dataset_name: str | None = None) -> DensityLayout:
    """The layout of ``cfg.MODEL.COUNTING_HEAD.LEVELS``, supercategories from dataset metadata.

    Args:
        cfg: a config with dpsnet's keys.
        dataset_name: dataset whose metadata gives ``thing_supercategory_ids``; None:
            ``DATASETS.TRAIN[0]`` (else ``DATASETS.TEST[0]``).

    Raises:
        ValueError: a "supercategory" level without that metadata, or a layout that disagrees
            with an explicit ``MODEL.COUNTING_HEAD.NUM_CHANNELS``.
    """
    from detectron2.data import MetadataCatalog

    levels = tuple(cfg.MODEL.COUNTING_HEAD.LEVELS)
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    class_to_super = None
    if "supercategory" in levels:
        if dataset_name is None:
            names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
            dataset_name = names[0] if names else None
        meta = MetadataCatalog.get(dataset_name) if dataset_name else None
        class_to_super = meta.get("thing_supercategory_ids", None) if meta else None
        if class_to_super is None:
            raise ValueError(
                "MODEL.COUNTING_HEAD.LEVELS has 'supercategory', but dataset "
                f"{dataset_name!r} has no 'thing_supercategory_ids' metadata"
            )
        if len(class_to_super) != num_classes:
            raise ValueError(
                f"dataset {dataset_name!r} has {len(class_to_super)} classes in "
                f"thing_supercategory_ids, MODEL.ROI_HEADS.NUM_CLASSES is {num_classes}"
            )
    layout = DensityLayout(levels, num_classes, class_to_super)
    explicit = cfg.MODEL.COUNTING_HEAD.NUM_CHANNELS
    if explicit and explicit != layout.num_channels:
        raise ValueError(
            f"MODEL.COUNTING_HEAD.NUM_CHANNELS is {explicit}, but LEVELS {list(levels)} give "
            f"{layout.num_channels} channels"
        )
    return layout


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
