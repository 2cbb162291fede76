"""tools/evaluate_rpc.py: both protocols, one of them, levels, and one-line errors."""

import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "evaluate_rpc.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("evaluate_rpc_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def files(tmp_path, small_gt, small_results):
    ann, res = tmp_path / "ann.json", tmp_path / "res.json"
    ann.write_text(json.dumps(small_gt))
    res.write_text(json.dumps(small_results))
    return str(res), str(ann)


def test_default_reports_fixed_and_search(tool, files, tmp_path, capsys):
    out = tmp_path / "out"
    assert tool.main([*files, "--output-dir", str(out), "--no-map"]) == 0
    printed = capsys.readouterr().out
    assert "Fixed score threshold 0.5" in printed and "rpctool protocol" in printed
    metrics = json.loads((out / "rpc_metrics.json").read_text())["metrics"]
    assert "cAcc" in metrics and "search/hard/cAcc" in metrics and "mAP50" not in metrics


def test_threshold_only_search_only_and_levels(tool, files, capsys):
    assert tool.main([*files, "--threshold", "0.7", "--levels", "easy,averaged", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["score_threshold"] == 0.7 and "easy/mAP50" in metrics
    assert not any(k.startswith("search/") or k.startswith("hard/") for k in metrics)
    assert tool.main([*files, "--search", "--no-map", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert "score_threshold" not in metrics and "cAcc" not in metrics and "search/cAcc" in metrics
    with pytest.raises(SystemExit):
        tool.main([*files, "--search", "--threshold", "0.5"])


def test_bad_results_file_is_one_line_error(tool, files, tmp_path, capsys):
    res, ann = files
    bad = json.loads(Path(res).read_text())
    bad[6]["score"] = None
    Path(res).write_text(json.dumps(bad))
    assert tool.main([res, ann]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "entry 6 has a non-numeric score" in err and res in err
    Path(res).write_text("{not json")
    assert tool.main([res, ann]) == 2
    assert "malformed JSON" in capsys.readouterr().err


def test_cross_class_iou_merges_look_alikes_on_one_object(tool, tmp_path, capsys):
    # one image, one object of category 1; the detector also put category 2 on it
    gt = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900}
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "a_lite"}],
    }
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.45},
        {"image_id": 1, "category_id": 2, "bbox": [11, 10, 30, 30], "score": 0.35},
    ]
    ann, res = tmp_path / "ann.json", tmp_path / "res.json"
    ann.write_text(json.dumps(gt))
    res.write_text(json.dumps(results))
    args = [str(res), str(ann), "--threshold", "0.5", "--no-map", "--json"]
    assert tool.main(args) == 0
    assert json.loads(capsys.readouterr().out)["cAcc"] == 0.0  # missed at 0.5
    assert tool.main([*args, "--cross-class-iou", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["cAcc"] == 100.0  # one item, 0.8, category 1
    assert tool.main([*args[:3], "0.3", *args[4:]]) == 0
    assert json.loads(capsys.readouterr().out)["cAcc"] == 0.0  # counted twice at 0.3
    assert tool.main([*args[:3], "0.3", *args[4:], "--cross-class-iou", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["cAcc"] == 100.0


def test_against_prints_the_paired_difference(tool, files, tmp_path, capsys):
    res, ann = files
    worse = [d for i, d in enumerate(json.loads(Path(res).read_text())) if i % 3]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(worse))
    args = [res, ann, "--threshold", "0.5", "--no-map", "--against", str(other)]
    assert tool.main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    mine = out["cAcc"]
    assert tool.main([str(other), ann, "--threshold", "0.5", "--no-map", "--json"]) == 0
    theirs = json.loads(capsys.readouterr().out)["cAcc"]
    found = out["against"]
    assert found["difference"] == pytest.approx(mine - theirs)
    assert found["images"] == 45 and found["low"] <= found["difference"] <= found["high"]
    assert tool.main(args) == 0
    assert "95 % interval" in capsys.readouterr().out
    assert tool.main([res, ann, "--against", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
