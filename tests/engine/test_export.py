"""tools/export_model.py: a tiny DPSNet exported, its outputs checked against the eager model."""

import importlib.util
import json
import runpy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from dpsnet.data.catalogue import Catalogue
from dpsnet.engine import load_config
from dpsnet.engine.checkpoint import checkpoint_fields

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "quick_schedules" / "dpsnet_R_18_FPN_mini_levels_instant_test.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A randomly initialised 3-product DPSNet saved as dpsnet saves it, and two photos."""
    root = tmp_path_factory.mktemp("export")
    cat = Catalogue([11, 25, 40], ["Senf", "Tee", "Seife"], [0, 0, 1], ["food", "home"])
    cfg = load_config(
        str(CONFIG),
        ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", "3", "DATASETS.TRAIN", "()",
         "DATASETS.TEST", "()", "MODEL.COUNTING_HEAD.LEVELS", '["total", "category"]',
         "MODEL.DPSNET.COUNT_GUIDED.LEVEL", "total"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg)
    weights = root / "model_final.pth"
    torch.save({"model": model.state_dict(), "dpsnet": checkpoint_fields(cfg, cat)}, weights)
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(192, 192), (150, 260)]):
        cv2.imwrite(str(photos / f"tray-{i}.jpg"), rng.integers(0, 255, (*size, 3), np.uint8))
    return weights, photos


def _export(tiny, fmt: str, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    weights, photos = tiny
    tool = runpy.run_path(str(ROOT / "tools" / "export_model.py"), run_name="export_under_test")
    out = tmp_path / f"model.{fmt}"
    argv = ["--weights", str(weights), "--format", fmt, "--output", str(out), *extra,
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.PRECISION", "float32"]  # fmt: skip
    code = tool["main"](argv)
    return code, json.loads(Path(f"{out}.json").read_text())


def test_torchscript_matches_eager_at_any_size(tiny, tmp_path):
    code, report = _export(tiny, "torchscript", tmp_path, "--input", str(tiny[1]))
    check = report["check"]
    assert code == 0 and check["match"] and check["images"] == 2, check
    assert check["max_count_diff"] <= check["tolerance"]["counts"]
    assert report["catalogue"]["names"] == ["Senf", "Tee", "Seife"]
    module = torch.jit.load(report["output"])
    boxes, scores, classes, density, counts = module(torch.rand(3, 160, 224) * 255)
    assert boxes.shape[1] == 4 and counts.shape == (4,)  # total + 3 categories


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None, reason="onnx export needs onnxruntime"
)
def test_onnx_matches_eager_at_its_size(tiny, tmp_path):
    code, report = _export(tiny, "onnx", tmp_path)
    assert code == 0 and report["check"]["match"], report["check"]
