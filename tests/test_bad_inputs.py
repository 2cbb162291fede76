"""Issue 21: bad inputs fed to the real tools give one line and the right exit code, never a
traceback, an executed payload or lost outputs (README: Bad inputs and safety)."""

import json
import os
import pickle
import runpy
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dpsnet.utils.io import (
    BadInputError,
    atomic_write_image,
    atomic_write_json,
    atomic_write_text,
    read_image,
)

ROOT = Path(__file__).resolve().parents[1]

# A stock detectron2 Faster R-CNN small enough for CPU inference; no dataset needed.
TINY = """
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  DEVICE: "cpu"
  BACKBONE: {{NAME: "build_resnet_fpn_backbone"}}
  RESNETS: {{DEPTH: 18, RES2_OUT_CHANNELS: 64, NORM: "GN", STRIDE_IN_1X1: False,
             OUT_FEATURES: ["res2", "res3", "res4", "res5"]}}
  FPN: {{IN_FEATURES: ["res2", "res3", "res4", "res5"], OUT_CHANNELS: 32, NORM: "GN"}}
  ANCHOR_GENERATOR: {{SIZES: [[16], [32], [64], [128], [256]]}}
  RPN: {{IN_FEATURES: ["p2", "p3", "p4", "p5", "p6"], PRE_NMS_TOPK_TEST: 100,
         POST_NMS_TOPK_TEST: 50}}
  ROI_HEADS: {{NAME: "StandardROIHeads", IN_FEATURES: ["p2", "p3", "p4", "p5"],
               NUM_CLASSES: {num_classes}, SCORE_THRESH_TEST: 0.05}}
  ROI_BOX_HEAD: {{NAME: "FastRCNNConvFCHead", NUM_FC: 2, FC_DIM: 64, POOLER_RESOLUTION: 7}}
DATASETS: {{TRAIN: [], TEST: []}}
INPUT: {{MIN_SIZE_TEST: 96, MAX_SIZE_TEST: 128}}
TEST: {{DETECTIONS_PER_IMAGE: 8}}
VERSION: 2
"""


def hostile_png(path: Path, width: int = 60000, height: int = 60000) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    return path


