"""Exemplar masks: coarse masks, quality score, refinement."""

import json
import logging
import runpy
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dpsnet.engine import load_config
from dpsnet.synthesis.coarse import (
    CoarseParams,
    box_extent,
    clean_mask,
    coarse_mask,
    fill_holes,
    mask_quality,
)
from dpsnet.synthesis.extract import extract_masks_from_config, load_exemplars
from dpsnet.synthesis.mask_jobs import MaskSettings
from dpsnet.synthesis.refine import (
    MattingParams,
    NetParams,
    matting_snap,
    net_input,
    net_output_to_box,
    net_target,
    predict_refiner,
    train_refiner,
)
from dpsnet.utils.io import BadInputError


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def synthetic_exemplar(
    seed: int = 0, size: int = 160, angle: float = 30.0, shape: str = "rect", striped: bool = True
):
    """A product (striped, or plain) on a light, noisy turntable.

    Returns:
        (image (size, size, 3) uint8 BGR, true mask bool, tight bbox [x, y, w, h]).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    bg = 215 + 20 * (xx / size)[..., None] + rng.normal(0, 2, (size, size, 3))
    truth = np.zeros((size, size), np.uint8)
    c = (size // 2 + int(rng.integers(-8, 9)), size // 2 + int(rng.integers(-8, 9)))
    if shape == "rect":
        pts = cv2.boxPoints((c, (0.5 * size, 0.3 * size), angle)).astype(np.int32)
        cv2.fillPoly(truth, [pts], 1)
    else:
        cv2.ellipse(truth, c, (int(0.3 * size), int(0.2 * size)), angle, 0, 360, 1, -1)
    stripes = ((xx + yy) // 6) % 2 if striped else np.zeros_like(xx)
    fg = np.where(stripes[..., None] == 1, (40, 60, 200), (200, 90, 30)).astype(np.float64)
    image = np.where(truth[..., None] == 1, fg, bg)
    image = cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.uint8), (3, 3), 0)
    ys, xs = np.nonzero(truth)
    bbox = [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)]
    return image, truth.astype(bool), bbox


def box_truth(truth: np.ndarray, bbox) -> np.ndarray:
    x0, y0, x1, y1 = box_extent(bbox, *truth.shape)
    return truth[y0:y1, x0:x1]


def test_box_extent_is_integer_cover_clipped_to_image():
    assert box_extent([10.2, 5.0, 20.5, 7.9], 100, 100) == (10, 5, 31, 13)
    assert box_extent([-3, -1, 10, 10], 8, 6) == (0, 0, 6, 8)


def test_fill_holes_and_clean_keep_the_largest_piece():
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5:8, 5:8] = False  # a hole
    m[15:17, 15:17] = True  # a speck
    filled = fill_holes(m)
    assert filled[6, 6] and filled[16, 16]
    cleaned, share = clean_mask(m)
    assert cleaned[6, 6] and not cleaned[16, 16]
    assert share == pytest.approx((100 - 9) / (100 - 9 + 4))


@pytest.mark.parametrize("method,min_iou", [("grabcut", 0.9), ("edges", 0.8)])
@pytest.mark.parametrize("shape", ["rect", "ellipse"])
def test_coarse_mask_finds_the_product(method, min_iou, shape):
    image, truth, bbox = synthetic_exemplar(shape=shape)
    mask, share = coarse_mask(image, bbox, CoarseParams(method=method), seed=0)
    assert mask.shape == box_truth(truth, bbox).shape
    assert share > 0.5
    assert iou(mask, box_truth(truth, bbox)) >= min_iou


def test_grabcut_is_seeded():
    image, _, bbox = synthetic_exemplar(seed=3)
    params = CoarseParams(iterations=2)
    a, _ = coarse_mask(image, bbox, params, seed=7)
    coarse_mask(image, bbox, params, seed=1)  # moves OpenCV's generator
    b, _ = coarse_mask(image, bbox, params, seed=7)
    assert np.array_equal(a, b)


def test_flat_image_gives_an_empty_mask():
    image = np.full((64, 64, 3), 200, np.uint8)
    mask, share = coarse_mask(image, [10, 10, 30, 30], CoarseParams(), seed=0)
    assert mask.shape == (30, 30)
    assert share == 0.0 and not mask.any()
    assert mask_quality(image, [10, 10, 30, 30], mask, share)["quality"] == 0.0


def test_unknown_coarse_method_is_refused():
    image, _, bbox = synthetic_exemplar()
    with pytest.raises(ValueError, match="unknown coarse mask method"):
        coarse_mask(image, bbox, CoarseParams(method="magic"))


def test_quality_prefers_the_true_mask_to_broken_ones():
    image, truth, bbox = synthetic_exemplar(shape="ellipse", striped=False)
    t = box_truth(truth, bbox)
    good = mask_quality(image, bbox, t, 1.0)
    assert good["quality"] > 0.8 and good["tightness"] == 1.0
    half = t.copy()
    half[:, : t.shape[1] // 2] = False  # misses a side of the box
    assert mask_quality(image, bbox, half, 1.0)["quality"] < 0.6
    shrunk = cv2.erode(t.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0  # outline off the edges
    assert mask_quality(image, bbox, shrunk, 1.0)["edge_support"] < 0.5 * good["edge_support"]
    assert mask_quality(image, bbox, t, 0.5)["quality"] == pytest.approx(good["quality"] / 2, 0.01)


def test_matting_snap_moves_a_shifted_outline_back():
    image, truth, bbox = synthetic_exemplar(shape="ellipse", angle=10)
    t = box_truth(truth, bbox)
    k = np.ones((3, 3), np.uint8)
    for wrong in (cv2.erode(t.astype(np.uint8), k) > 0, cv2.dilate(t.astype(np.uint8), k) > 0):
        snapped = matting_snap(image, bbox, wrong, MattingParams(band=1, radius=2.0))
        assert snapped.shape == t.shape
        assert iou(snapped, t) > iou(wrong, t)
    assert not matting_snap(image, bbox, np.zeros_like(t), MattingParams()).any()


def test_refiner_network_trains_and_maps_back_to_the_box():
    params = NetParams(input_size=32, width=4, iterations=12, batch_size=4, seed=0)
    xs, ys, views = [], [], []
    for s in range(4):
        image, truth, bbox = synthetic_exemplar(seed=s, size=96, angle=20 * s)
        x, window = net_input(image, bbox, params)
        extent = box_extent(bbox, *image.shape[:2])
        xs.append(x)
        ys.append(net_target(box_truth(truth, bbox), extent, window, params.input_size))
        views.append((extent, window, box_truth(truth, bbox)))
    assert xs[0].shape == (4, 32, 32) and ys[0].shape == (32, 32)
    assert 0.0 < ys[0].mean() < 1.0
    net = train_refiner(np.stack(xs), np.stack(ys), params)
    again = train_refiner(np.stack(xs), np.stack(ys), params)
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)  # seeded
    prob = predict_refiner(net, np.stack(xs), batch_size=3)
    assert prob.shape == (4, 32, 32) and np.isfinite(prob).all()
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    extent, window, t = views[0]
    assert net_output_to_box(prob[0], extent, window).shape == t.shape
    with pytest.raises(ValueError, match="no clean coarse masks"):
        train_refiner(np.zeros((0, 4, 32, 32), np.float32), np.zeros((0, 32, 32)), params)


# ---------------------------------------------------------------------------------------------
# The extraction stage on the tiny fixture world.


def extract(world, out, *opts, workers=1, **kw):
    cfg = load_config(None, list(opts))
    return extract_masks_from_config(cfg, out, dataset=world.names["train"], workers=workers, **kw)


def mask_files(out) -> dict:
    return {p.name: p.read_bytes() for p in sorted((Path(out) / "masks").glob("*.png"))}


@pytest.fixture(scope="module")
def extracted(mini_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("masks")
    paths = mini_world.paths
    result = extract(
        mini_world,
        out,
        truth_dir=paths["true_masks"],
        planted_bad_poses=paths["planted_bad_poses"],
    )
    return out, result


def test_index_follows_the_synthesis_interface(extracted, mini_world):
    out, result = extracted
    index = json.loads((out / "index.json").read_text())
    assert index == result["index"]
    data = json.loads(mini_world.paths["train_json"].read_text())
    assert index["version"] == 1 and index["dataset"] == mini_world.names["train"]
    assert index["categories"] == data["categories"]
    assert len(index["items"]) == len(data["images"])
    assert [it["image_id"] for it in index["items"]] == sorted(i["id"] for i in data["images"])
    for it in index["items"]:
        assert Path(it["file_name"]).is_absolute() and Path(it["file_name"]).is_file()
        assert it["kept"] == (it["drop_reason"] == "")
        assert it["drop_reason"] in ("", "pose", "quality")
        assert 0.0 <= it["quality"] <= 1.0 and 0.0 <= it["coarse_quality"] <= 1.0
        x0, y0, x1, y1 = it["extent"]
        assert (x0, y0, x1, y1) == box_extent(it["bbox"], 128, 128)
        mask = cv2.imread(str(out / it["mask"]), cv2.IMREAD_UNCHANGED)
        assert it["mask"] == f"masks/{it['image_id']}.png"
        assert mask.shape == (y1 - y0, x1 - x0) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert it["area"] == int((mask > 0).sum())


def test_reports_are_computed_correctly(extracted, mini_world):
    out, result = extracted
    items = result["index"]["items"]
    truth_dir = mini_world.paths["true_masks"]
    ious = {"coarse": [], "refined": []}
    for it in items:
        truth = cv2.imread(str(truth_dir / (Path(it["file_name"]).stem + ".png")), 0) > 127
        for name, field in (("coarse", "coarse_mask"), ("refined", "mask")):
            full = np.zeros_like(truth)
            x0, y0, x1, y1 = it["extent"]
            full[y0:y1, x0:x1] = cv2.imread(str(out / it[field]), 0) > 127
            ious[name].append(iou(full, truth))
    report = json.loads((out / "mask_report.json").read_text())["truth"]
    assert report["all"]["n"] == len(items) and report["missing_truth"] == 0
    for name in ("coarse", "refined"):
        assert report["all"][f"mean_iou_{name}"] == pytest.approx(np.mean(ious[name]), abs=1e-3)
    kept = [i for i, it in enumerate(items) if it["kept"]]
    want = np.mean([ious["refined"][i] for i in kept])
    assert report["kept"]["mean_iou_refined"] == pytest.approx(want, abs=1e-3)
    # The method works on the fixture world too (a regression would show here).
    assert report["all"]["mean_iou_refined"] >= 0.85

    bad = set(json.loads(mini_world.paths["planted_bad_poses"].read_text())["bad_image_ids"])
    dropped = {it["image_id"] for it in items if it["drop_reason"] == "pose"}
    planted = json.loads((out / "pose_report.json").read_text())["planted_bad_poses"]
    assert planted["pose_drops"]["precision"] == pytest.approx(len(dropped & bad) / len(dropped))
    assert planted["pose_drops"]["recall"] == pytest.approx(len(dropped & bad) / len(bad))
    assert planted["pose_drops"]["recall"] >= 0.8 and planted["pose_drops"]["precision"] >= 0.8
    products = json.loads((out / "pose_report.json").read_text())["products"]
    assert sum(p["kept"] for p in products) == sum(it["kept"] for it in items)


def test_reruns_reuse_the_cache(mini_world, tmp_path):
    first = extract(mini_world, tmp_path)
    n = len(first["index"]["items"])
    assert first["mask_report"]["run"]["computed"] == n
    before = mask_files(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "masks").iterdir()}
    again = extract(mini_world, tmp_path)
    assert (again["mask_report"]["run"]["computed"], again["mask_report"]["run"]["reused"]) == (
        0,
        n,
    )
    assert again["index"]["items"] == first["index"]["items"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "masks").iterdir()} == stamps
    # Decisions are re-made without recomputing masks.
    strict = extract(mini_world, tmp_path, "SYNTHESIS.MASKS.MIN_QUALITY", "1.01")
    assert strict["mask_report"]["run"]["computed"] == 0
    assert all(it["drop_reason"] == "quality" for it in strict["index"]["items"])
    # A mask setting changes the keys: everything is computed again.
    other = extract(mini_world, tmp_path, "SYNTHESIS.MASKS.REFINE.METHOD", "none")
    assert other["mask_report"]["run"]["computed"] == n
    # A run killed half-way: the journal's records are reused, the rest computed.
    back = extract(mini_world, tmp_path)
    assert mask_files(tmp_path) == before
    assert back["index"]["items"] == first["index"]["items"]  # no stale quality drop or note
    (tmp_path / "index.json").unlink()
    lines = [json.dumps(it) for it in back["index"]["items"][: n // 2]]
    (tmp_path / ".journal.jsonl").write_text("\n".join(lines) + '\n{"image_id": 1, "cut')
    resumed = extract(mini_world, tmp_path)
    assert resumed["mask_report"]["run"]["reused"] == n // 2
    assert resumed["index"]["items"] == back["index"]["items"]
    assert not (tmp_path / ".journal.jsonl").exists()


def test_corrupt_and_empty_exemplars_are_skipped_with_a_warning(mini_world, tmp_path, caplog):
    root = tmp_path / "images"
    shutil.copytree(mini_world.paths["train_images"], root)
    data = json.loads(mini_world.paths["train_json"].read_text())
    corrupt, flat, missing = (data["images"][i]["file_name"] for i in (0, 3, 5))
    (root / corrupt).write_bytes(b"\xff\xd8 this is not a jpeg")
    cv2.imwrite(str(root / flat), np.full((128, 128, 3), 200, np.uint8))
    (root / missing).unlink()
    with caplog.at_level(logging.WARNING, logger="dpsnet"):
        cfg = load_config(None, [])
        result = extract_masks_from_config(
            cfg, tmp_path / "out", json_file=mini_world.paths["train_json"], image_root=root
        )
    by_name = {Path(it["file_name"]).name: it for it in result["index"]["items"]}
    assert by_name[corrupt]["drop_reason"] == "unreadable"
    assert by_name[missing]["drop_reason"] == "unreadable"
    assert by_name[flat]["drop_reason"] == "empty"
    assert not any(by_name[f]["kept"] for f in (corrupt, flat, missing))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name in (corrupt, flat, missing):
        assert any(name in w for w in warned), (name, warned)
    others = [it for n, it in by_name.items() if n not in (corrupt, flat, missing)]
    assert all(it["drop_reason"] in ("", "pose", "quality") for it in others)
    assert sum(it["kept"] for it in others) >= len(others) // 2


@pytest.mark.slow
def test_workers_give_the_same_masks(mini_world, extracted, tmp_path):
    out, result = extracted
    two = extract(mini_world, tmp_path, workers=2)
    assert mask_files(tmp_path) == mask_files(out)
    assert two["index"]["items"] == result["index"]["items"]


@pytest.mark.slow
def test_net_refinement_trains_once_and_is_cached(mini_world, tmp_path):
    opts = ["SYNTHESIS.MASKS.REFINE.METHOD", "net", "SYNTHESIS.MASKS.REFINE.NET.ITERATIONS", "5"]
    opts += ["SYNTHESIS.MASKS.REFINE.NET.INPUT_SIZE", "32", "SYNTHESIS.MASKS.REFINE.NET.WIDTH", "4"]
    first = extract(mini_world, tmp_path, *opts, "SYNTHESIS.MASKS.REFINE.NET.MIN_QUALITY", "0.0")
    nets = list((tmp_path / "refiner").glob("*.pt"))
    assert len(nets) == 1
    items = first["index"]["items"]
    assert all((tmp_path / it["mask"]).is_file() for it in items if it["area"])
    again = extract(mini_world, tmp_path, *opts, "SYNTHESIS.MASKS.REFINE.NET.MIN_QUALITY", "0.0")
    assert again["mask_report"]["run"]["computed"] == 0
    assert again["index"]["items"] == items


def test_tool(mini_world, tmp_path):
    main = runpy.run_path(str(Path(__file__).parents[2] / "tools" / "extract_masks.py"))["main"]
    out = tmp_path / "out"
    args = ["--dataset", mini_world.names["train"], "--output", str(out), "--workers", "1"]
    assert main(args + ["SYNTHESIS.POSE.MIN_AREA_RATIO", "0.0"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert not any(it["drop_reason"] == "pose" for it in index["items"])
    assert (out / "pose_report.json").is_file() and (out / "mask_report.json").is_file()
    assert main(["--dataset", "no_such_dataset", "--output", str(out)]) == 2
    assert main(args + ["SYNTHESIS.MASKS.NO_SUCH_KEY", "1"]) == 2
    assert main(args + ["--truth-dir", str(tmp_path / "nowhere")]) == 2
    with pytest.raises(SystemExit):
        main(["--json", "x.json", "--output", str(out)])  # no --image-root


def test_bad_settings_and_sources():
    with pytest.raises(ValueError, match="unknown refinement"):
        MaskSettings(refine="magic")
    with pytest.raises(BadInputError, match="not registered"):
        load_exemplars("no_such_dataset")
    with pytest.raises(BadInputError, match="JSON file and an image root"):
        load_exemplars()
