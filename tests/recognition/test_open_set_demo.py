"""demo/demo.py with the open-set pipeline: receipts name products by the gallery; missing or
corrupt part files give one clear error line."""

import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import MetadataCatalog

from dpsnet.recognition import Gallery

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _argv(mini_world, tmp_path, weights, gallery, extra=()):
    inp = tmp_path / "in"
    inp.mkdir(exist_ok=True)
    for image in sorted((Path(mini_world.root) / "test2019").glob("*.jpg"))[:2]:
        shutil.copy(image, inp / image.name)
    return [
        "--config-file", str(ROOT / "configs/OpenSet/openset_R_18_FPN_mini.yaml"),
        "--input", str(inp), "--output", str(tmp_path / "out"),
        "--confidence-threshold", "0.0",
        "--opts", "MODEL.DEVICE", "cpu",
        "RECOGNITION.DETECTOR.CONFIG_FILE", str(HERE / "tiny_agnostic_frcnn.yaml"),
        "RECOGNITION.DETECTOR.WEIGHTS", "",
        "RECOGNITION.EMBEDDER.WEIGHTS", weights,
        "RECOGNITION.GALLERY.FILE", str(gallery),
        "DATASETS.TEST", f"('{mini_world.names['test']}',)",
        "MODEL.ROI_HEADS.NUM_CLASSES", str(mini_world.sizes["num_products"]),
        "INPUT.MIN_SIZE_TEST", "96", "TEST.DETECTIONS_PER_IMAGE", "4",
        *extra,
    ]  # fmt: skip


@pytest.fixture
def demo():
    return runpy.run_path(str(ROOT / "demo" / "demo.py"))["main"]


def test_receipts_name_gallery_products(demo, mini_world, tiny_weights, tmp_path):
    meta = MetadataCatalog.get(mini_world.names["test"])
    products = sorted(meta.thing_dataset_id_to_contiguous_id)
    gallery = Gallery(np.eye(16, dtype=np.float32)[: len(products)], products, unknown_distance=5)
    gallery.save(tmp_path / "g.npz")
    assert demo(_argv(mini_world, tmp_path, tiny_weights, tmp_path / "g.npz")) == 0
    receipts = sorted((tmp_path / "out" / "receipts").glob("*.json"))
    assert len(receipts) == 2
    for path in receipts:
        receipt = json.loads(path.read_text())
        assert 0 < receipt["total"] <= 4
        for det in receipt["detections"]:
            assert det["product_id"] in products
            assert det["name"] == meta.thing_classes[det["class"]]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "RECOGNITION.DETECTOR.WEIGHTS" in page  # the untrained part is named in the warning


def test_corrupt_gallery_is_one_error_line(demo, mini_world, tiny_weights, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert demo(_argv(mini_world, tmp_path, tiny_weights, bad)) == 2
    # The last line (earlier in-process tool runs may leave logging handlers on old streams).
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and str(bad) in err and "corrupt" in err