class Payload:
    """Unpickling this runs code: it creates the file named in ``sentinel``."""

    def __init__(self, sentinel: str):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def _one_line_error(stderr: str) -> str:
    """The last stderr line; asserts there is no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert lines, "no message on stderr"
    return lines[-1]


def _compose_helpers() -> dict:
    return runpy.run_path(str(ROOT / "tests/synthesis/compose_helpers.py"))


def _run(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(ROOT),
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A 3-class tiny config, its weights, weights of a 5-class model, a trunk-only file, and
    a folder with two good images, a hostile PNG, a truncated JPEG and a text file."""
    from detectron2.modeling import build_model

    from dpsnet.engine import load_config

    base = tmp_path_factory.mktemp("bad_inputs")
    (base / "tiny.yaml").write_text(TINY.format(num_classes=3))
    (base / "tiny5.yaml").write_text(TINY.format(num_classes=5))
    torch.manual_seed(0)
    model = build_model(load_config(str(base / "tiny.yaml")))
    torch.save({"model": model.state_dict()}, base / "w3.pth")
    trunk = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    torch.save({"model": trunk}, base / "trunk.pth")
    torch.save({"model": build_model(load_config(str(base / "tiny5.yaml"))).state_dict()},
               base / "w5.pth")  # fmt: skip
    images = base / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png"):
        cv2.imwrite(str(images / name), rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    hostile_png(images / "huge.png")
    data = (images / "a.jpg").read_bytes()
    (images / "cut.jpg").write_bytes(data[: len(data) // 2])
    (images / "notes.txt").write_text("not an image\n")
    return base


# ---- item 1: weights files never run code ------------------------------------------------------


def test_pickle_weights_are_refused_and_never_run(case, tmp_path, capsys):
    sentinel = tmp_path / "PAYLOAD_RAN"
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": Payload(str(sentinel))}, f)
    torch.save({"model": Payload(str(sentinel))}, tmp_path / "evil.pth")
    proc = _run("demo/demo.py", "--config-file", str(case / "tiny.yaml"), "--input",
                str(case / "images"), "--output", str(tmp_path / "out"),
                "--opts", "MODEL.WEIGHTS", str(tmp_path / "evil.pkl"))  # fmt: skip
    line = _one_line_error(proc.stderr)
    assert proc.returncode == 2 and line.startswith("error: ") and "refusing a .pkl" in line
    assert not sentinel.exists(), "evil.pkl: the payload ran"
    # A .pth is a pickle inside a zip: weights-only loading refuses its payload too.
    assert _demo(case, tmp_path / "out", "MODEL.WEIGHTS", str(tmp_path / "evil.pth")) == 2
    err = capsys.readouterr().err
    assert "Python objects other than tensors" in _one_line_error(err)
    assert "weights_only=False" not in err
    assert not sentinel.exists(), "evil.pth: the payload ran"


def test_no_code_path_loads_weights_with_pickle():
    offenders = []
    for folder in ("dpsnet", "tools", "demo", "datasets"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if "weights_only=False" in text or "pickle.load(" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders


def test_trust_pickle_is_an_explicit_opt_in(case, tmp_path):
    from dpsnet.engine import check_weights, load_config
    from dpsnet.utils import weights

    (tmp_path / "w.pkl").write_bytes(pickle.dumps({"model": {}}))
    cfg = load_config(str(case / "tiny.yaml"), ["MODEL.WEIGHTS", str(tmp_path / "w.pkl")])
    with pytest.raises(ValueError, match="--trust-pickle"):
        check_weights(cfg)
    cfg.MODEL.TRUST_PICKLE = True
    try:
        check_weights(cfg)
        assert weights.trust_pickle()
    finally:
        weights.configure(trust_pickle=False)


# ---- item 2: a hostile image is a listed, skipped file -----------------------------------------


def test_read_image_checks_the_header_before_decoding(case):
    with pytest.raises(BadInputError, match=r"too large \(3600000000 pixels"):
        read_image(case / "images" / "huge.png")
    with pytest.raises(BadInputError, match="truncated JPEG"):
        read_image(case / "images" / "cut.jpg")
    with pytest.raises(BadInputError, match="not a readable image"):
        read_image(case / "images" / "notes.txt")
    assert read_image(case / "images" / "a.jpg").shape == (90, 120, 3)


def test_demo_lists_hostile_files_and_writes_every_output(case, tmp_path):
    out = tmp_path / "out"
    proc = _run("demo/demo.py", "--config-file", str(case / "tiny.yaml"), "--input",
                str(case / "images"), "--output", str(out), "--opts", "MODEL.WEIGHTS",
                str(case / "w3.pth"), env={"DPSNET_PRECISION": "float32"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    reasons = {s["file"]: s["reason"] for s in summary["skipped_files"]}
    assert set(reasons) == {"huge.png", "cut.jpg", "notes.txt"}
    assert "too large" in reasons["huge.png"]
    assert summary["images"] == 2
    assert "huge.png" in (out / "report.html").read_text()
    csv_text = (out / "receipts.csv").read_text()
    assert "huge.png,,SKIPPED" in csv_text and "a.jpg,,TOTAL" in csv_text


def test_checker_lists_a_hostile_image(case, tmp_path, capsys):
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 120, "height": 90},
        {"id": 2, "file_name": "huge.png", "width": 100, "height": 100},
    ]
    ann = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "d.json").write_text(json.dumps(ann))
    tool = runpy.run_path(str(ROOT / "tools/check_dataset.py"))
    assert tool["main"]([str(tmp_path / "d.json"), "--image-root", str(case / "images")]) == 1
    out = capsys.readouterr().out
    assert "unreadable_image" in out and "too large" in out


def test_synthesizer_skips_a_hostile_exemplar(tmp_path):
    from dpsnet.synthesis.items import check_item, load_index

    index, _ = _compose_helpers()["flat_colour_index"](tmp_path, num_categories=2)
    items, _, _ = load_index(index)
    hostile_png(Path(items[0].file_name))
    checked, reason = check_item(items[0])
    assert checked is None and "too large" in reason


# ---- item 3: numeric flags ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "script, argv, flag",
    [
        ("tools/synthesize.py", ["--num-images", "0"], "--num-images"),
        ("tools/synthesize.py", ["--num-images", "-5"], "--num-images"),
        ("tools/synthesize.py", ["--workers", "0"], "--workers"),
        ("tools/synthesize.py", ["--level", "tricky"], "--level"),
        ("tools/synthesize.py", ["--level", "easy:-1,hard:2"], "--level"),
        ("tools/synthesize.py", ["--shard", "2", "--num-shards", "2"], "--shard"),
        (
            "tools/extract_masks.py",
            ["--json", "x", "--image-root", "y", "--output", "o", "--workers", "0"],
            "--workers",
        ),  # fmt: skip
        ("tools/evaluate_rpc.py", ["r.json", "a.json", "--threshold", "1.5"], "--threshold"),
        ("tools/evaluate_rpc.py", ["r.json", "a.json", "--levels", "easy,huge"], "--levels"),
        ("tools/evaluate_rpc.py", ["r.json", "a.json", "--top-k", "0"], "--top-k"),
        ("tools/check_dataset.py", ["d.json", "--box-tolerance", "-1"], "--box-tolerance"),
        (
            "tools/build_gallery.py",
            ["--weights", "w", "--datasets", "d", "--output", "o", "--max-per-product", "-1"],
            "--max-per-product",
        ),  # fmt: skip
        ("tools/optimize_anchors.py", ["d", "--num-ratios", "0"], "--num-ratios"),
        ("tools/render.py", ["render", "--limit", "-1"], "--limit"),
        (
            "tools/train_recognizer.py",
            ["--config-file", "c", "--num-threads", "-2"],
            "--num-threads",
        ),  # fmt: skip
        (
            "tools/pretrain_backbone.py",
            ["--config-file", "c", "--output", "o", "--num-threads", "x"],
            "--num-threads",
        ),  # fmt: skip
        (
            "tools/add_product.py",
            ["--gallery", "g", "--weights", "w", "--id", "-3", "--images", "i"],
            "--id",
        ),  # fmt: skip
        ("tools/train_net.py", ["--config-file", "c", "--num-gpus", "0"], "--num-gpus"),
        ("tools/distill.py", ["--config-file", "c", "--num-gpus", "-1"], "--num-gpus"),
        (
            "demo/demo.py",
            ["--input", "i", "--output", "o", "--confidence-threshold", "2"],
            "--confidence-threshold",
        ),  # fmt: skip
        ("datasets/make_mini_world.py", ["--workers", "0"], "--workers"),
        ("datasets/make_mini_world.py", ["--test-images", "0"], "--test-images"),
    ],
)
def test_numeric_flags_are_checked(script, argv, flag, capsys):
    tool = runpy.run_path(str(ROOT / script))
    entry = tool.get("cli") if script.endswith(("train_net.py", "distill.py")) else tool["main"]
    with pytest.raises(SystemExit) as e:
        entry(argv)
    assert e.value.code == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"argument {flag}" in line or flag in line, line


def test_num_images_zero_writes_nothing(tmp_path, capsys):
    tool = runpy.run_path(str(ROOT / "tools/synthesize.py"))
    with pytest.raises(SystemExit) as e:  # before: 0 meant "the config's 1000"
        tool["main"](["--index", "x.json", "--output", str(tmp_path / "s"), "--num-images", "0"])
    line = _one_line_error(capsys.readouterr().err)
    assert e.value.code == 2 and "--num-images" in line and ">= 1, got 0" in line
    assert not (tmp_path / "s").exists()


# ---- item 4: weights that do not fit the model -------------------------------------------------


def _demo(case, out, *opts):
    demo = runpy.run_path(str(ROOT / "demo/demo.py"))
    argv = ["--config-file", str(case / "tiny.yaml"), "--input", str(case / "images"),
            "--output", str(out), "--opts", *opts]  # fmt: skip
    return demo["main"](argv)


def test_class_count_mismatch_is_an_error_naming_both_counts(case, tmp_path, capsys):
    assert _demo(case, tmp_path / "out", "MODEL.WEIGHTS", str(case / "w5.pth")) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "trained for 5 classes" in line and "the model has 3" in line
    assert "MODEL.WEIGHTS_TRUNK_ONLY" in line


def test_trunk_only_loading_stays_possible_and_is_reported(case, tmp_path, caplog):
    import logging

    weights = str(case / "w5.pth")
    with caplog.at_level(logging.INFO, logger="dpsnet"):
        code = _demo(case, tmp_path / "a", "MODEL.WEIGHTS", weights, "MODEL.WEIGHTS_TRUNK_ONLY",
                     "True")  # fmt: skip
    assert code == 0
    assert any("loading only the trunk" in r.getMessage() for r in caplog.records)
    # A checkpoint holding only the trunk: loaded, and the report says the heads are random.
    assert _demo(case, tmp_path / "b", "MODEL.WEIGHTS", str(case / "trunk.pth")) == 0
    assert "holds only the trunk" in (tmp_path / "b" / "report.html").read_text()
    assert "holds only the trunk" not in _demo_report(case, tmp_path / "c")


def _demo_report(case, out) -> str:
    assert _demo(case, out, "MODEL.WEIGHTS", str(case / "w3.pth")) == 0
    return (out / "report.html").read_text()


# ---- item 5: one line and exit 2 instead of tracebacks ----------------------------------------


@pytest.fixture
def corrupt_weights(case, tmp_path):
    data = (case / "w3.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    return tmp_path


def test_train_net_bad_inputs_are_one_line(case, corrupt_weights, tmp_path, capsys):
    from dpsnet.data.datasets import register_mini_world

    train_net = runpy.run_path(str(ROOT / "tools/train_net.py"))
    unbuilt = register_mini_world(tmp_path / "not_built", prefix="unbuilt_test")["train"]
    c = ["--config-file", str(case / "tiny.yaml")]
    cases = [
        (["MODEL.WEIGHTS", str(corrupt_weights / "cut.pth")], "not a PyTorch checkpoint"),
        (["MODEL.WEIGHTS", str(corrupt_weights / "empty.pth")], "is empty"),
        (["DATASETS.TRAIN", "('no_such_set',)"], "'no_such_set' is not registered"),
        (["DATASETS.TRAIN", f"('{unbuilt}',)"], "run `python datasets/make_mini_world.py`"),
        (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH must be an integer >= 1"),
    ]
    for opts, expect in cases:
        assert train_net["cli"]([*c, *opts]) == 2, opts
        line = _one_line_error(capsys.readouterr().err)
        assert line.startswith("error: ") and expect in line, line


def test_num_classes_below_the_datasets_categories(mini_world, case, capsys):
    train_net = runpy.run_path(str(ROOT / "tools/train_net.py"))
    argv = ["--config-file", str(case / "tiny.yaml"), "DATASETS.TRAIN",
            f"('{mini_world.names['train']}',)"]  # fmt: skip
    assert train_net["cli"](argv) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "the model has 3 classes" in line and "set NUM_CLASSES to" in line


def test_distill_and_pretrain_bad_inputs_are_one_line(case, corrupt_weights, capsys):
    distill = runpy.run_path(str(ROOT / "tools/distill.py"))
    pretrain = runpy.run_path(str(ROOT / "tools/pretrain_backbone.py"))
    c = ["--config-file", str(case / "tiny.yaml")]
    assert distill["cli"]([*c, "MODEL.WEIGHTS", str(corrupt_weights / "empty.pth")]) == 2
    assert "is empty" in _one_line_error(capsys.readouterr().err)
    assert distill["cli"]([*c, "DATASETS.TRAIN", "('nope',)"]) == 2
    assert "'nope' is not registered" in _one_line_error(capsys.readouterr().err)
    argv = [*c, "--output", str(corrupt_weights / "t.pth"), "DATASETS.TRAIN", "('nope',)"]
    assert pretrain["main"](argv) == 2
    assert "'nope' is not registered" in _one_line_error(capsys.readouterr().err)


def test_demo_bad_weights_and_empty_folder(case, corrupt_weights, tmp_path, capsys):
    assert _demo(case, tmp_path / "o", "MODEL.WEIGHTS", str(corrupt_weights / "cut.pth")) == 2
    assert "not a PyTorch checkpoint" in _one_line_error(capsys.readouterr().err)
    (tmp_path / "empty").mkdir()
    demo = runpy.run_path(str(ROOT / "demo/demo.py"))
    argv = ["--config-file", str(case / "tiny.yaml"), "--input", str(tmp_path / "empty"),
            "--output", str(tmp_path / "o2")]  # fmt: skip
    assert demo["main"](argv) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"no images in {tmp_path / 'empty'}; supported: .jpg" in line
    # Product names from a dataset not built yet: what to run, not a traceback.
    from dpsnet.data.datasets import register_mini_world

    unbuilt = register_mini_world(tmp_path / "not_built", prefix="unbuilt_demo")["test"]
    assert _demo(case, tmp_path / "o3", "DATASETS.TEST", f"('{unbuilt}',)") == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "is not built" in line and "make_mini_world.py" in line


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    from dpsnet.engine.cli import EXIT_INTERRUPTED, run

    def main(argv):
        raise KeyboardInterrupt

    assert run(main, [], resume_hint="rerun with --resume") == EXIT_INTERRUPTED
    assert _one_line_error(capsys.readouterr().err) == "interrupted; rerun with --resume"


def test_ctrl_c_in_training_saves_a_checkpoint_to_resume_from(tmp_path):
    from types import SimpleNamespace

    from detectron2.checkpoint import DetectionCheckpointer

    from dpsnet.engine.interrupt import GracefulInterrupt, TrainingInterrupted

    model = torch.nn.Linear(2, 2)
    hook = GracefulInterrupt()
    hook.trainer = SimpleNamespace(
        iter=6, checkpointer=DetectionCheckpointer(model, save_dir=str(tmp_path))
    )
    hook.before_train()
    try:
        hook.after_step()  # no Ctrl-C yet: nothing happens
        hook._handle(2, None)  # the first Ctrl-C only asks to stop
        with pytest.raises(TrainingInterrupted, match="model_interrupted.pth at iteration 7"):
            hook.after_step()
    finally:
        hook.after_train()
    assert (tmp_path / "last_checkpoint").read_text() == "model_interrupted.pth"
    assert torch.load(tmp_path / "model_interrupted.pth", weights_only=True)["iteration"] == 6


# ---- also --------------------------------------------------------------------------------------


def test_outputs_get_the_users_umask(tmp_path):
    from dpsnet.utils.checkpoint_meta import update_meta

    old = os.umask(0o027)
    os.umask(old)
    expected = 0o666 & ~old
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "a.json", {})
    atomic_write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    torch.save({"model": {}}, tmp_path / "m.pth")
    os.chmod(tmp_path / "m.pth", expected)
    update_meta(tmp_path / "m.pth", threshold=0.5)
    for name in ("a.txt", "a.json", "a.png", "m.pth"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected, name


def test_score_outside_unit_interval_is_refused(tmp_path, capsys):
    ann = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10, "level": "easy"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3], "area": 9}
        ],
        "categories": [{"id": 1, "name": "x"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(ann))
    tool = runpy.run_path(str(ROOT / "tools/evaluate_rpc.py"))
    for score in (1.5, -0.1):
        res = [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3], "score": score}]
        (tmp_path / "r.json").write_text(json.dumps(res))
        assert tool["main"]([str(tmp_path / "r.json"), str(tmp_path / "a.json"), "--no-map"]) == 2
        assert "score outside [0, 1]" in _one_line_error(capsys.readouterr().err)


