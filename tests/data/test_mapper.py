"""DPSNetDatasetMapper on the mini world: density targets follow resize, flip and crop."""

import copy

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T

from dpsnet import add_dpsnet_config
from dpsnet.data.density import DensityLayout, DensityTargetGenerator
from dpsnet.data.mapper import DPSNetDatasetMapper
from dpsnet.utils.io import BadInputError

LEVELS = ["total", "supercategory", "category"]


@pytest.fixture
def cfg(mini_world):
    cfg = get_cfg()
    add_dpsnet_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "DPSNet"
    cfg.DATASETS.TRAIN = (mini_world.names["test"],)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(
        MetadataCatalog.get(mini_world.names["test"]).thing_classes
    )
    cfg.MODEL.COUNTING_HEAD.LEVELS = LEVELS
    cfg.INPUT.MIN_SIZE_TRAIN = (160,)
    cfg.INPUT.MAX_SIZE_TRAIN = 400
    cfg.INPUT.RANDOM_FLIP = "none"
    return cfg


@pytest.fixture
def record(mini_world):
    """The checkout image with the most objects."""
    return max(DatasetCatalog.get(mini_world.names["test"]), key=lambda r: len(r["annotations"]))


def _expected_mass(instances, cfg, mini_world):
    meta = MetadataCatalog.get(mini_world.names["test"])
    classes = instances.gt_classes.numpy()
    supers = np.asarray(meta.thing_supercategory_ids)[classes]
    per_class = np.bincount(classes, minlength=cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    per_super = np.bincount(supers, minlength=len(meta.supercategory_names))
    return 100.0 * torch.tensor([len(classes), *per_super, *per_class], dtype=torch.float32)


def test_training_output_has_a_density_map_per_channel(cfg, record, mini_world):
    out = DPSNetDatasetMapper(cfg, is_train=True)(record)
    h, w = out["image"].shape[1:]
    assert min(h, w) == 160  # resized
    n = len(out["instances"])
    assert n == len(record["annotations"]) > 1
    assert out["density"].shape == (len(_expected_mass(out["instances"], cfg, mini_world)),
                                     -(-h // 8), -(-w // 8))  # fmt: skip
    torch.testing.assert_close(
        out["density"].sum(dim=(1, 2)), _expected_mass(out["instances"], cfg, mini_world)
    )
    assert "annotations" not in out


def test_flip_flips_the_map(cfg, record):
    size = (record["height"], record["width"])
    assert size[1] % 8 == 0  # so that the mirrored map lands on the same grid
    plain = DPSNetDatasetMapper(cfg, is_train=True)
    mapper = DPSNetDatasetMapper(
        is_train=True,
        augmentations=[T.RandomFlip(prob=1.0, horizontal=True)],
        image_format="BGR",
        density_generator=plain.density_generator,
    )
    no_flip = DPSNetDatasetMapper(
        is_train=True, augmentations=[], image_format="BGR",
        density_generator=plain.density_generator,
    )  # fmt: skip
    a, b = no_flip(record), mapper(record)
    assert torch.equal(b["image"], a["image"].flip(-1))
    torch.testing.assert_close(b["density"], a["density"].flip(-1), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(a["density"], a["density"].flip(-1), atol=1e-3)


def test_crop_keeps_map_and_instances_consistent(cfg, record, mini_world):
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "relative"
    cfg.INPUT.CROP.SIZE = [0.5, 0.5]
    mapper = DPSNetDatasetMapper(cfg, is_train=True)
    assert any(isinstance(a, T.RandomCrop) for a in mapper.augmentations.augs)
    np.random.seed(0)
    kept = []
    for _ in range(4):
        out = mapper(copy.deepcopy(record))
        kept.append(len(out["instances"]))
        torch.testing.assert_close(
            out["density"].sum(dim=(1, 2)), _expected_mass(out["instances"], cfg, mini_world)
        )
    assert min(kept) < len(record["annotations"])  # the crops did cut objects out


def test_photometric_augmentation_moves_no_target(cfg, record):
    plain = DPSNetDatasetMapper(cfg, is_train=True)(record)
    cfg.INPUT.ALBUMENTATIONS.TRANSFORMS = ["RandomBrightnessContrast(p=1.0)", "GaussNoise(p=1.0)"]
    mapper = DPSNetDatasetMapper(cfg, is_train=True)
    assert "AlbumentationsPhotometric" in repr(mapper.augmentations)
    out = mapper(record)
    assert out["image"].shape == plain["image"].shape
    assert not torch.equal(out["image"], plain["image"])
    assert torch.equal(out["instances"].gt_boxes.tensor, plain["instances"].gt_boxes.tensor)
    assert torch.equal(out["density"], plain["density"])
    # test-time: off unless INPUT.ALBUMENTATIONS.TEST
    assert "Albumentations" not in repr(DPSNetDatasetMapper(cfg, is_train=False).augmentations)


def test_inference_output_has_no_targets(cfg, record):
    out = DPSNetDatasetMapper(cfg, is_train=False)(record)
    assert "density" not in out and "instances" not in out and "annotations" not in out
    assert out["image"].dtype == torch.uint8


def test_mapper_works_with_a_plain_generator(record):
    """Built without a config: any callable target generator."""
    gen = DensityTargetGenerator(DensityLayout(("total",), 100), stride=4, mass=1.0)
    mapper = DPSNetDatasetMapper(
        is_train=True, augmentations=[], image_format="RGB", density_generator=gen
    )
    out = mapper(record)
    assert out["density"].shape == (1, -(-record["height"] // 4), -(-record["width"] // 4))
    assert out["density"].sum().item() == pytest.approx(len(record["annotations"]), rel=1e-5)


def test_unreadable_image_names_the_file(cfg, record, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    record = dict(record, file_name=str(bad))
    with pytest.raises(BadInputError, match="broken.jpg"):
        DPSNetDatasetMapper(cfg, is_train=True)(record)
