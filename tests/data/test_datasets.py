"""Registrars: records and metadata from generated data, laziness, idempotence, bad input."""

import json
import os
import pickle
import uuid

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from dpsnet.data.datasets import (
    checkout,
    load_checkout_json,
    read_categories,
    register_all,
    register_checkout_dataset,
    register_mini_world,
    unregister_all,
    unregister_dataset,
)
from dpsnet.utils.io import BadInputError


def _unique(tag):
    return f"test_{tag}_{uuid.uuid4().hex[:8]}"


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def _tiny_json(tmp_path, images=None, annotations=None, categories=None):
    return _write(
        tmp_path / "tiny.json",
        {
            "categories": categories
            or [
                {"id": 7, "name": "b", "supercategory": "cans"},
                {"id": 3, "name": "a", "supercategory": "boxes"},
                {"id": 9, "name": "c", "supercategory": "cans"},
            ],
            "images": images
            or [
                {"id": 1, "file_name": "x.jpg", "width": 50, "height": 40, "level": "hard"},
                {"id": 2, "file_name": "y.jpg", "width": 50, "height": 40},
            ],
            "annotations": annotations
            if annotations is not None
            else [
                {"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 2, 3, 4], "iscrowd": 0,
                 "segmentation": [[]]},
                {"id": 2, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10],
                 "segmentation": [[5, 5, 15, 5, 15, 15]]},
            ],
        },
    )  # fmt: skip


def test_mini_world_records_match_the_generator(mini_world):
    names, counts = mini_world.names, mini_world.counts
    for split in ("train", "val", "test"):
        records = DatasetCatalog.get(names[split])
        assert len(records) == counts[split]["images"]
        assert sum(len(r["annotations"]) for r in records) == counts[split]["instances"]
        for level in ("easy", "medium", "hard") if split != "train" else ():
            sub = DatasetCatalog.get(names[f"{split}_{level}"])
            assert {r["level"] for r in sub} == {level}
            assert len(sub) == counts[split]["per_level"][level]["images"]
            n = sum(len(r["annotations"]) for r in sub)
            assert n == counts[split]["per_level"][level]["instances"]
    r = DatasetCatalog.get(names["test"])[0]
    assert {"file_name", "height", "width", "image_id", "level", "annotations"} <= set(r)
    assert os.path.isfile(r["file_name"])
    a = r["annotations"][0]
    assert a["bbox_mode"] == BoxMode.XYWH_ABS and len(a["bbox"]) == 4
    assert 0 <= a["category_id"] < 6
    assert all(rec["level"] is None for rec in DatasetCatalog.get(names["train"]))
    pool = DatasetCatalog.get(names["pool"])
    assert len(pool) == counts["pool"]["images"] and all(not p["annotations"] for p in pool)


def test_metadata_keys_and_class_order(mini_world):
    train = json.loads(mini_world.paths["train_json"].read_text())
    cats = sorted(train["categories"], key=lambda c: c["id"])
    for key in ("train", "test_hard", "pool", "d2s_validation"):
        meta = MetadataCatalog.get(mini_world.names[key])
        assert meta.thing_classes == [c["name"] for c in cats]
        assert meta.thing_dataset_id_to_contiguous_id == {c["id"]: i for i, c in enumerate(cats)}
        supers = meta.supercategory_names
        assert [supers[i] for i in meta.thing_supercategory_ids] == [
            c["supercategory"] for c in cats
        ]
        assert os.path.isfile(meta.json_file) and os.path.isdir(meta.image_root)
    assert MetadataCatalog.get(mini_world.names["test"]).evaluator_type == "rpc"
    assert MetadataCatalog.get(mini_world.names["test_hard"]).level == "hard"
    assert MetadataCatalog.get(mini_world.names["train"]).evaluator_type == "coco"
    assert MetadataCatalog.get(mini_world.names["pool"]).evaluator_type is None
    # Picklable (DataLoader workers), with the lazily read keys included.
    meta = pickle.loads(pickle.dumps(MetadataCatalog.get(mini_world.names["val"])))
    assert meta.thing_classes == [c["name"] for c in cats]


def test_d2s_records_carry_masks_and_capture(mini_world):
    from pycocotools import mask as mask_utils

    records = DatasetCatalog.get(mini_world.names["d2s_validation"])
    r = records[0]
    assert r["d2s_scene"] == r["image_id"] // 100 and r["d2s_rotation"] == r["image_id"] % 10
    for a in r["annotations"]:
        rle = a["segmentation"]
        assert isinstance(rle, dict) and mask_utils.area(rle) > 0


