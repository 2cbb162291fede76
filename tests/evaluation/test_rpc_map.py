"""mAP: our per-subset accumulation equals pycocotools run on each subset alone."""

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dpsnet.evaluation import RPCGroundTruth, parse_results
from dpsnet.evaluation.rpc_map import coco_map


def _plain_pycocotools(gt_dict, results):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt_dict)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"mmAP": ev.stats[0], "mAP50": ev.stats[1]}


def test_subset_accumulation_equals_separate_runs(small_gt, small_results):
    # Coarse scores: many ties across images, so the tie order must match too.
    results = [dict(d, score=round(d["score"], 1)) for d in small_results]
    gt = RPCGroundTruth.from_dict(small_gt)
    dets = parse_results(results, gt)
    levels = np.array(gt.levels)
    subsets = {"averaged": np.arange(gt.num_images), "hard": np.flatnonzero(levels == "hard")}
    ours = coco_map(gt, dets, subsets)
    for name, rows in subsets.items():
        keep_ids = set(gt.image_ids[rows].tolist())
        sub = dict(small_gt)
        sub["images"] = [i for i in small_gt["images"] if i["id"] in keep_ids]
        sub["annotations"] = [a for a in small_gt["annotations"] if a["image_id"] in keep_ids]
        plain = _plain_pycocotools(sub, [d for d in results if d["image_id"] in keep_ids])
        assert ours[name]["mmAP"] == pytest.approx(plain["mmAP"], abs=1e-12), name
        assert ours[name]["mAP50"] == pytest.approx(plain["mAP50"], abs=1e-12), name
    assert 0.3 < ours["averaged"]["mmAP"] < 0.99


def test_no_detections_and_no_boxes(small_gt):
    gt = RPCGroundTruth.from_dict(small_gt)
    dets = parse_results([], gt)
    out = coco_map(gt, dets, {"averaged": np.arange(gt.num_images), "none": np.zeros(0, int)})
    assert out["averaged"] == {"mAP50": 0.0, "mmAP": 0.0}
    assert np.isnan(out["none"]["mAP50"])
