"""Every YAML under configs/ loads with dpsnet's keys and builds its model on CPU.

As detectron2's ``tests/test_model_zoo.py`` does for its zoo: a stale or misspelt key, a bad
``_BASE_`` or a model that no longer builds from its config fails here. Loading does not register
``DATASETS.REGISTER`` entries (their files are made by earlier stages); building needs no data.
Configs whose model section is the same build once. Not built: the render jobs (no detection
model); ``DPSNetOpenSet`` pipelines build from the config alone, their trained parts (files the
tools load) left empty: an untrained detector and embedder and an empty gallery. A config whose
model needs a file that is not on this machine (a dataset's categories) is skipped, saying which.
"""

from pathlib import Path

import pytest
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from dpsnet.config import add_dpsnet_config
from dpsnet.data.agnostic import class_agnostic_config
from dpsnet.data.datasets import read_layout_categories
from dpsnet.engine import ConfigError
from dpsnet.recognition import DPSNetOpenSet, ProductEmbedder
from dpsnet.utils.io import BadInputError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def _load(path: Path):
    cfg = get_cfg()
    add_dpsnet_config(cfg)
    cfg.merge_from_file(str(path))
    cfg = class_agnostic_config(cfg)  # as load_config: the agnostic detectors predict one class
    read_layout_categories(cfg)  # as load_config: the tool reads the files, the model builds
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _kind(path: Path) -> str:
    text = path.read_text()
    if path.parent.name == "Render":
        return "render"
    if "_BASE_" not in text and "RECOGNITION:" in text:
        return "embedder"  # recogniser configs: the model is the crop embedder
    return "detector"


def test_every_config_folder_is_covered():
    folders = {p.parent.name for p in CONFIGS}
    assert {"MiniWorld", "RPC", "D2S", "OpenSet", "Render", "quick_schedules"} <= folders
    assert len(CONFIGS) >= 30


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_loads(path):
    cfg = _load(path)
    assert cfg.VERSION == 2


_built: dict[str, type] = {}


@pytest.mark.parametrize(
    "path",
    [p for p in CONFIGS if _kind(p) != "render"],
    ids=lambda p: str(p.relative_to(ROOT / "configs")),
)
def test_config_builds_its_model(path):
    cfg = _load(path)
    if _kind(path) == "embedder":
        model = ProductEmbedder(cfg)
        assert model.embed_dim == cfg.RECOGNITION.EMBEDDER.EMBED_DIM
        return
    if cfg.MODEL.META_ARCHITECTURE == "DPSNetOpenSet":
        r = cfg.RECOGNITION
        r.DETECTOR.CONFIG_FILE = str(ROOT / r.DETECTOR.CONFIG_FILE)
        # The trained parts' files (absent here) are read by the tools, not by build_model.
    key = cfg.MODEL.dump() + str(cfg.RECOGNITION.DETECTOR.CONFIG_FILE)
    if key in _built:  # same model section as a config built before: same model
        assert _built[key].__name__ == cfg.MODEL.META_ARCHITECTURE
        return
    try:
        model = build_model(cfg)
    except (ConfigError, BadInputError) as e:
        # An open-set detector's own config registering data an earlier stage makes, or a
        # counting view sized by the supercategories of a dataset that is not on this machine.
        assert "not found" in str(e), str(e)
        pytest.skip(f"needs files: {e}")
    _built[key] = type(model)
    assert type(model).__name__ == cfg.MODEL.META_ARCHITECTURE
    if isinstance(model, DPSNetOpenSet):
        assert len(model.gallery) == 0
    assert sum(p.numel() for p in model.parameters()) > 0
