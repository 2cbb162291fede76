"""Parity with the public RPC evaluation tool (rpctool 0.1.6), and the documented differences.

Figures must agree to the tool's printed precision (and to 1e-6 raw); the searched threshold
must be the very same float. Where the tool departs from the metric's definition (images without
a detection, categories absent from the ground truth, a level without images) we follow the
definition; those tests pin down both behaviours.
"""

import copy

import numpy as np
import pytest

pytest.importorskip("rpctool")
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in divide:RuntimeWarning")

from rpc_oracle import level_gt, printed, tool_count_core, tool_map, tool_search  # noqa: E402

from dpsnet.evaluation import (  # noqa: E402
    CheckoutCounter,
    RPCGroundTruth,
    checkout_metrics,
    evaluate_rpc,
    parse_results,
)

LEVELS = ["easy", "medium", "hard", "averaged"]
PERCENT = {"cAcc", "mCIoU", "mAP50", "mmAP"}


def ours(results, gt_dict, levels=LEVELS):
    gt = RPCGroundTruth.from_dict(gt_dict, "gt")
    dets = parse_results(results, gt, "results")
    return evaluate_rpc(gt, dets, levels=levels, score_threshold=None, search_threshold=True)


def fraction(section, key):
    return section[key] / 100 if key in PERCENT else section[key]


def assert_parity(results, gt_dict, levels=LEVELS):
    report = ours(results, gt_dict, levels)
    for level in levels:
        section = report["levels"][level]
        gt_level = level_gt(gt_dict, level)
        tool = tool_search(results, gt_level)
        assert section["search"]["threshold"] == tool["thre"], level
        for key in ("cAcc", "ACD", "mCCD", "mCIoU"):
            mine = fraction(section["search"], key)
            assert mine == pytest.approx(tool[key], abs=1e-6), (level, key)
            assert printed(key, mine) == printed(key, tool[key]), (level, key)
        tool_ap = tool_map(results, gt_level)
        for key in ("mAP50", "mmAP"):
            mine = fraction(section["map"], key)
            assert mine == pytest.approx(tool_ap[key], abs=1e-12), (level, key)
    return report


def test_parity_noisy_detector_every_level(small_gt, small_results):
    report = assert_parity(small_results, small_gt)
    # A non-trivial case: the search moved off the first grid and the set is not solved.
    assert 0 < report["levels"]["averaged"]["search"]["cAcc"] < 100


def test_parity_perfect_predictions(small_gt):
    results = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
        }
        for a in small_gt["annotations"]
    ]
    report = assert_parity(results, small_gt, ["easy", "averaged"])
    section = report["levels"]["averaged"]
    assert section["search"]["cAcc"] == 100 and section["search"]["ACD"] == 0
    assert section["search"]["mCCD"] == 0 and section["search"]["mCIoU"] == 100
    assert section["map"]["mAP50"] == pytest.approx(100) and section["map"][
        "mmAP"
    ] == pytest.approx(100)
    # Every threshold ties: the search keeps the earliest ones, as pandas' nlargest does.
    assert section["search"]["threshold"] == pytest.approx(0.01)


def test_images_without_prediction_count_here_not_in_rpctool(small_gt, small_results):
    dropped = {1, 2, 3, 20, 44}  # image ids whose every detection is removed
    results = [d for d in small_results if d["image_id"] not in dropped]
    tool = tool_search(results, small_gt)

    # rpctool silently evaluates only the images that have a detection ...
    kept = copy.deepcopy(small_gt)
    kept["images"] = [i for i in kept["images"] if i["id"] not in dropped]
    kept["annotations"] = [a for a in kept["annotations"] if a["image_id"] not in dropped]
    assert_parity(results, kept, ["averaged"])

    # ... while here a missed checkout is a wrong checkout (N = every image).
    gt = RPCGroundTruth.from_dict(small_gt, "gt")
    dets = parse_results(results, gt)
    counter = CheckoutCounter(
        dets.image_index, dets.category_index, dets.score, gt.ann_image, gt.ann_category,
        gt.num_images, gt.num_categories,
    )  # fmt: skip
    full = counter.metrics(tool["thre"])
    n_full, n_kept = gt.num_images, gt.num_images - len(dropped)
    assert full["cAcc"] * n_full == pytest.approx(tool["cAcc"] * n_kept)
    missed_items = sum(a["image_id"] in dropped for a in small_gt["annotations"])
    assert full["ACD"] * n_full == pytest.approx(tool["ACD"] * n_kept + missed_items)
    assert full["cAcc"] < tool["cAcc"]


