"""RPCEvaluator on the datasets engineer's mini world, through its registered names."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from dpsnet.evaluation import RPCEvaluator


def _perfect_outputs(records, num_supers, super_ids):
    """Outputs that reproduce each record's boxes, and exact per-supercategory counts."""
    pairs = []
    for r in records:
        anns = r["annotations"]
        boxes = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        inst = Instances((r["height"], r["width"]))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        counts = np.bincount([super_ids[a["category_id"]] for a in anns], minlength=num_supers)
        pairs.append(
            ({"image_id": r["image_id"]}, {"instances": inst, "counts": torch.tensor(counts)})
        )
    return pairs


@pytest.mark.parametrize("split", ["test", "test_easy"])
def test_perfect_predictions_on_mini_world(mini_world, split):
    name = mini_world.names[split]
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "rpc"
    records = DatasetCatalog.get(name)
    supers = len(meta.supercategory_names)
    pairs = _perfect_outputs(records, supers, meta.thing_supercategory_ids)
    ev = RPCEvaluator(name, None)
    ev.reset()
    for inp, out in pairs:
        ev.process([inp], [out])
    metrics = ev.evaluate()["rpc"]
    assert metrics["num_images"] == len(records)
    assert metrics["cAcc"] == 100 and metrics["ACD"] == 0 and metrics["search/cAcc"] == 100
    assert metrics["mAP50"] == pytest.approx(100)
    assert metrics["count/total_acc"] == 100
    if supers > 1 and supers != len(meta.thing_classes):
        assert metrics["count/super_cAcc"] == 100
    levels = {r["level"] for r in records}
    for level in ("easy", "medium", "hard"):
        assert (f"{level}/cAcc" in metrics) == (level in levels)
