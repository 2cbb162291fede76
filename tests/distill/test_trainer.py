"""The student's train loader: a round whose teacher accepted nothing still trains."""

import itertools
import json

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
