"""Fast renderer, label-preservation check and the render pipeline, on tiny scenes of our own."""

import json
import uuid

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from pycocotools import mask as mask_util

from dpsnet.synthesis.render import (
    CheckParams,
    CopyRenderer,
    FastRenderer,
    check_labels_preserved,
    estimate_set_stats,
    register_rendered,
    render_dataset,
    set_distance,
)
from dpsnet.synthesis.render import stats as stats_mod
from dpsnet.synthesis.render.check import annotation_mask
from dpsnet.synthesis.render.fast import histogram_match
from dpsnet.synthesis.render.stats import QUANTILE_LEVELS

SIZE = 160


def _item(rng, h, w):
    """A product-like patch: a coloured shape with stripes and a dark label; returns image, mask."""
    patch = np.zeros((h, w, 3), np.uint8)
    patch[:] = rng.integers(40, 220, 3)
    for y in range(0, h, 6):
        patch[y : y + 3] = np.clip(patch[y : y + 3].astype(int) + rng.integers(-80, 80, 3), 0, 255)
    cv2.rectangle(patch, (w // 4, h // 3), (3 * w // 4, 2 * h // 3), (20, 20, 20), -1)
    cv2.putText(
        patch, "AB", (w // 4 + 1, 2 * h // 3 - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255,) * 3
    )
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.5:
        cv2.ellipse(mask, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 1, -1)
    else:
        mask[1:-1, 1:-1] = 1
    return patch, mask.astype(bool)


def _scene(rng, *, background, cast=(0, 0, 0), blur=0.0, noise=0.0, vignette=0.0, items=4):
    """A checkout-like scene and its COCO annotations (visible masks as compressed RLE)."""
    img = np.empty((SIZE, SIZE, 3), np.float32)
    img[:] = background
    owner = np.full((SIZE, SIZE), -1, int)
    for k in range(items):
        h, w = (int(v) for v in rng.integers(28, 48, 2))
        y, x = int(rng.integers(0, SIZE - h)), int(rng.integers(0, SIZE - w))
        patch, m = _item(rng, h, w)
        img[y : y + h, x : x + w][m] = patch[m]
        owner[y : y + h, x : x + w][m] = k
    img += np.asarray(cast, np.float32)
    if vignette:
        yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1) - 0.5
        img *= (1 - vignette * (xx**2 + yy**2) * 2)[..., None]
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    if noise:
        img += rng.normal(0, noise, (SIZE, SIZE, 1))
    anns = []
    for k in range(items):
        vm = owner == k
        if vm.sum() < 40:
            continue
        ys, xs = np.nonzero(vm)
        rle = mask_util.encode(np.asfortranarray(vm.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        box = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        anns.append({"bbox": box, "segmentation": rle, "area": int(vm.sum()), "category_id": 1})
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), anns


def _write_set(root, n, seed, labelled=True, **look):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        img, anns = _scene(rng, **look)
        name = f"im_{i:03d}.png"
        cv2.imwrite(str(root / "images" / name), img)
        images.append({"id": i + 1, "file_name": name, "width": SIZE, "height": SIZE})
        for a in anns:
            annotations.append({**a, "id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0})
    data = {
        "images": images,
        "annotations": annotations if labelled else [],
        "categories": [{"id": 1, "name": "thing", "supercategory": "things"}],
    }
    (root / "instances.json").write_text(json.dumps(data))
    return root / "instances.json", root / "images"


SYNTH_LOOK = dict(background=(200, 200, 200))  # flat, bright, clean: what synthesis produces
REAL_LOOK = dict(background=(70, 110, 120), cast=(-20, 5, 25), blur=1.2, noise=4.0, vignette=0.3)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("render_sets")
    src_json, src_root = _write_set(root / "synth", 6, seed=1, **SYNTH_LOOK)
    tgt_json, tgt_root = _write_set(root / "real", 6, seed=2, labelled=False, **REAL_LOOK)
    src_files = sorted(str(p) for p in src_root.glob("*.png"))
    tgt_files = sorted(str(p) for p in tgt_root.glob("*.png"))
    src_stats = estimate_set_stats(src_files, work_size=SIZE)
    tgt_stats = estimate_set_stats(tgt_files, work_size=SIZE)
    return {
        "root": root,
        "src_json": src_json,
        "src_root": src_root,
        "tgt_root": tgt_root,
        "src_stats": src_stats,
        "tgt_stats": tgt_stats,
        "renderer": FastRenderer(tgt_stats, src_stats),
    }


def _load(path):
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def _anns_of(src_json, image_id):
    data = json.loads(src_json.read_text())
    return [a for a in data["annotations"] if a["image_id"] == image_id]


def test_fast_render_is_deterministic_and_keeps_shape(sets):
    img = _load(sets["src_root"] / "im_000.png")
    r = sets["renderer"]
    a = r.render(img, np.random.default_rng([0, 1]))
    b = r.render(img, np.random.default_rng([0, 1]))
    c = r.render(img, np.random.default_rng([1, 1]))
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, img)


def test_fast_render_moves_the_look_toward_the_target(sets, tmp_path):
    r = sets["renderer"]
    files = []
    for i, p in enumerate(sorted(sets["src_root"].glob("*.png"))):
        out = tmp_path / p.name
        cv2.imwrite(str(out), r.render(_load(p), np.random.default_rng([0, i])))
        files.append(str(out))
    rendered = estimate_set_stats(files, work_size=SIZE)
    before = set_distance(sets["src_stats"], sets["tgt_stats"])
    after = set_distance(rendered, sets["tgt_stats"])
    assert after["colour_w1"] < 0.5 * before["colour_w1"]
    assert after["noise"] < 0.5 * before["noise"]
    assert after["blur"] < 0.5 * before["blur"]
    assert after["vignetting"] < before["vignetting"]


def test_histogram_match_puts_a_flat_background_mid_distribution():
    lab = np.zeros((20, 20, 3), np.float32)
    lab[:] = (90.0, 0.0, 0.0)
    lab[:2, :2] = (10.0, 5.0, 5.0)  # a small dark item
    target = np.stack([np.linspace(0, 100, len(QUANTILE_LEVELS))] * 3).astype(np.float32)
    out = histogram_match(lab, target, 1.0)
    # The background holds 99% of the pixels: the middle of its mass is near the median 50.
    assert abs(float(out[10, 10, 0]) - 50.0) < 3.0
    assert out[0, 0, 0] < out[10, 10, 0]


def test_statistics_are_cached_and_recomputed_when_the_set_changes(sets, tmp_path, monkeypatch):
    files = sorted(str(p) for p in sets["tgt_root"].glob("*.png"))
    cache = tmp_path / "target.json"
    first = estimate_set_stats(files, work_size=SIZE, cache_file=cache)
    calls = []
    real = stats_mod.image_stats
    monkeypatch.setattr(stats_mod, "image_stats", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = estimate_set_stats(files, work_size=SIZE, cache_file=cache)
    assert calls == [] and np.allclose(again.lab_mean, first.lab_mean)
    estimate_set_stats(files[:-1], work_size=SIZE, cache_file=cache)
    assert len(calls) == len(files) - 1


def _erase(image, ann):
    m = annotation_mask(ann, *image.shape[:2]).astype(np.uint8)
    return cv2.inpaint(image, cv2.dilate(m, np.ones((5, 5), np.uint8)), 5, cv2.INPAINT_TELEA)


def _move(image, ann, dx):
    m = annotation_mask(ann, *image.shape[:2]).astype(np.uint8)
    out = _erase(image, ann)
    shift = np.float32([[1, 0, dx], [0, 1, 0]])
    moved = cv2.warpAffine(image, shift, image.shape[1::-1])
    mm = cv2.warpAffine(m, shift, image.shape[1::-1]) > 0
    out[mm] = moved[mm]
    return out


@pytest.mark.parametrize("box_only", [False, True], ids=["mask", "box_only"])
def test_check_passes_a_correct_render_and_catches_erased_and_moved_items(sets, box_only):
    r = sets["renderer"]
    for image_id in (1, 2, 3):
        src = _load(sets["src_root"] / f"im_{image_id - 1:03d}.png")
        anns = _anns_of(sets["src_json"], image_id)
        if box_only:
            anns = [{k: v for k, v in a.items() if k != "segmentation"} for a in anns]
        rendered = r.render(src, np.random.default_rng([0, image_id]))
        good = check_labels_preserved(src, rendered, anns)
        assert good.ok and good.num_checked == len(anns), [i.score for i in good.items]

        victim = max(anns, key=lambda a: a["area"])
        erased = check_labels_preserved(src, _erase(rendered, victim), anns)
        assert not erased.ok
        assert victim["id"] in [i.ann_id for i in erased.failed]

        moved = check_labels_preserved(src, _move(rendered, victim, 12), anns)
        assert victim["id"] in [i.ann_id for i in moved.failed]


def test_check_rejects_a_resized_render_and_skips_tiny_items():
    img = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="keep the image size"):
        check_labels_preserved(img, np.zeros((40, 42, 3), np.uint8), [])
    tiny = {"id": 7, "bbox": [3, 3, 4, 4]}
    res = check_labels_preserved(img, img + 50, [tiny], CheckParams(min_area=64))
    assert res.ok and res.items[0].score is None


class _EraseFirstItem:
    """A renderer that loses an item in image 2 (the failure users saw with CycleGAN)."""

    name = "planted"
    parallel_safe = True

    def __init__(self, inner, anns_by_file):
        self.inner, self.anns_by_file = inner, anns_by_file

    def render_record(self, image, rng, record):
        out = self.inner.render(image, rng)
        anns = self.anns_by_file.get(record["file_name"])
        return _erase(out, max(anns, key=lambda a: a["area"])) if anns else out


def test_render_dataset_drops_failures_keeps_original_labels_and_registers(sets, tmp_path):
    src_json = sets["src_json"]
    data = json.loads(src_json.read_text())
    planted = {"im_001.png": _anns_of(src_json, 2)}
    renderer = _EraseFirstItem(sets["renderer"], planted)
    bad_json = tmp_path / "with_bad.json"
    data_bad = dict(
        data, images=data["images"] + [dict(data["images"][0], id=99, file_name="x.png")]
    )
    bad_json.write_text(json.dumps(data_bad))
    (tmp_path / "src").mkdir()
    for p in sets["src_root"].glob("*.png"):
        (tmp_path / "src" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "src" / "x.png").write_bytes(b"not an image")

    out = tmp_path / "out"
    check = CheckParams(work_size=0)
    report = render_dataset(renderer, str(bad_json), str(tmp_path / "src"), out, check=check)
    assert report["images"] == 7 and report["kept"] == 5
    assert report["dropped_by_check"] == 1 and report["dropped"][0]["file_name"] == "im_001.png"
    assert report["bad_input"] == 1 and "x.png" in report["bad"][0]["error"]
    assert (out / "dropped" / "im_001.png").is_file() and not (
        out / "images" / "im_001.png"
    ).exists()

    written = json.loads((out / "instances.json").read_text())
    kept = {im["id"] for im in written["images"]}
    assert kept == {1, 3, 4, 5, 6}
    assert written["annotations"] == [a for a in data["annotations"] if a["image_id"] in kept]
    assert written["categories"] == data["categories"]

    # Parallel workers give the same bytes; a rerun renders nothing again (resume).
    out2 = tmp_path / "out2"
    render_dataset(renderer, str(bad_json), str(tmp_path / "src"), out2, check=check, num_workers=2)
    for p in (out / "images").glob("*.png"):
        assert p.read_bytes() == (out2 / "images" / p.name).read_bytes()

    class _Fails:
        parallel_safe = False

        def render(self, image, rng):
            raise AssertionError("resume must not render again")

    again = render_dataset(_Fails(), str(bad_json), str(tmp_path / "src"), out, check=check)
    assert again["kept"] == 5 and again["dropped_by_check"] == 1

    name = f"_test_render_{uuid.uuid4().hex[:8]}"
    try:
        register_rendered(name, str(out / "instances.json"), str(out / "images"))
        records = DatasetCatalog.get(name)
        assert len(records) == 5
        assert sum(len(r["annotations"]) for r in records) == len(written["annotations"])
    finally:
        DatasetCatalog.remove(name)


def test_copy_renderer_passes_the_check(sets, tmp_path):
    report = render_dataset(
        CopyRenderer(), str(sets["src_json"]), str(sets["src_root"]), tmp_path, check=CheckParams()
    )
    assert report["kept"] == report["images"] == 6
    assert report["score_quantiles"]["p01"] > 0.99


def test_render_tool_on_the_mini_world(mini_world, tmp_path, capsys):
    import runpy
    from pathlib import Path

    from detectron2.data import MetadataCatalog

    tool = runpy.run_path(str(Path(__file__).resolve().parents[2] / "tools" / "render.py"))
    name = f"_test_render_mw_{uuid.uuid4().hex[:8]}"
    source = mini_world.names["val"]
    argv = [
        "render",
        "--config-file",
        str(Path(__file__).resolve().parents[2] / "configs" / "Render" / "fast_mini_world.yaml"),
        *("RENDER.SOURCE", source, "RENDER.TARGET", mini_world.names["pool"]),
        *("RENDER.OUTPUT_DIR", str(tmp_path), "RENDER.NUM_WORKERS", "0"),
        *("RENDER.DATASET_NAME", name),
    ]
    try:
        assert tool["main"](argv) == 0
        summary = json.loads(capsys.readouterr().out.splitlines()[0])
        n = mini_world.counts["val"]["images"]
        assert summary["images"] == n and summary["dataset"] == name
        assert summary["kept"] + summary["dropped_by_check"] == n and summary["kept"] >= n - 1
        report = json.loads((tmp_path / "render_report.json").read_text())
        # (val is already in the pool's domain: only that the look was measured is checked here)
        assert {"source_to_target", "rendered_to_target"} <= set(report["look"])
        records = DatasetCatalog.get(name)
        assert len(records) == summary["kept"]
        src_meta, meta = MetadataCatalog.get(source), MetadataCatalog.get(name)
        assert meta.thing_classes == src_meta.thing_classes
        assert {r["level"] for r in records} <= {"easy", "medium", "hard"}
    finally:
        DatasetCatalog.remove(name)
    assert tool["main"](["render", "RENDER.SOURCE", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_a_json_without_image_root_finds_its_images_subfolder(sets, tmp_path):
    """tools/synthesize.py layout: OUT/instances_synth.json beside OUT/images/."""
    from dpsnet.synthesis.render.pipeline import list_images, resolve_coco

    json_file, root = resolve_coco(str(sets["src_json"]))
    assert root == str(sets["src_root"])
    files = list_images(json_file)
    assert files and all(f.startswith(str(sets["src_root"])) for f in files)
    # file names that already carry the subfolder stay relative to the JSON's folder
    data = json.loads(sets["src_json"].read_text())
    for im in data["images"]:
        im["file_name"] = "images/" + im["file_name"]
    other = sets["src_json"].parent / "with_prefix.json"
    other.write_text(json.dumps(data))
    assert resolve_coco(str(other))[1] == str(sets["src_json"].parent)
    # an explicit root always wins
    assert resolve_coco(str(sets["src_json"]), str(tmp_path))[1] == str(tmp_path)
