"""Backbone pretraining (dpsnet/recognition/pretrain.py): a trunk DPSNet loads, seeded."""

import json

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from dpsnet.recognition.pretrain import BACKBONE_PREFIX, pretrain_backbone


def _setup(cfg, dataset: str, iters: int = 3):
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 6
    cfg.PRETRAIN.MAX_ITER = iters
    cfg.PRETRAIN.IMS_PER_BATCH = 8
    cfg.PRETRAIN.CROP_SIZE = 32
    cfg.PRETRAIN.WARMUP_ITERS = 1
    cfg.SEED = 3
    return cfg


def test_checkpoint_loads_into_dpsnet_trunk(cfg, mini_world, tmp_path):
    cfg = _setup(cfg, mini_world.names["val"])
    out = tmp_path / "backbone.pth"
    metrics = pretrain_backbone(cfg, str(out))
    assert metrics["classes"] == len(
        {
            a["category_id"]
            for r in DatasetCatalog.get(mini_world.names["val"])
            for a in r["annotations"]
        }
    )
    assert metrics["crops"] == sum(
        len(r["annotations"]) for r in DatasetCatalog.get(mini_world.names["val"])
    )
    assert json.loads((tmp_path / "backbone.json").read_text())["crops"] == metrics["crops"]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind

    saved = torch.load(out, map_location="cpu")["model"]
    model = build_model(cfg)
    trunk = {k: v for k, v in model.state_dict().items() if k.startswith(BACKBONE_PREFIX)}
    assert set(saved) == set(trunk)
    assert all(saved[k].shape == trunk[k].shape for k in saved)
    key = next(k for k in saved if k.endswith("stem.conv1.weight"))
    assert not torch.equal(model.state_dict()[key], saved[key])
    DetectionCheckpointer(model).load(str(out))
    assert torch.equal(model.state_dict()[key], saved[key])


def test_same_seed_same_weights(cfg, mini_world, tmp_path):
    cfg = _setup(cfg, mini_world.names["val"], 2)
    a = pretrain_backbone(cfg, str(tmp_path / "a.pth"))
    b = pretrain_backbone(cfg, str(tmp_path / "b.pth"))
    wa = torch.load(tmp_path / "a.pth")["model"]
    wb = torch.load(tmp_path / "b.pth")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["final_loss"] == b["final_loss"]


def test_training_lowers_the_loss(cfg, mini_world, tmp_path):
    cfg = _setup(cfg, mini_world.names["val"], 80)
    cfg.PRETRAIN.WARMUP_ITERS = 10
    cfg.PRETRAIN.BASE_LR = 0.001
    cfg.PRETRAIN.COLOR_JITTER = 0.0
    cfg.PRETRAIN.BLUR_PROB = 0.0
    metrics = pretrain_backbone(cfg, str(tmp_path / "b.pth"))
    # 6 classes: chance cross-entropy is ln 6 = 1.79.
    assert metrics["final_loss"] < 1.2


def test_no_boxes_is_a_clear_error(cfg, tmp_path):
    DatasetCatalog.register("pretrain_empty_test", lambda: [])
    try:
        with pytest.raises(ValueError, match="pretrain_empty_test"):
            pretrain_backbone(_setup(cfg, "pretrain_empty_test"), str(tmp_path / "b.pth"))
    finally:
        DatasetCatalog.remove("pretrain_empty_test")
    assert not (tmp_path / "b.pth").exists()


def test_class_agnostic_views_pretrain_on_their_products(cfg, mini_world, tmp_path):
    """A class-agnostic detector's datasets are one-class views: the trunk is pretrained on the
    products of their sources, not on one class."""
    from dpsnet.data.agnostic import register_agnostic_view

    view = register_agnostic_view(mini_world.names["val"])
    metrics = pretrain_backbone(_setup(cfg, view, 1), str(tmp_path / "b.pth"))
    assert metrics["classes"] > 1
