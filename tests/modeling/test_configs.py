"""The model's YAML configs load with dpsnet's keys; the quick schedules train and evaluate."""

from pathlib import Path

import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from dpsnet.engine import Trainer, load_config
from dpsnet.modeling import DPSNet

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODEL_CONFIGS = sorted(
    p
    for folder in ("MiniWorld", "RPC", "D2S", "quick_schedules")
    for p in (CONFIGS / folder).glob("*.yaml")
    if p.name.startswith("dpsnet_")
)
QUICK = sorted((CONFIGS / "quick_schedules").glob("dpsnet_*instant_test.yaml"))


def test_there_are_configs_to_check():
    assert len(MODEL_CONFIGS) >= 6 and len(QUICK) >= 2


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads(path):
    """A stale or misspelt key fails here (load_config rejects unknown keys)."""
    cfg = load_config(str(path))
    assert cfg.MODEL.META_ARCHITECTURE == "DPSNet"
    assert cfg.MODEL.BACKBONE.NAME == "build_dpsnet_resnet_fpn_backbone"
    assert cfg.DATASETS.TRAIN and cfg.DATASETS.TEST


def test_mini_config_builds_a_dpsnet():
    cfg = load_config(
        str(CONFIGS / "MiniWorld" / "dpsnet_R_18_FPN_mini.yaml"), ["MODEL.DEVICE", "cpu"]
    )
    model = build_model(cfg)
    assert isinstance(model, DPSNet) and model.counting_head.num_channels == 1


@pytest.mark.slow
@pytest.mark.parametrize("path", QUICK, ids=lambda p: p.stem)
def test_quick_schedule_trains_and_reports_ap_and_count_error(path, mini_world, tmp_path):
    """Each quick schedule on the test fixture's mini world: train, then evaluate."""
    names = mini_world.names
    cfg = load_config(
        str(path),
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.ROI_HEADS.NUM_CLASSES", len(MetadataCatalog.get(names["train"]).thing_classes),
            "DATASETS.TRAIN", f"('{names['train']}',)",
            "DATASETS.TEST", f"('{names['test']}',)",
            "SOLVER.MAX_ITER", 3,
            "OUTPUT_DIR", str(tmp_path),
        ],
    )  # fmt: skip
    trainer = Trainer(cfg)
    trainer.train()
    assert (tmp_path / "model_final.pth").is_file()
    for p in trainer.model.parameters():
        assert torch.isfinite(p).all()
    metrics = Trainer.test(cfg, trainer.model)["rpc"]
    assert {"mAP50", "mmAP", "count/total_MAE", "cAcc"} <= set(metrics)
    assert metrics["num_images"] == mini_world.counts["test"]["images"]
    assert metrics["count/total_MAE"] >= 0
