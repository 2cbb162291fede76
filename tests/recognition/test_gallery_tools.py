"""tools/build_gallery.py and tools/add_product.py on the mini world: a product added through
the gallery alone changes the answers for its crops and for nothing else."""

import runpy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dpsnet.recognition import UNKNOWN, Gallery, load_embedder
from dpsnet.recognition.products import load_crops

CROP_SIZE, PADDING = 32, 0.1  # the crop geometry of conftest.tiny_weights

ROOT = Path(__file__).resolve().parents[2]


def _tool(name):
    return runpy.run_path(str(ROOT / "tools" / f"{name}.py"))["main"]


@pytest.fixture(scope="module")
def exemplars(mini_world):
    crops, ids, names = load_crops([mini_world.names["train"]], CROP_SIZE, PADDING)
    return crops, ids, names


def test_add_product_changes_its_answers_and_nothing_else(
    mini_world, tiny_weights, exemplars, tmp_path, capsys
):
    crops, ids, names = exemplars
    products = sorted(set(ids.tolist()))
    new = products[-1]
    path = tmp_path / "gallery.npz"
    args = ["--weights", tiny_weights, "--datasets", mini_world.names["train"]]
    args += ["--output", str(path), "--products", *map(str, products[:-1])]
    assert _tool("build_gallery")(args) == 0
    gallery = Gallery.load(path)
    assert gallery.products == products[:-1]
    assert gallery.meta["embedder"]["crop_size"] == CROP_SIZE
    model, _ = load_embedder(tiny_weights)
    # Queries: every exemplar crop, and the validation crops (the products on checkout trays).
    val_crops, val_ids, _ = load_crops([mini_world.names["val"]], CROP_SIZE, PADDING)
    queries = model.embed(crops)
    val_queries = model.embed(val_crops)
    before, _ = gallery.classify(queries)
    val_before, _ = gallery.classify(val_queries)
    assert not (before == new).any()

    argv = ["--gallery", str(path), "--weights", tiny_weights, "--id", str(new)]
    assert _tool("add_product")([*argv, "--dataset", mini_world.names["train"]]) == 0
    after_gallery = Gallery.load(path)
    assert after_gallery.products == products
    assert after_gallery.names[new] == names[new]
    after, _ = after_gallery.classify(queries)
    val_after, _ = after_gallery.classify(val_queries)
    # Its own exemplars are now named (each is its own nearest neighbour) ...
    assert (after[ids == new] == new).all()
    # ... the other products' exemplar answers are unchanged ...
    assert (after[ids != new] == before[ids != new]).all()
    # ... and any answer that changed elsewhere changed to the new product only.
    changed = val_after != val_before
    assert (val_after[changed] == new).all()

    # Adding it again is refused (exit status 2, one clear line) unless --replace.
    capsys.readouterr()
    assert _tool("add_product")([*argv, "--dataset", mini_world.names["train"]]) == 2
    assert "already in the gallery" in capsys.readouterr().err
    assert _tool("add_product")([*argv, "--dataset", mini_world.names["train"], "--replace"]) == 0


def test_add_product_from_photos(mini_world, tiny_weights, exemplars, tmp_path):
    from detectron2.data import DatasetCatalog

    crops, ids, _ = exemplars
    path = tmp_path / "gallery.npz"
    model, _ = load_embedder(tiny_weights)
    Gallery(model.embed(crops).numpy(), ids, meta={}).save(path)
    photos = []
    for i, record in enumerate(DatasetCatalog.get(mini_world.names["train"])[:2]):
        x, y, w, h = (int(v) for v in record["annotations"][0]["bbox"])
        photo = cv2.imread(record["file_name"])[y : y + h, x : x + w]
        photos.append(str(tmp_path / f"photo{i}.png"))
        cv2.imwrite(photos[-1], photo)
    argv = ["--gallery", str(path), "--weights", tiny_weights, "--id", "999", "--name", "new"]
    assert _tool("add_product")([*argv, "--images", *photos]) == 0
    gallery = Gallery.load(path)
    assert (gallery.product_ids == 999).sum() == 2 and gallery.names[999] == "new"


def test_unknown_distance_calibration(mini_world, tiny_weights, tmp_path):
    path = tmp_path / "gallery.npz"
    args = ["--weights", tiny_weights, "--datasets", mini_world.names["train"]]
    assert _tool("build_gallery")([*args, "--output", str(path), "--unknown-distance", "0.3"]) == 0
    assert Gallery.load(path).unknown_distance == pytest.approx(0.3)
    assert (
        _tool("build_gallery")(
            [*args, "--output", str(path), "--calibrate", mini_world.names["val"]]
        )
        == 0
    )
    calibrated = Gallery.load(path)
    assert 0 < calibrated.unknown_distance < 2.0
    # Beyond the calibrated distance a crop is an unknown product.
    far = -calibrated.embeddings[:1]
    assert calibrated.classify(far)[0][0] == UNKNOWN


