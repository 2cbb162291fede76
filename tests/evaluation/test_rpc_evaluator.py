"""RPCEvaluator on a throwaway registered dataset: outputs, counts, files, config, errors."""

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from dpsnet import add_dpsnet_config
from dpsnet.evaluation import RPCEvaluator, RPCGroundTruth
from dpsnet.evaluation.rpc_report import evaluate_files
from dpsnet.utils.io import BadInputError


@pytest.fixture()
def dataset(tmp_path, small_gt):
    """A registered RPC-style dataset (json_file in tmp); removed afterwards."""
    name = f"_test_rpc_eval_{uuid.uuid4().hex[:8]}"
    json_file = tmp_path / "instances_test.json"
    json_file.write_text(json.dumps(small_gt))
    id_map = {c["id"]: i for i, c in enumerate(small_gt["categories"])}
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(
        json_file=str(json_file),
        evaluator_type="rpc",
        thing_classes=[c["name"] for c in small_gt["categories"]],
        thing_dataset_id_to_contiguous_id=id_map,
        supercategory_names=["super_0", "super_1", "super_2"],
        thing_supercategory_ids=[i % 3 for i in range(12)],
    )
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _outputs(gt_dict, results, counts_fn=None):
    """detectron2-style (inputs, outputs) from COCO results (XYWH -> XYXY, id -> contiguous)."""
    per_image = {img["id"]: [] for img in gt_dict["images"]}
    for d in results:
        per_image[d["image_id"]].append(d)
    pairs = []
    for image_id, dets in per_image.items():
        inst = Instances((600, 600))
        xywh = torch.tensor([d["bbox"] for d in dets], dtype=torch.float32).reshape(-1, 4)
        inst.pred_boxes = Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1))
        inst.scores = torch.tensor([d["score"] for d in dets], dtype=torch.float32)
        inst.pred_classes = torch.tensor([d["category_id"] - 1 for d in dets], dtype=torch.int64)
        out = {"instances": inst}
        if counts_fn is not None:
            out["counts"] = counts_fn(image_id)
        pairs.append(({"image_id": image_id}, out))
    return pairs


def _run(evaluator, pairs, batch=4):
    evaluator.reset()
    for i in range(0, len(pairs), batch):
        chunk = pairs[i : i + batch]
        evaluator.process([p[0] for p in chunk], [p[1] for p in chunk])
    return evaluator.evaluate()


def test_evaluator_matches_file_evaluation_and_writes_outputs(
    dataset, small_gt, small_results, tmp_path
):
    out_dir = tmp_path / "eval"
    ev = RPCEvaluator(dataset, str(out_dir), score_threshold=0.6)
    metrics = _run(ev, _outputs(small_gt, small_results))["rpc"]
    for level in ("", "easy/", "medium/", "hard/"):
        for key in ("cAcc", "ACD", "mCCD", "mCIoU", "mAP50", "mmAP", "num_images"):
            assert level + key in metrics
        assert "search/" + level + "threshold" in metrics
    assert metrics["num_images"] == 45 and metrics["score_threshold"] == 0.6
    assert not any(k.startswith("count/") for k in metrics)

    written = json.loads((out_dir / "rpc_metrics.json").read_text())
    assert written["metrics"] == pytest.approx(metrics)
    # Which receipts are exactly right, per image id, beside it (not inside it).
    assert "per_image" not in written
    per_image = json.loads((out_dir / "rpc_per_image.json").read_text())
    assert per_image["threshold"] == 0.6
    assert sorted(per_image["image_ids"]) == sorted(im["id"] for im in small_gt["images"])
    assert np.mean(per_image["exact"]) * 100 == pytest.approx(metrics["cAcc"])
    assert written["categories"]["most_miscounted"] and written["categories"]["most_confused"]
    md = (out_dir / "rpc_metrics.md").read_text()
    assert "| averaged | 45 |" in md and "Most confused categories" in md
    # The results file it wrote evaluates to the same figures (float32 scores round-trip).
    again = evaluate_files(
        out_dir / "coco_instances_results.json", ev._metadata.json_file, score_threshold=0.6
    )["metrics"]
    assert again == pytest.approx(metrics)


@pytest.mark.parametrize("channels", [1, 3, 12])
def test_counting_view_metrics(dataset, small_gt, small_results, channels):
    gt = RPCGroundTruth.from_dict(small_gt)
    true = gt.counts()  # (N, 12), rows in file order == image id order here
    groups = {1: np.zeros(12, int), 3: np.arange(12) % 3, 12: np.arange(12)}[channels]
    per_channel = np.zeros((gt.num_images, channels))
    np.add.at(per_channel.T, groups, true.T)
    row = {int(i): r for r, i in enumerate(gt.image_ids)}

    def perfect_but_image_1(image_id):  # exact counts, except one item too many on image 1
        c = per_channel[row[image_id]].copy()
        c[0] += 1.3 if image_id == 1 else 0.3
        return torch.tensor(c, dtype=torch.float32)

    ev = RPCEvaluator(dataset, None, compute_map=False, search_threshold=False)
    metrics = _run(ev, _outputs(small_gt, small_results, perfect_but_image_1))["rpc"]
    assert metrics["count/total_acc"] == pytest.approx(100 * 44 / 45)
    assert metrics["count/total_MAE"] == pytest.approx((0.3 * 44 + 1.3) / 45, rel=1e-6)
    assert "count/easy/total_MAE" in metrics and "count/agree" in metrics
    key = {1: None, 3: "count/super_cAcc", 12: "count/cAcc"}[channels]
    if key:
        assert metrics[key] == pytest.approx(100 * 44 / 45)
    assert not any(k.startswith("search/") for k in metrics) and "mAP50" not in metrics


