"""Receipts from model outputs (with and without a counting view), folder runs, input discovery."""

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances

from dpsnet.checkout import (
    ProductCatalog,
    density_panel,
    draw_receipt,
    find_inputs,
    make_receipt,
    metrics_html,
    receipts_csv,
    render_report,
    run_checkout,
)
from dpsnet.utils.io import atomic_write_image, load_json


@pytest.fixture
def catalog():
    # Dataset ids are not contiguous: the receipt must show the dataset's ids.
    meta = Metadata(
        thing_classes=["cola", "chips", "soap"],
        thing_dataset_id_to_contiguous_id={3: 0, 7: 1, 11: 2},
        supercategory_names=["drink", "food", "home"],
        thing_supercategory_ids=[0, 1, 2],
    )
    return ProductCatalog.from_metadata(meta, 3, source="fake")


def _outputs(classes, scores, counts=None, size=(60, 80)):
    inst = Instances(size)
    n = len(classes)
    xy = torch.arange(n, dtype=torch.float32)[:, None] * 5
    inst.pred_boxes = Boxes(torch.cat([xy, xy, xy + 10, xy + 20], dim=1))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    out = {"instances": inst}
    if counts is not None:
        out["counts"] = torch.tensor(counts, dtype=torch.float32)
        out["density"] = torch.zeros(len(counts), 8, 10)
    return out


def test_receipt_counts_at_threshold_with_dataset_ids(catalog):
    out = _outputs([0, 0, 1, 2, 2], [0.9, 0.5, 0.7, 0.49, 0.2])
    r = make_receipt(out, catalog, 0.5, "a.jpg", 60, 80)
    assert [(i["product_id"], i["name"], i["count"]) for i in r["items"]] == [
        (3, "cola", 2),
        (7, "chips", 1),
    ]  # a score equal to the threshold counts (as in the RPC evaluator); 0.49 does not
    assert r["total"] == 3 and r["view_total"] is None and r["view_levels"] is None
    assert [d["score"] for d in r["detections"]] == [0.9, 0.7, 0.5]
    assert r["detections"][0]["bbox"] == [0.0, 0.0, 10.0, 20.0]  # XYWH


def test_receipt_category_view_lists_products_only_the_view_sees(catalog):
    out = _outputs([0, 0], [0.9, 0.8], counts=[1.8, 0.2, 0.7])
    r = make_receipt(out, catalog, 0.5, "a.jpg", 60, 80)
    assert r["view_levels"] == ["category"]
    assert [(i["product_id"], i["count"], i["view_count"]) for i in r["items"]] == [
        (3, 2, pytest.approx(1.8)),
        (11, 0, pytest.approx(0.7)),  # seen by the counting view only: listed beside a 0
    ]
    assert r["view_total"] == pytest.approx(2.7)


@pytest.mark.parametrize(
    "counts, levels", [([4.2], ["total"]), ([0.9, 0.1, 3.0], ["category"]), ([1.0, 2.0], None)]
)
def test_count_layout_guessed_from_channels(catalog, counts, levels):
    r = make_receipt(_outputs([1], [0.9], counts=counts), catalog, 0.5, "a.jpg", 60, 80)
    assert r["view_levels"] == levels
    assert r["view_total"] == (pytest.approx(sum(counts)) if levels else None)


def test_multi_level_counting_view(catalog):
    """MODEL.COUNTING_HEAD.LEVELS ("total", "category"): 1 + K channels, total from channel 0."""
    catalog.count_levels = ("total", "category")
    out = _outputs([0, 2], [0.9, 0.9], counts=[2.5, 1.0, 0.2, 1.2])
    r = make_receipt(out, catalog, 0.5, "a.jpg", 60, 80)
    assert r["view_levels"] == ["total", "category"]
    assert r["view_total"] == pytest.approx(2.5)  # not the sum of every channel (4.9)
    assert [(i["product_id"], i["view_count"]) for i in r["items"]] == [
        (3, pytest.approx(1.0)),
        (11, pytest.approx(1.2)),
    ]
    assert r["view_supercategories"] is None


def test_supercategory_view():
    meta = Metadata(
        thing_classes=["cola", "fanta", "soap"],
        supercategory_names=["drink", "home"],
        thing_supercategory_ids=[0, 0, 1],
    )
    cat = ProductCatalog.from_metadata(meta, 3)
    r = make_receipt(_outputs([0, 1, 1], [0.9] * 3, counts=[2.6, 0.4]), cat, 0.5, "a", 60, 80)
    assert r["view_levels"] == ["supercategory"]
    assert [(s["name"], s["count"], s["view_count"]) for s in r["view_supercategories"]] == [
        ("drink", 3, pytest.approx(2.6)),
        ("home", 0, pytest.approx(0.4)),
    ]
    assert [i["product_id"] for i in r["items"]] == [0, 1]  # no id map: the class index


