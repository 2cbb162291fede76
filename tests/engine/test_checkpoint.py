"""Self-contained checkpoints: the Trainer saves the catalogue, layout, threshold and config."""

from pathlib import Path

import pytest
import torch
from detectron2.data import MetadataCatalog

from dpsnet.data.catalogue import Catalogue, CountingLayout
from dpsnet.engine import Trainer, load_config
from dpsnet.engine.checkpoint import chosen_threshold, config_from_checkpoint
from dpsnet.utils.checkpoint_meta import read_meta, update_meta

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "quick_schedules" / "dpsnet_R_18_FPN_mini_levels_instant_test.yaml"


def _plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


@pytest.fixture(scope="module")
def trained(mini_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    names = mini_world.names
    cfg = load_config(
        str(CONFIG),
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.ROI_HEADS.NUM_CLASSES", len(MetadataCatalog.get(names["train"]).thing_classes),
            "DATASETS.TRAIN", f"('{names['train']}',)",
            "DATASETS.TEST", "()",
            "SOLVER.MAX_ITER", 1,
            "OUTPUT_DIR", str(out),
        ],
    )  # fmt: skip
    Trainer(cfg).train()
    return cfg, out / "model_final.pth", MetadataCatalog.get(names["train"])


def test_checkpoint_carries_plain_catalogue_layout_and_config(trained):
    cfg, weights, meta = trained
    ckpt = torch.load(str(weights), map_location="cpu", weights_only=True)
    fields = ckpt["dpsnet"]
    assert _plain(fields)
    cat = Catalogue.from_dict(fields["catalogue"])
    assert list(cat.names) == list(meta.thing_classes)
    assert cat.id_to_contiguous() == dict(meta.thing_dataset_id_to_contiguous_id)
    layout = CountingLayout.from_dict(fields["counting_layout"])
    assert layout.levels == tuple(cfg.MODEL.COUNTING_HEAD.LEVELS)
    assert layout.num_channels == CountingLayout.from_config(cfg).num_channels
    assert fields["score_threshold"] == cfg.TEST.RPC.SCORE_THRESHOLD
    assert fields["input"]["min_size_test"] == cfg.INPUT.MIN_SIZE_TEST
    assert f"NUM_CLASSES: {cat.num_classes}" in fields["config"]


def test_config_from_checkpoint_alone_names_the_products(trained):
    cfg, weights, meta = trained
    loaded, fields = config_from_checkpoint(weights)
    assert loaded.MODEL.WEIGHTS == str(weights) and not loaded.DATASETS.REGISTER
    names = MetadataCatalog.get(loaded.DATASETS.TEST[0]).thing_classes
    assert names == list(meta.thing_classes)
    assert loaded.MODEL.COUNTING_HEAD.LEVELS == cfg.MODEL.COUNTING_HEAD.LEVELS
    assert chosen_threshold(fields, loaded) == cfg.TEST.RPC.SCORE_THRESHOLD
    # A threshold chosen later (without test labels) is what the checkout uses.
    copy = weights.parent / "chosen.pth"
    copy.write_bytes(weights.read_bytes())
    update_meta(copy, score_threshold=0.7, threshold_source="pool agreement")
    assert chosen_threshold(read_meta(copy), loaded) == 0.7


def test_old_checkpoint_needs_a_config(tmp_path):
    from dpsnet.engine import ConfigError

    old = tmp_path / "old.pth"
    torch.save({"model": {}}, old)
    with pytest.raises(ConfigError, match="no config"):
        config_from_checkpoint(old)
    cfg, fields = config_from_checkpoint(old, str(CONFIG), ["MODEL.DEVICE", "cpu"])
    assert fields == {} and cfg.MODEL.WEIGHTS == str(old)


def test_catalogue_round_trips_and_matches_the_registrar():
    cats = [
        {"id": 40, "name": "tea", "supercategory": "drink"},
        {"id": 7, "name": "soap", "supercategory": "home"},
        {"id": 12, "name": "cola", "supercategory": "drink"},
    ]
    cat = Catalogue.from_categories(cats)
    assert cat.ids == (7, 12, 40) and cat.names == ("soap", "cola", "tea")
    assert cat.supercategories == ["home", "drink", "drink"]
    assert Catalogue.from_dict(cat.to_dict()) == cat
    assert cat.to_categories()[0] == {"id": 7, "name": "soap", "supercategory": "home"}
    layout = CountingLayout.from_catalogue(cat, ("total", "supercategory", "category"))
    assert layout.num_channels == 1 + 2 + 3
    assert layout.count_vector([2, 2, 0]).tolist() == [3, 1, 2, 1, 0, 2]
    assert CountingLayout.from_dict(layout.to_dict()) == layout
    assert CountingLayout.infer(cat, 2).levels == ("supercategory",)
    assert CountingLayout.infer(cat, 5) is None


def test_demo_runs_from_the_checkpoint_alone(trained, mini_world, tmp_path):
    import csv
    import runpy
    import shutil

    _, weights, meta = trained
    demo = runpy.run_path(str(ROOT / "demo" / "demo.py"), run_name="demo_under_test")
    images = tmp_path / "tray photos"
    images.mkdir()
    for src in sorted((mini_world.root / "test2019").glob("*.jpg"))[:2]:
        shutil.copy(src, images / src.name)
    out = tmp_path / "report"
    argv = ["--weights", str(weights), "--input", str(images), "--output", str(out),
            "--confidence-threshold", "0.0", "--opts", "MODEL.DEVICE", "cpu",
            "MODEL.DPSNET.COUNT_GUIDED.ENABLED", "False"]  # fmt: skip
    assert demo["main"](argv) == 0
    rows = list(csv.DictReader((out / "receipts.csv").open()))
    names = {r["name"] for r in rows if r["product_id"]}  # the TOTAL rows have no product
    assert names and names <= set(meta.thing_classes)
    assert demo["main"](["--weights", str(tmp_path / "missing.pth"), "--input", str(images),
                         "--output", str(out)]) == 2  # fmt: skip


def test_checkpoint_files_are_written_atomically(mini_world, tmp_path, monkeypatch):
    """A save that dies half-way leaves neither a half-written file nor an empty tag behind."""
    from detectron2.checkpoint import DetectionCheckpointer

    from dpsnet.engine.checkpoint import AtomicWrites, add_checkpoint_fields

    names = mini_world.names
    cfg = load_config(
        str(CONFIG),
        ["MODEL.DEVICE", "cpu", "DATASETS.TRAIN", f"('{names['train']}',)", "DATASETS.TEST", "()"],
    )
    ckpt = DetectionCheckpointer(torch.nn.Linear(2, 2), save_dir=str(tmp_path))
    add_checkpoint_fields(ckpt, cfg)
    add_checkpoint_fields(ckpt, cfg)  # idempotent
    assert isinstance(ckpt.path_manager, AtomicWrites)
    assert not isinstance(ckpt.path_manager._path_manager, AtomicWrites)
    ckpt.save("model_0000001")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the job is stopped in the middle of the write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000003")
    monkeypatch.setattr(torch, "save", real_save)
    assert not (tmp_path / "model_0000003.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
    assert ckpt.has_checkpoint() and ckpt.get_checkpoint_file().endswith("model_0000001.pth")
    ckpt.load(ckpt.get_checkpoint_file())  # reads go through the wrapped path manager