@pytest.mark.parametrize("corruption", ["garbage", "truncated"])
def test_tools_refuse_a_corrupt_gallery(tiny_weights, tmp_path, capsys, corruption, mini_world):
    good = tmp_path / "good.npz"
    Gallery(np.ones((2, 16), np.float32), [1, 2]).save(good)
    bad = tmp_path / "bad.npz"
    data = good.read_bytes()
    bad.write_bytes(b"\x00garbage" * 50 if corruption == "garbage" else data[: len(data) // 3])
    argv = ["--gallery", str(bad), "--weights", tiny_weights, "--id", "5"]
    assert _tool("add_product")([*argv, "--dataset", mini_world.names["train"]]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # the last line: see test_open_set_demo
    assert err.startswith("error: ") and str(bad) in err and "corrupt" in err
    assert bad.read_bytes()[:8] == (b"\x00garbage" if corruption == "garbage" else data[:8])


def test_add_product_refuses_another_embedder(tiny_weights, tmp_path, capsys, mini_world):
    path = tmp_path / "gallery.npz"
    Gallery(np.ones((1, 16), np.float32), [1], meta={"embedder": {"fingerprint": "abc"}}).save(path)
    argv = ["--gallery", str(path), "--weights", tiny_weights, "--id", "5"]
    assert _tool("add_product")([*argv, "--dataset", mini_world.names["train"]]) == 2
    assert "another recogniser" in capsys.readouterr().err


def test_gallery_views_and_added_products_get_the_same(
    mini_world, tiny_weights, exemplars, tmp_path
):
    from dpsnet.recognition.views import embed_views, num_views

    crops, ids, _ = exemplars
    model, _ = load_embedder(tiny_weights)
    views = {"rotations": True, "jitter_views": 2}
    assert num_views(views) == 6 and num_views(None) == 1
    emb = embed_views(model, crops[:5], views, seed=0)
    assert emb.shape == (30, 16)
    # View-major: rows 5..9 are the 90-degree rotations of the five crops.
    rotated = model.embed(torch.rot90(crops[:5].float() / 255, 1, (2, 3))).numpy()
    assert np.allclose(emb[5:10], rotated, atol=1e-5)
    assert np.allclose(emb[:5], model.embed(crops[:5]).numpy(), atol=1e-5)
    assert np.allclose(embed_views(model, crops[:5], views, seed=0), emb)  # seeded

    products = sorted(set(ids.tolist()))
    path = tmp_path / "gallery.npz"
    args = ["--weights", tiny_weights, "--datasets", mini_world.names["train"]]
    args += ["--output", str(path), "--products", *map(str, products[:-1])]
    assert _tool("build_gallery")([*args, "--rotations", "--jitter-views", "1"]) == 0
    gallery = Gallery.load(path)
    assert len(gallery) == 5 * int((ids != products[-1]).sum())
    argv = ["--gallery", str(path), "--weights", tiny_weights, "--id", str(products[-1])]
    assert _tool("add_product")([*argv, "--dataset", mini_world.names["train"]]) == 0
    assert (Gallery.load(path).product_ids == products[-1]).sum() == 5 * (ids == products[-1]).sum()


def test_add_product_from_several_datasets(mini_world, tiny_weights, tmp_path):
    """Exemplars and checkout-like scenes of one product go into the gallery together."""
    train, val = mini_world.names["train"], mini_world.names["val"]
    _, val_ids, _ = load_crops([val], CROP_SIZE, PADDING)
    new = int(val_ids[0])
    _, train_ids, _ = load_crops([train], CROP_SIZE, PADDING)
    path = tmp_path / "gallery.npz"
    args = ["--weights", tiny_weights, "--datasets", train, "--output", str(path)]
    others = sorted({int(p) for p in train_ids} - {new})
    assert _tool("build_gallery")([*args, "--products", *map(str, others)]) == 0
    argv = ["--gallery", str(path), "--weights", tiny_weights, "--id", str(new)]
    assert _tool("add_product")([*argv, "--dataset", train, val]) == 0
    gallery = Gallery.load(path)
    expected = int((train_ids == new).sum() + (val_ids == new).sum())
    assert int((gallery.product_ids == new).sum()) == expected
