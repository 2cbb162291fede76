"""tools/train_recognizer.py on the tiny mini world: outputs, held-out products, resume."""

import json
import runpy
from pathlib import Path

import pytest
import torch

from dpsnet.engine import load_config
from dpsnet.recognition import Gallery, load_embedder
from dpsnet.recognition.evaluate import classification_metrics
from dpsnet.recognition.products import split_products
from dpsnet.recognition.train import train_recognizer

ROOT = Path(__file__).resolve().parents[2]


def _opts(mini_world, epochs):
    return [
        "RECOGNITION.EMBEDDER.HIDDEN_DIM", "32",
        "RECOGNITION.EMBEDDER.EMBED_DIM", "16",
        "RECOGNITION.CROP.SIZE", "32",
        "RECOGNITION.TRAIN.DATASETS", f"('{mini_world.names['train']}',)",
        "RECOGNITION.TRAIN.VAL_DATASETS", f"('{mini_world.names['val']}',)",
        "RECOGNITION.TRAIN.P", "3",
        "RECOGNITION.TRAIN.K", "2",
        "RECOGNITION.TRAIN.EPOCHS", str(epochs),
        "RECOGNITION.TRAIN.ALL_TRIPLET_EPOCHS", "1",
        "RECOGNITION.TRAIN.LR_DROP_EPOCH", "2",
        "RECOGNITION.TRAIN.HOLDOUT_FRACTION", "0.34",
        "RECOGNITION.TRAIN.CHECKPOINT_PERIOD", "1",
    ]  # fmt: skip


def test_split_products_and_metrics():
    known, held = split_products(range(1, 11), 0.2, seed=0)
    assert len(held) == 2 and sorted(known + held) == list(range(1, 11))
    assert split_products(range(1, 11), 0.2, seed=0) == (known, held)
    m = classification_metrics([1, 1, 2, 2], [1, 2, 2, -1])
    assert m["top1"] == 0.5 and m["unknown_rate"] == 0.25
    # F1 of 1: tp 1, fp 0, fn 1 -> 2/3; of 2: tp 1, fp 1, fn 1 -> 1/2.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)


@pytest.mark.slow
def test_train_writes_a_model_a_gallery_and_metrics_and_resumes(mini_world, tmp_path):
    out = tmp_path / "rec"
    main = runpy.run_path(str(ROOT / "tools" / "train_recognizer.py"))["main"]
    opts = [*_opts(mini_world, 2), "RECOGNITION.TRAIN.EVAL_PERIOD", "1"]
    assert main(["--config-file", "", "--output-dir", str(out), *opts]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    held = metrics["held_out_products"]
    assert len(held) == 2 and metrics["products_added"] == 2
    assert metrics["added"]["n"] > 0 and metrics["known"]["n"] > 0
    assert metrics["all"]["n"] == metrics["added"]["n"] + metrics["known"]["n"]
    assert [h["mode"] for h in metrics["history"]] == ["all", "hard"]
    assert 0 <= metrics["history"][0]["known_top1"] <= 1  # validated mid-run (EVAL_PERIOD)
    assert "known_top1" not in metrics["history"][1]  # the last epoch: the final figures
    model, extra = load_embedder(str(out / "model_final.pth"))
    assert extra["crop_size"] == 32 and extra["held_out_products"] == held
    assert not set(held) & set(extra["known_products"])
    gallery = Gallery.load(out / "gallery.npz")
    assert set(held) <= set(gallery.products) and len(gallery.products) == 6
    assert gallery.unknown_distance == pytest.approx(metrics["unknown_distance"])

    # --eval-only: the same model, a gallery with rotated views; the history is kept.
    views = ["RECOGNITION.GALLERY.ROTATIONS", "True"]
    argv = ["--config-file", "", "--output-dir", str(out), "--eval-only", *opts, *views]
    assert main(argv) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["gallery_views"] == {"rotations": True, "jitter_views": 0}
    assert again["history"] == metrics["history"] and again["held_out_products"] == held
    assert len(Gallery.load(out / "gallery.npz")) == 4 * len(gallery)
    assert main(["--config-file", "", "--output-dir", str(tmp_path / "none"), "--eval-only"]) == 2

    # Resume: a third epoch on top of the checkpoint equals an uninterrupted three-epoch run.
    cfg3 = load_config(None, _opts(mini_world, 3))
    resumed = train_recognizer(cfg3, str(out), resume=True)
    fresh = train_recognizer(cfg3, str(tmp_path / "fresh"))
    assert len(resumed["history"]) == 3
    losses = [(h["epoch"], h["loss"], h["mode"]) for h in metrics["history"]]
    assert [(h["epoch"], h["loss"], h["mode"]) for h in resumed["history"][:2]] == losses
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(
        [h["loss"] for h in fresh["history"]], rel=1e-4
    )
    a = torch.load(out / "model_final.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "fresh" / "model_final.pth", weights_only=True)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


@pytest.mark.slow
def test_gallery_from_exemplars_when_training_adds_scenes(mini_world, tmp_path):
    """Training on exemplars and checkout-like scenes; the gallery holds the exemplars only."""
    train, test = mini_world.names["train"], mini_world.names["test"]
    opts = _opts(mini_world, 1) + [
        "RECOGNITION.TRAIN.DATASETS", f"('{train}', '{test}')",
        "RECOGNITION.TRAIN.GALLERY_DATASETS", f"('{train}',)",
        "RECOGNITION.TRAIN.MAX_CROPS_PER_PRODUCT", "6",
    ]  # fmt: skip
    metrics = train_recognizer(load_config(None, opts), str(tmp_path))
    gallery = Gallery.load(tmp_path / "gallery.npz")
    assert len(gallery) == mini_world.counts["train"]["instances"]
    assert metrics["gallery_datasets"] == [train]
    assert len(metrics["held_out_products"]) == 2


@pytest.mark.slow
def test_classification_warm_up_and_cross_entropy_resume(mini_world, tmp_path):
    """CLASSIFY_EPOCHS trains with cross-entropy alone, CE_WEIGHT adds it to the triplet loss;
    the classifier is resumed from the checkpoint and left out of the saved embedder."""
    out = tmp_path / "ce"
    ce = ["RECOGNITION.TRAIN.CLASSIFY_EPOCHS", "1", "RECOGNITION.TRAIN.CE_WEIGHT", "0.5"]
    metrics = train_recognizer(load_config(None, _opts(mini_world, 2) + ce), str(out))
    assert [h["mode"] for h in metrics["history"]] == ["classify", "hard"]
    ckpt = torch.load(out / "last_checkpoint.pth", weights_only=False)
    assert ckpt["classifier"]["fc.weight"].shape == (4, 16)  # 4 known products, D = 16
    load_embedder(str(out / "model_final.pth"))  # strict: an embedder's keys and no others

    cfg3 = load_config(None, _opts(mini_world, 3) + ce)
    resumed = train_recognizer(cfg3, str(out), resume=True)
    fresh = train_recognizer(cfg3, str(tmp_path / "fresh"))
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(
        [h["loss"] for h in fresh["history"]], rel=1e-4
    )
    # Without the cross-entropy the same third epoch has another loss.
    plain = train_recognizer(load_config(None, _opts(mini_world, 3)), str(tmp_path / "plain"))
    assert plain["history"][2]["loss"] != pytest.approx(fresh["history"][2]["loss"], rel=1e-3)
