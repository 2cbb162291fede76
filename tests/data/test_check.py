"""The dataset checker: the mini world is clean and matches the generator; every case is caught."""

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from dpsnet.data.check import check_dataset_json, check_registered, default_image_root

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("check_dataset", ROOT / "tools/check_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("split", ["train", "val", "test", "pool", "d2s_training"])
def test_mini_world_is_clean_and_matches_the_generator(mini_world, split):
    key = "pool_groundtruth" if split == "pool" else f"{split}_json"
    image_root = {"pool": "pool_images", "d2s_training": "d2s_images"}.get(split)
    report = check_dataset_json(
        mini_world.paths[key], mini_world.paths[image_root] if image_root else None
    )
    assert report.ok, report.format()
    expected = mini_world.counts[split]
    for k in ("images", "instances", "per_level", "per_category"):
        assert report.summary[k] == expected[k], k


def test_registered_names_and_the_tool(mini_world, capsys):
    assert check_registered(mini_world.names["test_easy"]).ok
    assert check_registered(mini_world.names["pool"]).summary["instances"] == 0
    tool = _tool()
    assert tool.main([mini_world.names["test"]]) == 0
    out = capsys.readouterr().out
    n = mini_world.counts["test"]
    assert f"Summary: {n['images']} images, {n['instances']} instances" in out
    assert "OK: no problems" in out
    assert tool.main(["no_such_dataset_anywhere"]) == 2


@pytest.fixture
def case(tmp_path):
    """A small valid dataset: two images on disk, three annotations."""
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(tmp_path / name), np.zeros((40, 50, 3), np.uint8))
    data = {
        "categories": [{"id": 1, "name": "x", "supercategory": "s"}, {"id": 2, "name": "y"}],
        "images": [
            {"id": 10, "file_name": "a.jpg", "width": 50, "height": 40, "level": "easy"},
            {"id": 11, "file_name": "b.jpg", "width": 50, "height": 40, "level": "hard"},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "bbox": [0, 0, 10, 10]},
            {"id": 2, "image_id": 11, "category_id": 2, "bbox": [40, 30, 10, 10]},
            {"id": 3, "image_id": 11, "category_id": 2, "bbox": [1, 1, 5, 5]},
        ],
    }
    return tmp_path, data


def _check(tmp_path, data, **kw):
    path = tmp_path / "case.json"
    path.write_text(json.dumps(data, indent=1))
    return check_dataset_json(path, tmp_path, **kw)


def test_valid_case_summary(case):
    report = _check(*case)
    assert report.ok, report.format()
    assert report.summary["per_level"] == {
        "easy": {"images": 1, "instances": 1},
        "hard": {"images": 1, "instances": 2},
    }
    assert report.summary["per_category"] == {"x": 1, "y": 2}


@pytest.mark.parametrize(
    "edit, kind",
    [
        (lambda d, r: d["annotations"][1].update(bbox=[45, 30, 10, 10]), "box_out_of_bounds"),
        (lambda d, r: d["annotations"][0].update(bbox=[-5, 0, 10, 10]), "box_out_of_bounds"),
        (lambda d, r: d["annotations"][0].update(bbox=[1, 1, 0, 5]), "box_zero_size"),
        (lambda d, r: d["annotations"][0].update(bbox=[1, 1, 5]), "bad_box"),
        (lambda d, r: d["annotations"][0].update(category_id=99), "unknown_category"),
        (lambda d, r: d["annotations"][0].update(image_id=99), "unknown_image"),
        (lambda d, r: d["annotations"][1].update(id=1), "duplicate_annotation_id"),
        (lambda d, r: d["images"][1].update(id=10), "duplicate_image_id"),
        (lambda d, r: d["images"][1].update(file_name="a.jpg"), "duplicate_file_name"),
        (lambda d, r: d["categories"][1].update(id=1), "duplicate_category_id"),
        (lambda d, r: d["images"][0].update(level="Easy"), "bad_level"),
        (lambda d, r: d["images"][0].update(width=64), "image_size_mismatch"),
        (lambda d, r: (r / "a.jpg").unlink(), "missing_image"),
        (lambda d, r: (r / "b.jpg").write_bytes(b"not an image"), "unreadable_image"),
        (lambda d, r: d.pop("images"), "schema"),
    ],
)
def test_each_problem_is_caught(case, edit, kind):
    root, data = case
    edit(data, root)
    report = _check(root, data)
    assert not report.ok
    assert kind in report.counts_by_kind(), report.format()
    assert kind in report.format()


def test_truncated_image_needs_full_decode(case):
    root, data = case
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8))
    (root / "a.jpg").write_bytes(buf.tobytes()[: len(buf) // 3])
    assert _check(root, data, decode_images=False).ok  # the header alone looks fine
    assert "unreadable_image" in _check(root, data, decode_images=True).counts_by_kind()


def test_malformed_json_names_file_line_and_column(case, capsys):
    root, data = case
    text = json.dumps(data, indent=1).replace('"width": 50', '"width": 50,,', 1)
    bad = root / "bad.json"
    bad.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if ",," in t)
    report = check_dataset_json(bad, root)
    (problem,) = report.problems
    assert problem.kind == "malformed_json"
    assert problem.where.startswith(f"{bad}:{line}:") and f"line {line}" in problem.message
    assert _tool().main([str(bad)]) == 1
    assert "malformed_json" in capsys.readouterr().out


def test_default_image_root(mini_world, tmp_path):
    assert default_image_root(mini_world.paths["val_json"]) == str(mini_world.paths["val_images"])
    d2s = mini_world.paths["d2s_training_json"]
    assert default_image_root(d2s) == str(mini_world.paths["d2s_images"])
    assert default_image_root(tmp_path / "x.json") == str(tmp_path)
