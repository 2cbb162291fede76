"""The student's train loader: an empty pseudo set; the strong view of pseudo-labelled images."""

import itertools
import json

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from dpsnet.distill.labeller import register_pseudo_labels
from dpsnet.distill.trainer import DistillTrainer
from dpsnet.engine import load_config


def test_empty_pseudo_set_trains_on_synthesized_only(mini_world, tmp_path, caplog):
    empty = tmp_path / "pseudo_r1.json"
    categories = json.loads((mini_world.root / "instances_train2019.json").read_text())
    empty.write_text(
        json.dumps({"images": [], "annotations": [], "categories": categories["categories"]})
    )
    train = mini_world.names["val"]  # stands in for the synthesized scenes
    register_pseudo_labels("pseudo_empty_test", str(empty), MetadataCatalog.get(train))
    cfg = load_config(
        None,
        [
            "DATASETS.TRAIN", f"('{train}', 'pseudo_empty_test')",
            "DATALOADER.NUM_WORKERS", "0",
            "SOLVER.IMS_PER_BATCH", "2",
            "INPUT.MIN_SIZE_TRAIN", "(96,)",
            "MODEL.ROI_HEADS.NUM_CLASSES", str(mini_world.sizes["num_products"]),
        ],
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        loader = DistillTrainer.build_train_loader(cfg)
    assert "pseudo_empty_test: no pseudo-labelled image" in caplog.text
    val_files = {r["file_name"] for r in DatasetCatalog.get(train)}
    for batch in itertools.islice(loader, 3):
        assert len(batch) == 2
        assert all(x["file_name"] in val_files for x in batch)


def _strong_view_cfg(mini_world, tmp_path, name, augment, *opts):
    """The val split twice: as the synthesized scenes and as a pseudo-labelled set."""
    val = json.loads((mini_world.root / "instances_val2019.json").read_text())
    folder = mini_world.root / "val2019"
    for im in val["images"]:  # pseudo-label JSONs carry absolute file names
        im["file_name"] = str(folder / im["file_name"])
    pseudo = tmp_path / f"{name}.json"
    pseudo.write_text(json.dumps(val))
    train = mini_world.names["val"]
    register_pseudo_labels(name, str(pseudo), MetadataCatalog.get(train))
    return load_config(
        None,
        [
            "DATASETS.TRAIN", f"('{train}', '{name}')",
            "DATALOADER.NUM_WORKERS", "0",
            "SOLVER.IMS_PER_BATCH", "4",
            "INPUT.MIN_SIZE_TRAIN", "(96,)",
            "INPUT.RANDOM_FLIP", "none",
            "MODEL.ROI_HEADS.NUM_CLASSES", str(mini_world.sizes["num_products"]),
            "MODEL.META_ARCHITECTURE", "DPSNet",
            "DISTILL.PSEUDO_AUGMENT", augment,
            *opts,
        ],
    )  # fmt: skip


def test_pseudo_augment_perturbs_only_the_pseudo_labelled_images(mini_world, tmp_path):
    from dpsnet.engine import build_mapper

    cfg = _strong_view_cfg(mini_world, tmp_path, "pseudo_strong_test", "['InvertImg(p=1.0)']")
    plain = build_mapper(cfg, True)
    by_file = {r["file_name"]: r for r in DatasetCatalog.get(mini_world.names["val"])}
    seen = {True: 0, False: 0}
    for batch in itertools.islice(DistillTrainer.build_train_loader(cfg), 4):
        for x in batch:
            pseudo = bool(x.get("distill_pseudo"))
            ref = plain(by_file[x["file_name"]])["image"]
            assert x["image"].shape == ref.shape
            expected = 255 - ref if pseudo else ref
            assert (x["image"].int() - expected.int()).abs().max() <= 1
            assert len(x["instances"]) == len(by_file[x["file_name"]]["annotations"])
            assert torch.equal(x["density"], plain(by_file[x["file_name"]])["density"])
            seen[pseudo] += 1
    assert seen[True] and seen[False]  # MIX_RATIO 1:1 draws both


def test_pseudo_augment_bad_transform_names_the_key(mini_world, tmp_path):
    import pytest

    cfg = _strong_view_cfg(mini_world, tmp_path, "pseudo_bad_test", "['Rotate(limit=10)']")
    with pytest.raises(ValueError, match="DISTILL.PSEUDO_AUGMENT"):
        DistillTrainer.build_train_loader(cfg)


def test_pseudo_instances_are_marked_without_pseudo_box_regression(mini_world, tmp_path):
    cfg = _strong_view_cfg(
        mini_world, tmp_path, "pseudo_noreg_test", "[]", "DISTILL.PSEUDO_BOX_REGRESSION", "False"
    )
    seen = {True: 0, False: 0}
    for batch in itertools.islice(DistillTrainer.build_train_loader(cfg), 4):
        for x in batch:
            pseudo = bool(x.get("distill_pseudo"))
            inst = x["instances"]
            assert inst.has("gt_pseudo") == pseudo
            if pseudo:
                assert inst.gt_pseudo.all() and len(inst.gt_pseudo) == len(inst)
            seen[pseudo] += 1
    assert seen[True] and seen[False]
    # The default regresses onto pseudo boxes: nothing is marked.
    cfg = _strong_view_cfg(mini_world, tmp_path, "pseudo_reg_test", "[]")
    batch = next(iter(DistillTrainer.build_train_loader(cfg)))
    assert not any(x["instances"].has("gt_pseudo") for x in batch)