def test_leak_guard_catches_reencoded_and_resized_copies(mini_world, tmp_path):
    from dpsnet.distill.guard import PoolLeakError, check_pool_disjoint, shared_images

    test = sorted(str(p) for p in (Path(mini_world.root) / "test2019").iterdir())
    pool = sorted(str(p) for p in (Path(mini_world.root) / "pool").iterdir())
    image = cv2.imread(test[0])
    cv2.imwrite(str(tmp_path / "q70.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 70])
    cv2.imwrite(str(tmp_path / "small.png"), cv2.resize(image, None, fx=0.6, fy=0.6))
    copies = [str(tmp_path / "q70.jpg"), str(tmp_path / "small.png")]
    assert shared_images(pool + copies, test) == [(c, test[0]) for c in copies]
    assert shared_images(copies, test, perceptual=False) == []  # the bytes alone miss them
    with pytest.raises(PoolLeakError, match="re-encoded/resized copy"):
        check_pool_disjoint("pool", [*pool[:5], copies[0]], {"test": test})


def test_product_without_exemplars_fails_unless_allowed(tmp_path, capsys, caplog, monkeypatch):
    import logging

    # An earlier in-process tool may have bound dpsnet's log handler to a since-closed capture.
    monkeypatch.setattr(logging, "raiseExceptions", False)
    helpers = _compose_helpers()
    index, _ = helpers["flat_colour_index"](tmp_path / "ex", num_categories=4)
    (tmp_path / "ex" / "photos" / "2.png").unlink()  # product 2's only exemplar is gone
    tool = runpy.run_path(str(ROOT / "tools/synthesize.py"))
    argv = ["--index", str(index), "--output", str(tmp_path / "s"), "--num-images", "2",
            "--no-progress"]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="dpsnet"):
        assert tool["main"]([*argv, *helpers["SMALL"]]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "1 product(s) have no usable exemplar left: 2 (flat_2)" in line
    assert any("PRODUCT MISSING: category 2 (flat_2)" in r.getMessage() for r in caplog.records)
    assert tool["main"]([*argv, "--allow-missing-products", *helpers["SMALL"]]) == 0
    assert (tmp_path / "s" / "instances_synth.json").is_file()


def test_receipt_of_a_bfloat16_model():
    """The demo on a CPU where bfloat16 measured faster (MODEL.PRECISION auto) gave a
    traceback: numpy has no bfloat16."""
    from detectron2.data.catalog import Metadata
    from detectron2.structures import Boxes, Instances

    from dpsnet.checkout import ProductCatalog, make_receipt

    meta = Metadata(thing_classes=["cola", "chips"], thing_dataset_id_to_contiguous_id={3: 0, 7: 1})
    catalog = ProductCatalog.from_metadata(meta, 2, source="fake")
    inst = Instances((60, 80))
    inst.pred_boxes = Boxes(torch.tensor([[1.0, 2.0, 11.0, 22.0]], dtype=torch.bfloat16))
    inst.scores = torch.tensor([0.75], dtype=torch.bfloat16)
    inst.pred_classes = torch.tensor([1])
    receipt = make_receipt({"instances": inst}, catalog, 0.5, "a.jpg", 60, 80)
    assert receipt["total"] == 1 and receipt["detections"][0]["product_id"] == 7
    assert receipt["detections"][0]["score"] == 0.75
