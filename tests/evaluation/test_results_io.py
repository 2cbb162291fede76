"""Reading ground truth and results: every bad input names the problem and the first bad entry."""

import copy

import numpy as np
import pytest
from detectron2.data import Metadata

from dpsnet.evaluation import RPCGroundTruth, parse_results
from dpsnet.utils.io import BadInputError


@pytest.fixture(scope="module")
def gt(small_gt):
    return RPCGroundTruth.from_dict(small_gt, "instances_test.json")


GOOD = {"image_id": 1, "category_id": 2, "bbox": [1.0, 2.0, 30.0, 40.0], "score": 0.9}


def _with(entry_index, **changes):
    results = [dict(GOOD) for _ in range(5)]
    entry = results[entry_index]
    for key, value in changes.items():
        if value is KeyError:
            del entry[key]
        else:
            entry[key] = value
    return results


@pytest.mark.parametrize(
    "results, pattern",
    [
        ({"annotations": []}, r"expected a list of detections.*got dict"),
        (_with(3, score=KeyError), r"entry 3 misses key\(s\) score"),
        (_with(2, bbox=KeyError, image_id=KeyError), r"entry 2 misses key\(s\) image_id, bbox"),
        (_with(1, score=float("nan")), r"entry 1 has a non-finite score \(nan\)"),
        (_with(4, score="0.5"), r"entry 4 has a non-numeric score"),
        (_with(2, bbox=[1, 2, 3]), r"entry 2 has a malformed bbox"),
        (_with(2, bbox=[1, 2, float("inf"), 3]), r"entry 2 has a non-finite or negative-size"),
        (_with(3, bbox=[1, 2, -5, 3]), r"entry 3 has a non-finite or negative-size"),
        (_with(1, image_id="7"), r"entry 1 has a non-integer image_id"),
        ([GOOD, 5, GOOD], r"entry 1 is not an object"),
        (_with(3, image_id=99999) + _with(0, image_id=88888), r"entry 3 names image_id 99999, "
         r"which is not in instances_test.json \(2 entries name unknown image_ids\)"),
        (_with(2, category_id=13), r"entry 2 names category_id 13, which is not in"),
    ],
)  # fmt: skip
def test_bad_results_name_problem_and_first_entry(gt, results, pattern):
    with pytest.raises(BadInputError, match=r"^results\.json: .*" + pattern):
        parse_results(results, gt, source="results.json")


def test_results_round_trip(gt, small_results):
    dets = parse_results(small_results, gt)
    assert len(dets) == len(small_results)
    assert dets.to_coco_results(gt)[:50] == [
        {k: d[k] for k in ("image_id", "category_id", "bbox", "score")} for d in small_results[:50]
    ]
    # numpy scalars (results built in memory) are accepted too
    mixed = [
        dict(d, score=np.float32(d["score"]), image_id=np.int64(d["image_id"]))
        for d in small_results[:5]
    ]
    assert len(parse_results(mixed, gt)) == 5
    assert len(parse_results([], gt)) == 0


def test_bad_ground_truth(small_gt):
    with pytest.raises(BadInputError, match=r"gt.json: missing or malformed 'annotations'"):
        RPCGroundTruth.from_dict({"images": [], "categories": []}, "gt.json")
    bad = copy.deepcopy(small_gt)
    bad["annotations"][7]["image_id"] = 12345
    with pytest.raises(BadInputError, match=r"gt.json annotations: entry 7 names image_id 12345"):
        RPCGroundTruth.from_dict(bad, "gt.json")
    bad = copy.deepcopy(small_gt)
    bad["images"][3]["id"] = bad["images"][2]["id"]
    with pytest.raises(BadInputError, match=r"duplicate image id"):
        RPCGroundTruth.from_dict(bad, "gt.json")
    bad = copy.deepcopy(small_gt)
    del bad["annotations"][4]["bbox"]
    with pytest.raises(
        BadInputError, match=r"annotations\[4\] needs image_id, category_id and bbox"
    ):
        RPCGroundTruth.from_dict(bad, "gt.json")


def test_from_records_matches_from_dict(small_gt, gt):
    from detectron2.structures import BoxMode

    # Category ids 1..12 -> contiguous 0..11; records in XYXY to exercise the conversion.
    id_map = {c["id"]: i for i, c in enumerate(small_gt["categories"])}
    by_image = {}
    for a in small_gt["annotations"]:
        x, y, w, h = a["bbox"]
        by_image.setdefault(a["image_id"], []).append(
            {
                "bbox": [x, y, x + w, y + h],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": id_map[a["category_id"]],
            }
        )
    records = [
        {
            "image_id": img["id"],
            "file_name": img["file_name"],
            "level": img["level"],
            "annotations": by_image.get(img["id"], []),
        }  # fmt: skip
        for img in small_gt["images"]
    ]
    meta = Metadata(
        thing_classes=[c["name"] for c in small_gt["categories"]],
        thing_dataset_id_to_contiguous_id=id_map,
        supercategory_names=["super_0", "super_1", "super_2"],
        thing_supercategory_ids=[i % 3 for i in range(12)],
    )
    from_records = RPCGroundTruth.from_records(records, meta)
    np.testing.assert_array_equal(from_records.counts(), gt.counts())
    np.testing.assert_allclose(from_records.ann_bbox, gt.ann_bbox, atol=1e-9)
    assert from_records.levels == gt.levels
    assert from_records.supercategories == gt.supercategories