@pytest.mark.parametrize("absent", [[12], [11, 12]])
def test_categories_absent_from_ground_truth(small_gt, small_results, absent):
    gt_dict = copy.deepcopy(small_gt)
    gt_dict["annotations"] = [a for a in gt_dict["annotations"] if a["category_id"] not in absent]
    results = [d for d in small_results if d["category_id"] not in absent]
    # A confident false positive of category 12 (absent from the ground truth).
    results.append({"image_id": 5, "category_id": 12, "bbox": [1, 1, 50, 50], "score": 0.995})
    tool = tool_search(results, gt_dict)
    section = ours(results, gt_dict, ["averaged"])["levels"]["averaged"]
    assert section["search"]["threshold"] == tool["thre"]
    assert fraction(section["search"], "cAcc") == pytest.approx(tool["cAcc"])
    assert fraction(section["search"], "ACD") == pytest.approx(tool["ACD"])

    # rpctool divides by zero: category 12 has errors but no true item.
    assert not np.isfinite(tool["mCCD"])
    gt = RPCGroundTruth.from_dict(gt_dict)
    dets = parse_results(results, gt)
    pred, true = CheckoutCounter(
        dets.image_index, dets.category_index, dets.score, gt.ann_image, gt.ann_category,
        gt.num_images, gt.num_categories,
    ).dense_counts(tool["thre"])  # fmt: skip
    present = true.sum(0) > 0
    expected_mccd = np.mean(np.abs(pred - true).sum(0)[present] / true.sum(0)[present])
    assert section["search"]["mCCD"] == pytest.approx(expected_mccd)
    union = np.maximum(pred, true).sum(0) > 0
    ciou = np.minimum(pred, true).sum(0)[union] / np.maximum(pred, true).sum(0)[union]
    assert section["search"]["mCIoU"] / 100 == pytest.approx(np.mean(ciou))
    if absent == [12]:
        # Every category is seen or predicted: rpctool's mCIoU is defined and agrees.
        assert section["search"]["mCIoU"] / 100 == pytest.approx(tool["mCIoU"], abs=1e-6)
    else:
        # Category 11 is neither true nor predicted: 0/0 makes rpctool's mCIoU NaN.
        assert np.isnan(tool["mCIoU"])
    # COCO AP skips categories without ground truth in both.
    tool_ap = tool_map(results, gt_dict)
    assert section["map"]["mAP50"] / 100 == pytest.approx(tool_ap["mAP50"], abs=1e-12)


def test_level_without_images(small_gt, small_results):
    gt_dict = copy.deepcopy(small_gt)
    hard = {i["id"] for i in gt_dict["images"] if i["level"] == "hard"}
    gt_dict["images"] = [i for i in gt_dict["images"] if i["id"] not in hard]
    gt_dict["annotations"] = [a for a in gt_dict["annotations"] if a["image_id"] not in hard]
    results = [d for d in small_results if d["image_id"] not in hard]
    with pytest.raises(IndexError):  # rpctool: pred_keys[0] of an empty dict
        tool_search(results, level_gt(gt_dict, "hard"))
    report = ours(results, gt_dict)
    assert report["levels"]["hard"] == {"num_images": 0}
    flat = report["metrics"]
    assert flat["hard/num_images"] == 0 and not any(k.endswith("hard/cAcc") for k in flat)
    assert flat["easy/num_images"] == 15 and "search/easy/cAcc" in flat


def test_count_core_parity_on_random_counts():
    rng = np.random.default_rng(0)
    n, k = 300, 20
    gt = rng.poisson(0.8, size=(n, k))
    pred = np.maximum(gt + rng.integers(-1, 2, size=(n, k)) * (rng.random((n, k)) < 0.1), 0)
    pred[:, 0] += 1  # every image has a prediction, every category a true item (tool's domain)
    gt[0, :] += 1
    as_lists = {
        name: {f"{i}.jpg": [c for c in range(k) for _ in range(int(m[i, c]))] for i in range(n)}
        for name, m in (("pred", pred), ("gt", gt))
    }
    tool = tool_count_core(as_lists["pred"], as_lists["gt"], log=False, K=k)
    mine = checkout_metrics(pred, gt)
    for key in ("cAcc", "ACD", "mCCD", "mCIoU"):
        assert mine[key] == pytest.approx(float(tool[key]), abs=1e-6), key
