"""benchmarks/bench_peer.py's adapter (COCO -> YOLO, YOLO -> COCO results, evaluation at a
threshold chosen on val); no ultralytics needed."""

import json

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_peer")


def _split(tmp_path, name, boxes_per_image):
    """A split of 100 x 50 images; boxes_per_image: [[(category_id, [x, y, w, h]), ...], ...]."""
    root = tmp_path / name
    root.mkdir()
    images, annotations = [], []
    for i, boxes in enumerate(boxes_per_image, start=1):
        (root / f"im{i}.jpg").write_bytes(b"jpg")
        images.append({"id": i, "file_name": f"im{i}.jpg", "width": 100, "height": 50})
        for cat, bbox in boxes:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i, "category_id": cat, "bbox": bbox,
                 "area": bbox[2] * bbox[3], "iscrowd": 0}
            )  # fmt: skip
    cats = [{"id": 7, "name": "tea"}, {"id": 3, "name": "milk"}]
    data = {"images": images, "annotations": annotations, "categories": cats}
    (tmp_path / f"{name}.json").write_text(json.dumps(data))
    return tmp_path / f"{name}.json", root


def test_coco_to_yolo(bench, tmp_path):
    js, root = _split(tmp_path, "train", [[(7, [10, 5, 20, 10]), (3, [0, 0, 100, 50])], []])
    split = bench.load_split(js, root)
    cat_ids = bench.category_ids(split["data"])
    assert cat_ids == [3, 7]
    assert bench.coco_to_yolo(split, tmp_path / "yolo", "train", cat_ids) == 2
    labels = (tmp_path / "yolo" / "labels" / "train" / "1_im1.txt").read_text().split("\n")
    assert labels[0] == "1 0.200000 0.200000 0.200000 0.200000"
    assert labels[1] == "0 0.500000 0.500000 1.000000 1.000000"
    assert (tmp_path / "yolo" / "labels" / "train" / "2_im2.txt").read_text() == "\n"
    assert (tmp_path / "yolo" / "images" / "train" / "1_im1.jpg").resolve() == root / "im1.jpg"
    data = json.loads(bench.write_data_yaml(tmp_path / "yolo", ["milk", "tea"]).read_text())
    assert data["names"] == {"0": "milk", "1": "tea"} and data["train"] == "images/train"
    with pytest.raises(bench.BadInput, match="missing"):
        (root / "im2.jpg").unlink()
        bench.coco_to_yolo(split, tmp_path / "yolo2", "train", cat_ids)


def test_threshold_chosen_on_val_applies_to_test(bench, tmp_path):
    one = [[(7, [10, 5, 20, 10])]]
    val = bench.load_split(*_split(tmp_path, "val", one * 2))
    test = bench.load_split(*_split(tmp_path, "test", one * 2))
    cat_ids = [3, 7]
    box = [[10.0, 5.0, 30.0, 15.0]]

    def results(true_score, fp_score):
        # Each image: the true box, and a false "milk" box.
        out = []
        for i in (1, 2):
            out += bench.to_coco_results(i, box, [true_score], [1], cat_ids)
            out += bench.to_coco_results(i, [[50.0, 5, 70, 25]], [fp_score], [0], cat_ids)
        return out

    assert results(0.9, 0.2)[0] == {
        "image_id": 1, "category_id": 7, "bbox": [10.0, 5.0, 20.0, 10.0], "score": 0.9,
    }  # fmt: skip
    # On val the false boxes score 0.2 and the true ones 0.9: a threshold between them is chosen.
    got = bench.evaluate_at_val_threshold(val, results(0.9, 0.2), test, results(0.9, 0.2))
    assert 0.2 < got["threshold"] <= 0.9
    assert got["val_cacc"] == 100.0 and got["cacc"] == 100.0 and got["acd"] == 0.0
    assert got["map50"] == pytest.approx(100.0)
    # The same threshold on a test set whose false boxes score higher: every receipt is wrong.
    got = bench.evaluate_at_val_threshold(val, results(0.9, 0.2), test, results(0.95, 0.93))
    assert got["cacc"] == 0.0 and got["acd"] == 1.0


def test_cli_bad_input(bench, tmp_path, capsys):
    out = tmp_path / "peer.json"
    args = ["--train-json", str(tmp_path / "none.json"), "--train-images", str(tmp_path),
            "--seconds", "1", "--output", str(out)]  # fmt: skip
    assert bench.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none.json" in err and not out.exists()
    assert bench.main(["--demo-output", str(tmp_path)]) == 2
    assert "demo_summary.json" in capsys.readouterr().err
