"""RECOGNITION.CLASS_AGNOSTIC: every category of any registered dataset becomes one "object"."""

import uuid

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from dpsnet.data.agnostic import OBJECT_CLASS
from dpsnet.engine import load_config
from dpsnet.recognition import class_agnostic_config, make_class_agnostic, register_agnostic_view


def test_make_class_agnostic_copies():
    records = [
        {"file_name": "a", "annotations": [{"category_id": 3}, {"category_id": 7}]},
        {"file_name": "b"},
    ]
    out = make_class_agnostic(records)
    assert [a["category_id"] for a in out[0]["annotations"]] == [0, 0]
    assert records[0]["annotations"][1]["category_id"] == 7  # the source is untouched
    assert "annotations" not in out[1]


def test_view_of_a_registered_dataset(mini_world):
    name = mini_world.names["val"]
    view = register_agnostic_view(name)
    assert view == name + "_agnostic"
    assert register_agnostic_view(name) == view  # idempotent
    assert register_agnostic_view(view) == view
    source, agnostic = DatasetCatalog.get(name), DatasetCatalog.get(view)
    assert len(agnostic) == len(source)
    n_boxes = sum(len(r["annotations"]) for r in source)
    assert n_boxes > 0
    assert sum(len(r["annotations"]) for r in agnostic) == n_boxes
    assert {a["category_id"] for r in agnostic for a in r["annotations"]} == {0}
    assert len({a["category_id"] for r in source for a in r["annotations"]}) > 1
    for r_src, r_view in zip(source, agnostic):
        assert [a["bbox"] for a in r_src["annotations"]] == [
            a["bbox"] for a in r_view["annotations"]
        ]
    meta = MetadataCatalog.get(view)
    assert meta.thing_classes == [OBJECT_CLASS]
    assert meta.evaluator_type == "coco"
    assert meta.agnostic_source == name
    assert not meta.get("json_file")  # COCOEvaluator converts the agnostic dicts itself


def test_view_of_a_dataset_registered_later(mini_world):
    """Datasets registered after import (e.g. by DATASETS.REGISTER) get views too; a saved
    config that already names the view rebuilds it in a fresh catalog."""
    from dpsnet.data.datasets import register_checkout_dataset

    name = f"agnostic_late_{uuid.uuid4().hex[:6]}"
    register_checkout_dataset(
        name,
        mini_world.root / "instances_test2019.json",
        mini_world.root / "test2019",
    )
    try:
        view = register_agnostic_view(name + "_agnostic")
        assert view == name + "_agnostic"
        assert {a["category_id"] for r in DatasetCatalog.get(view) for a in r["annotations"]} == {0}
    finally:
        for n in (name, name + "_agnostic"):
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_a_view_of_an_unregistered_dataset_fails_when_loaded_naming_it():
    """RPC/D2S configs load where the data is absent; the view fails only when it is read."""
    view = register_agnostic_view("no_such_dataset_xyz")
    assert MetadataCatalog.get(view).thing_classes == [OBJECT_CLASS]
    with pytest.raises(KeyError, match="no_such_dataset_xyz"):
        DatasetCatalog.get(view)


def test_config_key_rewrites_datasets_and_classes(mini_world):
    cfg = load_config(
        None,
        [
            "DATASETS.TRAIN", f"('{mini_world.names['train']}',)",
            "DATASETS.TEST", f"('{mini_world.names['val']}',)",
            "MODEL.ROI_HEADS.NUM_CLASSES", "6",
        ],
    )  # fmt: skip
    assert class_agnostic_config(cfg) is cfg  # off: untouched
    cfg.RECOGNITION.CLASS_AGNOSTIC = True
    cfg.freeze()
    out = class_agnostic_config(cfg)
    assert out.DATASETS.TRAIN == (mini_world.names["train"] + "_agnostic",)
    assert out.DATASETS.TEST == (mini_world.names["val"] + "_agnostic",)
    assert out.MODEL.ROI_HEADS.NUM_CLASSES == 1 and out.MODEL.RETINANET.NUM_CLASSES == 1
    assert out.is_frozen()
    assert cfg.DATASETS.TRAIN == (mini_world.names["train"],)  # the input is not changed


@pytest.mark.parametrize(
    "config", ["faster_rcnn_R_18_FPN_agnostic_mini.yaml", "retinanet_R_18_FPN_agnostic_mini.yaml"]
)
def test_load_config_applies_the_key(config, mini_world):
    """tools/train_net.py reads the agnostic views through load_config."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "configs" / "OpenSet" / config
    cfg = load_config(
        str(path),
        ["DATASETS.TRAIN", f"('{mini_world.names['train']}',)", "DATASETS.TEST", "()"],
    )
    assert cfg.DATASETS.TRAIN == (mini_world.names["train"] + "_agnostic",)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1