def test_registration_is_lazy_and_idempotent(tmp_path):
    prefix = _unique("lazy")
    names = register_mini_world(tmp_path / "nothing_here", prefix)  # reads nothing: no error
    try:
        assert register_mini_world(tmp_path / "nothing_here", prefix) == names  # no raise
        with pytest.raises(BadInputError, match="nothing_here.*not found"):
            DatasetCatalog.get(names["test"])
        with pytest.raises(BadInputError, match="instances_train2019.json"):
            _ = MetadataCatalog.get(names["test"]).thing_classes
    finally:
        unregister_all(names)
    assert names["test"] not in DatasetCatalog.list()
    register_all()  # the built-in names again, as at import: no "already registered"
    assert "mini_rpc_test_easy" in DatasetCatalog.list()


def test_rpc_and_d2s_names_under_a_datasets_root(mini_world, tmp_path):
    (tmp_path / "rpc").symlink_to(mini_world.root)
    (tmp_path / "d2s").symlink_to(mini_world.root / "d2s")
    try:
        names = register_all(tmp_path)
        assert names["rpc"]["test_medium"] == "rpc_2019_test_medium"
        records = DatasetCatalog.get("rpc_2019_test_medium")
        assert len(records) == mini_world.counts["test"]["per_level"]["medium"]["images"]
        assert MetadataCatalog.get("rpc_2019_val").evaluator_type == "rpc"
        d2s = DatasetCatalog.get("d2s_training")
        assert len(d2s) == mini_world.counts["d2s_training"]["images"]
        assert "d2s_test_info" in names["d2s"].values()
    finally:
        register_all()  # back to $DPSNET_DATASETS


def test_register_checkout_dataset_own_data(tmp_path):
    name = _unique("own")
    json_file = _tiny_json(tmp_path)
    register_checkout_dataset(name, json_file, tmp_path, metadata={"note": "mine"})
    try:
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["a", "b", "c"]  # sorted by category id
        assert meta.thing_supercategory_ids == [0, 1, 1]
        assert meta.supercategory_names == ["boxes", "cans"]
        assert meta.note == "mine" and meta.evaluator_type == "rpc"
        records = DatasetCatalog.get(name)
        assert [r["level"] for r in records] == ["hard", None]
        first, second = records[0]["annotations"]
        assert first["category_id"] == 2 and "segmentation" not in first  # RPC's [[]] dropped
        assert second["category_id"] == 0 and second["segmentation"] == [[5, 5, 15, 5, 15, 15]]
        register_checkout_dataset(name, json_file, tmp_path, level="hard")  # replaces, no raise
        assert [r["image_id"] for r in DatasetCatalog.get(name)] == [1]
        assert MetadataCatalog.get(name).get("note") is None
    finally:
        unregister_dataset(name)


@pytest.mark.parametrize(
    "images, annotations, message",
    [
        (None, [{"id": 1, "image_id": 5, "category_id": 3, "bbox": [0, 0, 1, 1]}], "image id"),
        (None, [{"id": 1, "image_id": 1, "category_id": 4, "bbox": [0, 0, 1, 1]}], "category"),
        ([{"id": 1, "file_name": "x", "width": 5, "height": 5, "level": "tricky"}], [], "level"),
        ([{"id": 1, "file_name": "x", "width": 5, "height": 5}] * 2, [], "duplicate image"),
    ],
)
def test_loader_rejects_bad_input_naming_the_file(tmp_path, images, annotations, message):
    json_file = _tiny_json(tmp_path, images=images, annotations=annotations)
    with pytest.raises(BadInputError, match=f"tiny.json.*{message}"):
        load_checkout_json(json_file, tmp_path)


def test_loader_drops_zero_size_boxes_and_reads_categories_fast(tmp_path, monkeypatch):
    ann = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 0, 4]}]
    json_file = _tiny_json(tmp_path, annotations=ann)
    assert load_checkout_json(json_file, tmp_path)[0]["annotations"] == []
    monkeypatch.setattr(checkout, "_FAST_SCAN_BYTES", 0)  # use the targeted scan
    assert [c["id"] for c in read_categories(json_file)] == [7, 3, 9]
