"""DPSNet's dataset mapper: detectron2's DatasetMapper plus density targets and photometric aug.

For training, after the geometric augmentations (resize, flip, crop) have moved the boxes, the
mapper builds the density map from the *transformed* boxes with a :class:`DensityTargetGenerator`,
so the map always matches the image the model sees. The map goes into the dataset dict as
``"density"``: a (C, ceil(H / stride), ceil(W / stride)) float tensor, H and W the size of the
augmented (unpadded) image; the model pads it like the image.
"""

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from dpsnet.data.augment import AlbumentationsPhotometric, parse_albumentations
from dpsnet.data.density import DensityTargetGenerator, density_layout_from_config
from dpsnet.utils.io import read_image

__all__ = ["DPSNetDatasetMapper"]

logger = logging.getLogger(__name__)


class DPSNetDatasetMapper(DatasetMapper):
    """DatasetMapper that adds ground-truth density maps (training) and photometric augmentation.

    Args:
        density_generator: callable (boxes XYXY, classes, (H, W)) -> (C, h, w) density map;
            None: no density targets (e.g. for a plain detector).
        **kwargs: as :class:`detectron2.data.DatasetMapper`; photometric augmentations, if any,
            are part of ``augmentations`` (last, after the geometric ones).
    """

    @configurable
    def __init__(
        self, is_train: bool = True, *, density_generator=None, cache_images: bool = False, **kwargs
    ):
        super().__init__(is_train, **kwargs)
        self.density_generator = density_generator
        # Decoded images by file name (DATALOADER.CACHE_IMAGES): a small training set is decoded
        # once, so an in-process loader costs compute almost nothing.
        self._cache: dict[str, np.ndarray] | None = {} if cache_images else None

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        compose = parse_albumentations(list(cfg.INPUT.ALBUMENTATIONS.TRANSFORMS))
        if compose is not None and (is_train or cfg.INPUT.ALBUMENTATIONS.TEST):
            ret["augmentations"] = ret["augmentations"] + [
                AlbumentationsPhotometric(compose, cfg.INPUT.FORMAT)
            ]
        ret["cache_images"] = bool(is_train and cfg.DATALOADER.CACHE_IMAGES)
        if is_train:
            head = cfg.MODEL.COUNTING_HEAD
            ret["density_generator"] = DensityTargetGenerator(
                density_layout_from_config(cfg),
                stride=head.STRIDE,
                mass=head.MASS,
                min_sigma=head.MIN_SIGMA,
                sigma_scale=head.SIGMA_SCALE,
            )
        return ret

    def _read_image(self, dataset_dict: dict) -> np.ndarray:
        if self._cache is None:
            return self._decode(dataset_dict)
        name = dataset_dict["file_name"]
        if name not in self._cache:
            self._cache[name] = self._decode(dataset_dict)
        return self._cache[name].copy()  # an augmentation may work in place

    def _decode(self, dataset_dict: dict) -> np.ndarray:
        # dpsnet's reader names the file and the problem on bad input; it reads BGR
        if self.image_format in ("BGR", "RGB"):
            image = read_image(dataset_dict["file_name"])
            return np.ascontiguousarray(image[..., ::-1]) if self.image_format == "RGB" else image
        return utils.read_image(dataset_dict["file_name"], format=self.image_format)

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one dataset dict (detectron2's format) to the model's input.

        Returns:
            dict with "image" (uint8 (3, H, W)), and for training "instances" and "density"
            ((C, ceil(H / stride), ceil(W / stride)) float32).
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read_image(dataset_dict)
        utils.check_image_size(dataset_dict, image)
        sem_seg_gt = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)

        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(
                dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk
            )

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict

        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        if self.density_generator is not None and "instances" in dataset_dict:
            instances = dataset_dict["instances"]
            dataset_dict["density"] = self.density_generator(
                instances.gt_boxes.tensor.numpy(), instances.gt_classes.numpy(), image_shape
            )
        return dataset_dict