def test_catalog_without_metadata_names_classes():
    cat = ProductCatalog.from_metadata(Metadata(thing_classes=["a"]), 2)
    assert cat.names == ["a", "class 1"] and cat.product_ids == [0, 1]


def test_draw_and_csv(catalog):
    r = make_receipt(_outputs([0, 2], [0.9, 0.8], counts=[1.1]), catalog, 0.5, "x,y.jpg", 60, 80)
    image = np.zeros((60, 80, 3), np.uint8)
    drawn = draw_receipt(image, r)
    assert drawn.shape[1:] == (80, 3) and drawn.shape[0] > 60  # banner on top
    assert drawn[-60:].any() and not image.any()  # boxes drawn on a copy
    density = np.zeros((1, 8, 10), np.float32)
    density[0, 6, 8] = 3.0  # a peak near the bottom right
    with_map = draw_receipt(image, r, density)
    assert with_map.shape[1] > 2 * 80 and with_map.shape[0] == drawn.shape[0]
    panel = density_panel(image, density)
    hot = np.unravel_index(np.argmax(panel[..., 2].astype(int) - panel[..., 0]), (60, 80))
    assert hot[0] > 40 and hot[1] > 55, hot  # red (JET's top) where the density peaks
    rows = list(csv.reader(io.StringIO(receipts_csv([r]))))
    assert rows[1:] == [
        ["x,y.jpg", "3", "cola", "drink", "1", ""],
        ["x,y.jpg", "11", "soap", "home", "1", ""],
        ["x,y.jpg", "", "TOTAL", "", "2", "1.1"],
    ]


def test_run_checkout_with_a_counting_model(tmp_path, catalog):
    """A DPSNet-style output (instances + density + counts) through a folder run and report."""
    inp = tmp_path / "in"
    for name in ("b.jpg", "b.png", "a.jpg"):
        atomic_write_image(inp / name, np.full((40, 50, 3), 100, np.uint8))
    (inp / "broken.png").write_bytes(b"")
    files, problems = find_inputs([str(inp)])
    assert [f.name for f in files] == ["a.jpg", "b.jpg", "b.png", "broken.png"] and not problems

    def predictor(image):
        assert image.shape == (40, 50, 3) and image.dtype == np.uint8
        return _outputs([0, 1], [0.9, 0.3], counts=[0.8, 0.4, 0.0], size=image.shape[:2])

    run = run_checkout(predictor, files, tmp_path / "out", catalog, 0.5)
    assert [r["receipt"] for r in run.receipts] == [
        "receipts/a.json",
        "receipts/b.json",
        "receipts/b_2.json",  # b.png: names stay unique
    ]
    assert run.skipped == [{"file": "broken.png", "reason": "image file is empty"}]
    summary = load_json(tmp_path / "out/summary.json")
    assert summary["items"] == 3 and summary["view_items"] == pytest.approx(3.6)
    assert summary["view_agreement"] == "3/3"
    assert summary["products"][0] == {
        "product_id": 3, "name": "cola", "supercategory": "drink", "count": 3,
        "view_count": pytest.approx(2.4),
    }  # fmt: skip
    page = render_report(run)
    assert "images where detector and rounded view agree" in page and "broken.png" in page


def test_run_checkout_skips_a_failing_model(tmp_path, catalog):
    atomic_write_image(tmp_path / "in/a.jpg", np.zeros((8, 8, 3), np.uint8))
    files, _ = find_inputs([str(tmp_path / "in")])

    def predictor(image):
        raise RuntimeError("boom")

    run = run_checkout(predictor, files, tmp_path / "out", catalog, 0.5)
    assert run.receipts == [] and run.skipped == [{"file": "a.jpg", "reason": "model failed: boom"}]


def test_find_inputs_globs_files_and_exclusion(tmp_path):
    for rel in ("x/1.jpg", "x/y/2.jpg", "x/y/3.png", "x/out/4.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    files, problems = find_inputs(
        [str(tmp_path / "x/**/*.jpg"), str(tmp_path / "x/y/3.png"), str(tmp_path / "nope")],
        exclude=tmp_path / "x/out",
    )
    assert [(f.path.relative_to(tmp_path).as_posix(), f.name) for f in files] == [
        ("x/1.jpg", "1.jpg"),
        ("x/y/2.jpg", "y/2.jpg"),
        ("x/y/3.png", "3.png"),
    ]
    assert problems == [{"file": str(tmp_path / "nope"), "reason": "no such file or folder"}]


def test_metrics_html_generic_json_is_verbatim():
    page = metrics_html({"round": [{"round": 0, "cAcc": 12.345678901}], "note": "x<y"})
    assert "12.345678901" in page and "x&lt;y" in page and Path  # escaped, not rounded
