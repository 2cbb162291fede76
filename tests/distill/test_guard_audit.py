"""The leak guard (content hashes) and the pseudo-label audit."""

import shutil

import pytest

from dpsnet.distill.audit import audit_pseudo_labels, box_iou_xywh
from dpsnet.distill.guard import PoolLeakError, check_pool_disjoint, shared_images


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, content in [("a", b"alpha"), ("b", b"beta"), ("c", b"gamma")]:
        paths[name] = tmp_path / f"{name}.png"
        paths[name].write_bytes(content)
    # A renamed copy of "a" in another folder: caught by content, not by name.
    (tmp_path / "eval").mkdir()
    paths["a_copy"] = tmp_path / "eval" / "renamed.png"
    shutil.copy(paths["a"], paths["a_copy"])
    return {k: str(v) for k, v in paths.items()}


def test_guard_refuses_shared_content(files):
    pool = [files["a"], files["b"]]
    assert shared_images(pool, [files["a_copy"], files["c"]]) == [(files["a"], files["a_copy"])]
    with pytest.raises(PoolLeakError, match="--transductive") as e:
        check_pool_disjoint("pool", pool, {"test": [files["a_copy"], files["c"]]})
    assert "'test'" in str(e.value) and "1 of its 2 images" in str(e.value)


def test_guard_allows_disjoint_and_transductive(files):
    pool = [files["a"], files["b"]]
    assert check_pool_disjoint("pool", pool, {"test": [files["c"]]}) == {"test": 0}
    overlap = check_pool_disjoint("pool", pool, {"test": [files["a_copy"]]}, transductive=True)
    assert overlap == {"test": 1}


def test_iou():
    iou = box_iou_xywh([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 1, 1]])
    assert iou[0].round(4).tolist() == [1.0, round(50 / 150, 4), 0.0]


def _pseudo_and_gt():
    gt = {
        "images": [{"id": 1}, {"id": 2}, {"id": 3}],
        "annotations": [
            {"image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10]},
            {"image_id": 1, "category_id": 8, "bbox": [20, 20, 10, 10]},
            {"image_id": 2, "category_id": 7, "bbox": [0, 0, 10, 10]},
            {"image_id": 2, "category_id": 7, "bbox": [40, 40, 10, 10]},  # painted over
            {"image_id": 2, "category_id": 8, "bbox": [80, 80, 10, 10]},  # missed, unpainted
            {"image_id": 3, "category_id": 8, "bbox": [0, 0, 10, 10]},  # rejected image
        ],
    }
    pseudo = {
        "images": [
            {"id": 100, "pool_image_id": 1, "pseudo_kind": "image", "painted_boxes": []},
            {
                "id": 101,
                "pool_image_id": 2,
                "pseudo_kind": "instance",
                "painted_boxes": [[38, 38, 52, 52]],
            },
        ],
        "annotations": [
            {"image_id": 100, "category_id": 7, "bbox": [1, 0, 10, 10], "score": 0.9},
            {"image_id": 100, "category_id": 7, "bbox": [20, 20, 10, 10], "score": 0.8},  # wrong
            {"image_id": 101, "category_id": 7, "bbox": [0, 0, 10, 10], "score": 0.99},
        ],
    }
    return pseudo, gt


def test_audit_precision_recall():
    pseudo, gt = _pseudo_and_gt()
    a = audit_pseudo_labels(pseudo, gt)
    assert a["image"] == {
        "images": 1,
        "boxes": 2,
        "true_positives": 1,
        "objects": 2,
        "precision": 0.5,
        "recall": 0.5,
    }
    assert a["instance"]["precision"] == 1.0 and a["instance"]["recall"] == pytest.approx(1 / 3)
    assert a["all"]["true_positives"] == 2 and a["all"]["boxes"] == 3
    assert a["image_level_exact"] == 0.0  # category counts {7: 2} != {7: 1, 8: 1}
    assert a["pool_objects"] == 6 and a["pool_recall"] == pytest.approx(2 / 6)
    assert a["instance_missed_objects"] == 2 and a["instance_missed_painted"] == 0.5
