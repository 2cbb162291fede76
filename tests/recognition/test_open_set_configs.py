"""Every open-set YAML loads with dpsnet's keys (a stale key fails here); configs that name
datasets on disk (DATASETS.REGISTER) fail with one clear line where those files are absent."""

from pathlib import Path

import pytest

from dpsnet.engine import ConfigError, load_config

CONFIGS = sorted(
    p
    for p in (Path(__file__).resolve().parents[2] / "configs" / "OpenSet").glob("*.yaml")
    if not p.name.startswith("Base-")
)


def test_there_are_configs():
    names = {p.stem.split("_")[0] for p in CONFIGS}
    assert {"faster", "retinanet", "recognizer", "openset"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads(path):
    try:
        cfg = load_config(str(path))
    except ConfigError as e:
        # Only a config naming generated data may fail, and then because the data is absent.
        assert "REGISTER" in path.read_text() and "not found" in str(e), str(e)
        return
    if path.name.startswith(("faster_rcnn", "retinanet")):
        assert cfg.RECOGNITION.CLASS_AGNOSTIC
        assert all(n.endswith("_agnostic") for n in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST))
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1 == cfg.MODEL.RETINANET.NUM_CLASSES
    elif path.name.startswith("openset"):
        assert cfg.MODEL.META_ARCHITECTURE == "DPSNetOpenSet"
        assert not cfg.RECOGNITION.CLASS_AGNOSTIC and cfg.RECOGNITION.DETECTOR.CONFIG_FILE
    elif path.name.startswith(("synth_", "gallery_")):
        assert cfg.SYNTHESIS.COMPOSE.OUTPUT_DIR.startswith("output/openset_")
    else:
        assert cfg.RECOGNITION.TRAIN.DATASETS and cfg.RECOGNITION.TRAIN.VAL_DATASETS


def test_synthesized_scenes_leave_out_exactly_the_held_out_products():
    """configs/OpenSet/synth_known_mini.yaml excludes the products the mini recogniser holds
    out; were the split's seed or fraction changed, held-out products would reach training."""
    from dpsnet.data.mini_world.build import DEFAULT_SIZES
    from dpsnet.recognition.products import split_products

    root = Path(__file__).resolve().parents[2]
    synth = load_config(str(root / "configs" / "OpenSet" / "synth_known_mini.yaml"))
    products = range(1, DEFAULT_SIZES["num_products"] + 1)  # the mini world's category ids
    for name in ("recognizer_R_18_mini.yaml", "recognizer_R_18_mini_synth.yaml"):
        t = _train_keys(name)
        _, held = split_products(products, t.HOLDOUT_FRACTION, t.SEED)
        assert sorted(synth.SYNTHESIS.COMPOSE.EXCLUDE_CATEGORIES) == held, name
    # The scenes of every product (gallery views) reach the gallery, never training.
    gallery = load_config(str(root / "configs" / "OpenSet" / "gallery_scenes_mini.yaml"))
    assert not gallery.SYNTHESIS.COMPOSE.EXCLUDE_CATEGORIES
    text = (root / "configs" / "OpenSet" / "recognizer_R_18_mini_synth.yaml").read_text()
    assert gallery.SYNTHESIS.COMPOSE.OUTPUT_DIR in text  # registered there ...
    t = _train_keys("recognizer_R_18_mini_synth.yaml")  # ... as a gallery set, not for training
    name = gallery.SYNTHESIS.COMPOSE.DATASET_NAME
    assert name in t.GALLERY_DATASETS and name not in t.DATASETS


def _train_keys(name):
    """RECOGNITION.TRAIN of an OpenSet config, read without the files it registers."""
    path = CONFIGS[0].parent / name
    return load_config(str(path), ["DATASETS.REGISTER", "[]"]).RECOGNITION.TRAIN