def test_multi_level_counting_view_is_evaluated_on_its_finest_level(
    dataset, small_gt, small_results
):
    """LEVELS ["total", "supercategory", "category"]: 1 + 3 + 12 channels; the category level."""
    gt = RPCGroundTruth.from_dict(small_gt)
    true = gt.counts().astype(float)
    row = {int(i): r for r, i in enumerate(gt.image_ids)}

    def counts(image_id):  # categories exact but image 1 (+1); total and supercategories wrong
        c = true[row[image_id]].copy()
        c[0] += 1.0 if image_id == 1 else 0.0
        return torch.tensor([50.0, 7.0, 7.0, 7.0, *c], dtype=torch.float32)

    levels = ["total", "supercategory", "category"]
    ev = RPCEvaluator(dataset, None, compute_map=False, search_threshold=False, count_levels=levels)
    metrics = _run(ev, _outputs(small_gt, small_results, counts))["rpc"]
    assert metrics["count/total_MAE"] == pytest.approx(1 / 45)
    assert metrics["count/cAcc"] == pytest.approx(100 * 44 / 45)
    ev = RPCEvaluator(dataset, None, compute_map=False, count_levels=["total", "category"])
    with pytest.raises(ValueError, match="16 count channels.*do not fit"):
        _run(ev, _outputs(small_gt, small_results, counts))


def test_count_channels_must_match_metadata(dataset, small_gt, small_results):
    ev = RPCEvaluator(dataset, None, compute_map=False)
    pairs = _outputs(small_gt, small_results, lambda i: torch.zeros(5))
    with pytest.raises(ValueError, match="5 count channels.*12 categories and 3 supercategories"):
        _run(ev, pairs)


def test_from_config_and_records_fallback(dataset, small_gt, small_results):
    cfg = get_cfg()
    add_dpsnet_config(cfg)
    cfg.TEST.RPC.SCORE_THRESHOLD = 0.7
    cfg.TEST.RPC.COMPUTE_MAP = False
    cfg.TEST.RPC.LEVELS = ["easy"]
    with_json = _run(RPCEvaluator.from_config(cfg, dataset), _outputs(small_gt, small_results))[
        "rpc"
    ]
    assert with_json["score_threshold"] == 0.7 and "medium/cAcc" not in with_json
    assert "easy/cAcc" in with_json and "cAcc" in with_json and "mAP50" not in with_json

    # Without json_file the ground truth comes from the dataset's records (contiguous ids).
    meta = MetadataCatalog.get(dataset)
    id_map = meta.thing_dataset_id_to_contiguous_id
    anns = {img["id"]: [] for img in small_gt["images"]}
    for a in small_gt["annotations"]:
        anns[a["image_id"]].append(
            {"bbox": a["bbox"], "bbox_mode": 1, "category_id": id_map[a["category_id"]]}
        )
    records = [
        {"image_id": img["id"], "level": img["level"], "annotations": anns[img["id"]]}
        for img in small_gt["images"]
    ]
    DatasetCatalog.remove(dataset)
    DatasetCatalog.register(dataset, lambda: records)
    Path(meta.json_file).unlink()
    from_records = _run(RPCEvaluator.from_config(cfg, dataset), _outputs(small_gt, small_results))[
        "rpc"
    ]
    assert from_records == pytest.approx(with_json)


def test_unknown_image_and_gathering(dataset, small_gt, small_results, monkeypatch):
    ev = RPCEvaluator(dataset, None, compute_map=False)
    pairs = _outputs(small_gt, small_results)
    pairs[3][0]["image_id"] = 4242
    with pytest.raises(BadInputError, match="model outputs: entry 3 names image_id 4242"):
        _run(ev, pairs)

    # Two "processes": rank 0 gathers both halves (one image duplicated by sampler padding).
    pairs = _outputs(small_gt, small_results)
    alone = _run(RPCEvaluator(dataset, None, compute_map=False, distributed=False), pairs)
    ev = RPCEvaluator(dataset, None, compute_map=False)
    ev.reset()
    ev.process([p[0] for p in pairs[:25]], [p[1] for p in pairs[:25]])
    other = RPCEvaluator(dataset, None, compute_map=False)
    other.reset()
    other.process([p[0] for p in pairs[24:]], [p[1] for p in pairs[24:]])
    from detectron2.utils import comm

    monkeypatch.setattr(comm, "gather", lambda data, dst=0: [data, other._predictions])
    assert ev.evaluate() == alone
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    assert ev.evaluate() == {}
