"""DATASETS.REGISTER: datasets on disk named by a config, registered by load_config."""

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from dpsnet.engine import ConfigError, load_config


def test_register_entries_are_loadable(mini_world):
    root = mini_world.root
    entry = [
        "cfg_registered_test",
        str(root / "instances_test2019.json"),
        str(root / "test2019"),
        str(root / "instances_train2019.json"),
    ]
    cfg = load_config(None, ["DATASETS.REGISTER", repr([entry])])
    assert cfg.DATASETS.REGISTER == [entry]
    records = DatasetCatalog.get("cfg_registered_test")
    assert len(records) == mini_world.counts["test"]["images"]
    meta = MetadataCatalog.get("cfg_registered_test")
    train_meta = MetadataCatalog.get(mini_world.names["train"])
    assert meta.thing_classes == train_meta.thing_classes
    # loading again replaces the registration instead of raising
    load_config(None, ["DATASETS.REGISTER", repr([entry])])


@pytest.mark.parametrize(
    "entry, message",
    [
        (["only_name", "x.json"], "entries are [name, json_file, image_root"),
        (["n", "/nonexistent/a.json", "/tmp"], "json file not found: /nonexistent/a.json"),
    ],
)
def test_bad_register_entries(entry, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(None, ["DATASETS.REGISTER", repr([entry])])


def test_missing_image_folder(mini_world):
    entry = ["n", str(mini_world.root / "instances_test2019.json"), "/nonexistent/images"]
    with pytest.raises(ConfigError, match="image folder not found: /nonexistent/images"):
        load_config(None, ["DATASETS.REGISTER", repr([entry])])
