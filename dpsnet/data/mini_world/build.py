"""``build_mini_world``: write the whole mini world (RPC layout + a D2S-style variant) to disk.

Layout under ``root`` (exactly RPC's, plus side files that RPC does not have)::

    train2019/*.jpg                      exemplars: one product per image
    val2019/*.jpg, test2019/*.jpg        checkout images (``level`` easy/medium/hard)
    instances_{train,val,test}2019.json  RPC schema
    pool/*.jpg, instances_pool.json      UNLABELLED checkout images (no annotations, no level)
    pool_groundtruth.json                the pool's hidden labels: read only by audits
    train2019_true_masks/<stem>.png      true mask of every exemplar (0/255), kept apart
    train2019_planted_bad_poses.json     which exemplars are thin side views (pose pruning truth)
    d2s/images/*.jpg, d2s/annotations/D2S_{training,validation,validation_wo_occlusion}.json
    manifest.json                        sizes, seed, the generator's own counts

Every image draws from its own generator seeded with (seed, split, index): the output depends
on the seed only, whatever the number of worker processes.
"""

import json
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from dpsnet.data.mini_world.products import SUPERCATEGORIES, make_catalogue, render_product
from dpsnet.data.mini_world.render import (
    LEVELS,
    exemplar_background,
    noise_field,
    pick_items,
    premultiply,
    render_checkout,
    render_exemplar,
    tray_background,
)
from dpsnet.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

#: Bumped whenever the generator's output changes, so a stale world on disk gets rebuilt.
GENERATOR_VERSION = 2

#: Default sizes (a CPU demo): keyword arguments of ``build_mini_world``.
DEFAULT_SIZES = dict(
    num_products=20,
    views_per_product=12,
    bad_views_per_product=2,
    val_images=60,
    test_images=150,
    pool_images=300,
    d2s_views_per_product=3,
    d2s_val_images=30,
    exemplar_size=256,
    image_size=384,
    lookalike_pairs=3,
)

LEVEL_NAMES = ("easy", "medium", "hard")
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3, "pool": 4, "d2s_training": 5, "d2s_validation": 6}
#: First image id of each split: ids never collide across splits (pool vs test in particular).
ID_OFFSETS = {"train": 1, "val": 100_001, "test": 200_001, "pool": 300_001}
_JPEG = [cv2.IMWRITE_JPEG_QUALITY, 92]


@dataclass
class MiniWorld:
    """What ``build_mini_world`` made.

    Attributes:
        root: the world's folder.
        seed: its seed.
        sizes: the sizes it was built with (``DEFAULT_SIZES`` keys).
        counts: the generator's own counts, per split (``train``, ``val``, ``test``, ``pool``,
            ``d2s_training``, ``d2s_validation``): ``{"images", "instances", "per_level":
            {level: {"images", "instances"}}, "per_category": {name: instances}}``.
        names: registered dataset names by split key (filled by ``register_mini_world``).
    """

    root: Path
    seed: int
    sizes: dict
    counts: dict
    names: dict = field(default_factory=dict)

    @property
    def paths(self) -> dict:
        """Files and folders of the world, by role."""
        r = self.root
        return {
            "train_images": r / "train2019",
            "val_images": r / "val2019",
            "test_images": r / "test2019",
            "pool_images": r / "pool",
            "train_json": r / "instances_train2019.json",
            "val_json": r / "instances_val2019.json",
            "test_json": r / "instances_test2019.json",
            "pool_json": r / "instances_pool.json",
            "pool_groundtruth": r / "pool_groundtruth.json",
            "true_masks": r / "train2019_true_masks",
            "planted_bad_poses": r / "train2019_planted_bad_poses.json",
            "d2s_images": r / "d2s" / "images",
            "d2s_training_json": r / "d2s" / "annotations" / "D2S_training.json",
            "d2s_validation_json": r / "d2s" / "annotations" / "D2S_validation.json",
            "d2s_validation_wo_occlusion_json": r
            / "d2s"
            / "annotations"
            / "D2S_validation_wo_occlusion.json",
            "manifest": r / "manifest.json",
        }


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


def _categories(specs: list) -> list:
    return [{"supercategory": s.supercategory, "id": s.category_id, "name": s.name} for s in specs]


def _write_jpg(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", image, _JPEG)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the image")
    path.write_bytes(buf.tobytes())


class _World:
    """The products and their sprites, shared by every image job (also in worker processes)."""

    def __init__(self, seed: int, sizes: dict):
        self.seed, self.sizes = seed, sizes
        self.specs = make_catalogue(
            sizes["num_products"], sizes["lookalike_pairs"], np.random.default_rng([seed, 0])
        )
        self.by_id = {s.category_id: s for s in self.specs}
        fr = [s.size_frac for s in self.specs]
        self.frac_lo, self.frac_hi = min(fr), max(fr)
        long_side = int(max(sizes["exemplar_size"] * 0.8, self.frac_hi * sizes["image_size"] * 1.2))
        self.sprites = {
            s.category_id: premultiply(*render_product(s, long_side)) for s in self.specs
        }
        # Banks of backgrounds and noise, varied per image: drawing them anew for every image
        # would be most of the build time.
        bank_rng = np.random.default_rng([seed, 9])
        self.trays = [tray_background(sizes["image_size"], bank_rng) for _ in range(12)]
        self.noise = noise_field(max(sizes["image_size"], sizes["exemplar_size"]), bank_rng)
        self.turntables = [exemplar_background(sizes["exemplar_size"], bank_rng) for _ in range(8)]

    def exemplar_long_px(self, cat: int) -> float:
        """Exemplar size follows the product's real size (fixed camera distance)."""
        span = max(self.frac_hi - self.frac_lo, 1e-6)
        t = (self.by_id[cat].size_frac - self.frac_lo) / span
        return self.sizes["exemplar_size"] * (0.45 + 0.25 * t)


def _exemplar_job(index: int, cat: int, view_idx: int, bad: bool, out: Path):
    """Render exemplar ``index``; returns (image entry fields, bbox, view record)."""
    world = _WORLD
    rng = _rng(world.seed, "train", index)
    sz = world.sizes["exemplar_size"]
    view = {
        "camera": int(view_idx % 4),
        "rotation_deg": float(rng.uniform(0, 360)),
        "axis": "x" if rng.random() < 0.5 else "y",
        # Thin side views are planted: a real camera never sees a product that flat on a tray.
        "foreshortening": float(rng.uniform(0.12, 0.28) if bad else rng.uniform(0.78, 1.0)),
    }
    long_px = world.exemplar_long_px(cat) * rng.uniform(0.96, 1.04)
    image, mask = render_exemplar(
        world.sprites[cat], sz, long_px, view, rng, world.turntables, world.noise
    )
    name = f"p{cat:03d}_v{view_idx:02d}.jpg"
    _write_jpg(out / "train2019" / name, image)
    cv2.imwrite(
        str(out / "train2019_true_masks" / (name[:-4] + ".png")), mask.astype(np.uint8) * 255
    )
    ys, xs = np.nonzero(mask)
    bbox = [
        int(xs.min()),
        int(ys.min()),
        int(xs.max() - xs.min() + 1),
        int(ys.max() - ys.min() + 1),
    ]
    return name, bbox, view


def _checkout_job(split: str, index: int, level: str, folder: Path, name: str):
    world = _WORLD
    rng = _rng(world.seed, split, index)
    cats = pick_items(level, [s.category_id for s in world.specs], rng)
    image, items = render_checkout(
        world.sprites, world.by_id, world.sizes["image_size"], cats, rng, world.trays, world.noise
    )
    _write_jpg(folder / name, image)
    return items


def _rle(item: dict, size: int) -> dict:
    full = np.zeros((size, size), np.uint8, order="F")
    x, y, crop = item["mask_crop"]
    full[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
    rle = mask_utils.encode(np.asfortranarray(full))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _ann(ann_id: int, image_id: int, item: dict, segmentation) -> dict:
    x, y, w, h = item["bbox"]
    return {
        "area": item["area"],
        "bbox": [x, y, w, h],
        "category_id": item["category_id"],
        "id": ann_id,
        "image_id": image_id,
        "iscrowd": 0,
        "segmentation": segmentation,
        "point_xy": [x + w / 2, y + h / 2],
    }


def _count(images: list, anns: list, specs: list) -> dict:
    """Per-split counts in the same structure ``dpsnet.data.check`` summarises a JSON with."""
    name_of = {s.category_id: s.name for s in specs}
    level_of = {im["id"]: im.get("level") for im in images}
    per_level = {}
    for im in images:
        if im.get("level") is not None:
            per_level.setdefault(im["level"], {"images": 0, "instances": 0})["images"] += 1
    for a in anns:
        lvl = level_of[a["image_id"]]
        if lvl is not None:
            per_level[lvl]["instances"] += 1
    per_cat = Counter(name_of[a["category_id"]] for a in anns)
    return {
        "images": len(images),
        "instances": len(anns),
        "per_level": per_level,
        "per_category": {s.name: per_cat.get(s.name, 0) for s in specs},
    }


def _rpc_json(images: list, anns: list, specs: list, split: str) -> dict:
    return {
        "info": {"description": f"dpsnet mini world ({split})", "version": GENERATOR_VERSION},
        "licenses": [],
        "categories": _categories(specs),
        "__raw_Chinese_name_df": [],
        "images": images,
        "annotations": anns,
    }


def _map(pool, fn, jobs):
    return pool.starmap(fn, jobs, chunksize=8) if pool is not None else [fn(*j) for j in jobs]


_WORLD = None  # the _World every job draws from (set in this process and in each worker)


def _init_worker(seed: int, sizes: dict) -> None:
    global _WORLD
    cv2.setNumThreads(1)
    _WORLD = _World(seed, sizes)


def build_mini_world(
    root: str | os.PathLike, seed: int = 0, *, workers: int = 1, overwrite: bool = False, **sizes
) -> MiniWorld:
    """Generate the mini checkout world under ``root`` (see the module docstring for the layout).

    Args:
        root: output folder (created). An existing world with the same seed, sizes and generator
            version is reused unless ``overwrite``; a different one is replaced.
        seed: everything is a function of this seed.
        workers: processes used to draw images (1 = in this process); output does not depend
            on it.
        overwrite: rebuild even if an identical world is there.
        **sizes: overrides of ``DEFAULT_SIZES`` (e.g. ``num_products=6, test_images=9``).

    Returns:
        MiniWorld with the generator's own counts (also in ``root/manifest.json``).
    """
    unknown = set(sizes) - set(DEFAULT_SIZES)
    if unknown:
        raise TypeError(f"build_mini_world: unknown size arguments {sorted(unknown)}")
    sizes = {**DEFAULT_SIZES, **sizes}
    if sizes["bad_views_per_product"] >= sizes["views_per_product"]:
        raise ValueError("bad_views_per_product must be smaller than views_per_product")
    root = Path(root)
    manifest_path = root / "manifest.json"
    if manifest_path.is_file() and not overwrite:
        try:
            old = json.loads(manifest_path.read_text())
            if (old.get("version"), old.get("seed"), old.get("sizes")) == (
                GENERATOR_VERSION,
                seed,
                sizes,
            ):
                logger.info("Mini world at %s is up to date; reusing it", root)
                return MiniWorld(root=root, seed=seed, sizes=sizes, counts=old["counts"])
        except (json.JSONDecodeError, KeyError):
            pass
    for sub in ("train2019", "val2019", "test2019", "pool", "train2019_true_masks", "d2s"):
        if (root / sub).exists():
            shutil.rmtree(root / sub)
        (root / sub).mkdir(parents=True)
    (root / "d2s" / "images").mkdir(parents=True)
    if manifest_path.exists():
        manifest_path.unlink()

    global _WORLD
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # images are small: OpenCV's threads cost more than they give
    world = _WORLD = _World(seed, sizes)
    specs = world.specs
    pool = None
    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(seed, sizes))
    try:
        counts = _build_all(world, root, pool)
    finally:
        _WORLD = None
        cv2.setNumThreads(threads)
        if pool is not None:
            pool.close()
            pool.join()
    atomic_write_json(
        manifest_path,
        {
            "version": GENERATOR_VERSION,
            "seed": seed,
            "sizes": sizes,
            "supercategories": [
                s for s in SUPERCATEGORIES if any(p.supercategory == s for p in specs)
            ],
            "levels": {k: {"categories": v[0], "instances": v[1]} for k, v in LEVELS.items()},
            "lookalike_pairs": [[s.category_id, s.lookalike_of] for s in specs if s.lookalike_of],
            "counts": counts,
        },
        indent=1,
    )
    logger.info("Built the mini world at %s (seed %d)", root, seed)
    return MiniWorld(root=root, seed=seed, sizes=sizes, counts=counts)


def _build_all(world: _World, root: Path, pool) -> dict:
    sizes, specs, seed = world.sizes, world.specs, world.seed
    counts = {}
    # Exemplars: views_per_product per product; the last bad_views of each product's shuffled
    # view slots are thin side views.
    jobs, index = [], 0
    for s in specs:
        bad_slots = set(
            np.random.default_rng([seed, 7, s.category_id])
            .permutation(sizes["views_per_product"])[: sizes["bad_views_per_product"]]
            .tolist()
        )
        for v in range(sizes["views_per_product"]):
            jobs.append((index, s.category_id, v, v in bad_slots, root))
            index += 1
    results = _map(pool, _exemplar_job, jobs)
    images, anns, views = [], [], []
    for (idx, cat, _v, bad, _), (name, bbox, view) in zip(jobs, results, strict=True):
        image_id = ID_OFFSETS["train"] + idx
        images.append(
            {
                "file_name": name,
                "width": sizes["exemplar_size"],
                "height": sizes["exemplar_size"],
                "id": image_id,
            }
        )
        item = {"bbox": bbox, "area": bbox[2] * bbox[3], "category_id": cat}
        anns.append(_ann(len(anns) + 1, image_id, item, []))
        views.append(
            {
                "image_id": image_id,
                "file_name": name,
                "category_id": cat,
                "bad_pose": bool(bad),
                **view,
            }
        )
    atomic_write_json(root / "instances_train2019.json", _rpc_json(images, anns, specs, "train"))
    bad = [v for v in views if v["bad_pose"]]
    atomic_write_json(
        root / "train2019_planted_bad_poses.json",
        {
            "description": "Exemplars planted as unrealistic thin side views (foreshortening "
            "< 0.3): pose pruning should drop these and keep the others.",
            "bad_image_ids": [v["image_id"] for v in bad],
            "bad_file_names": [v["file_name"] for v in bad],
            "views": views,
        },
        indent=1,
    )
    counts["train"] = _count(images, anns, specs)

    # Checkout splits: levels in equal thirds (easy, medium, hard cycling).
    size = sizes["image_size"]
    for split, folder, n in (
        ("val", "val2019", sizes["val_images"]),
        ("test", "test2019", sizes["test_images"]),
        ("pool", "pool", sizes["pool_images"]),
    ):
        jobs = [
            (split, i, LEVEL_NAMES[i % 3], root / folder, f"{split}_{i:05d}.jpg") for i in range(n)
        ]
        results = _map(pool, _checkout_job, jobs)
        images, anns = [], []
        for (_, i, level, _, name), items in zip(jobs, results, strict=True):
            image_id = ID_OFFSETS[split] + i
            images.append(
                {"file_name": name, "width": size, "height": size, "id": image_id, "level": level}
            )
            for it in items:
                anns.append(_ann(len(anns) + 1, image_id, it, []))
        data = _rpc_json(images, anns, specs, split)
        if split == "pool":
            atomic_write_json(root / "pool_groundtruth.json", data)
            hidden = [{k: v for k, v in im.items() if k != "level"} for im in images]
            atomic_write_json(
                root / "instances_pool.json", _rpc_json(hidden, [], specs, "pool (unlabelled)")
            )
        else:
            atomic_write_json(root / f"instances_{split}2019.json", data)
        counts[split] = _count(images, anns, specs)

    # D2S-style variant: COCO with RLE masks; image id = scene * 100 + lighting * 10 + rotation.
    counts.update(_build_d2s(world, root, pool))
    return counts


def _d2s_training_job(index: int, cat: int, out: Path, name: str):
    world = _WORLD
    rng = _rng(world.seed, "d2s_training", index)
    n = int(rng.integers(1, 3))
    image, items = render_checkout(
        world.sprites,
        world.by_id,
        world.sizes["image_size"],
        [cat] * n,
        rng,
        world.trays,
        world.noise,
    )
    _write_jpg(out / name, image)
    return [{**it, "segmentation": _rle(it, world.sizes["image_size"])} for it in items]


def _d2s_validation_job(index: int, out: Path, name: str):
    world = _WORLD
    rng = _rng(world.seed, "d2s_validation", index)
    cats = pick_items(LEVEL_NAMES[index % 3], [s.category_id for s in world.specs], rng)
    image, items = render_checkout(
        world.sprites, world.by_id, world.sizes["image_size"], cats, rng, world.trays, world.noise
    )
    _write_jpg(out / name, image)
    return [{**it, "segmentation": _rle(it, world.sizes["image_size"])} for it in items]


def _build_d2s(world: _World, root: Path, pool) -> dict:
    sizes, specs = world.sizes, world.specs
    out = root / "d2s" / "images"
    size = sizes["image_size"]
    counts = {}
    # Training: one product per scene (scene = category id), views as lighting/rotation digits.
    jobs, ids = [], []
    for s in specs:
        for v in range(sizes["d2s_views_per_product"]):
            image_id = s.category_id * 100 + (v // 10 % 10) * 10 + v % 10
            jobs.append((len(jobs), s.category_id, out, f"D2S_{image_id:06d}.jpg"))
            ids.append(image_id)
    tr = _map(pool, _d2s_training_job, jobs)
    # Validation: cluttered scenes numbered after the training scenes, lighting 0, rotation 0.
    first_scene = 100 * (len(specs) // 100 + 1) + 1
    vjobs, vids = [], []
    for i in range(sizes["d2s_val_images"]):
        image_id = (first_scene + i) * 100
        vjobs.append((i, out, f"D2S_{image_id:06d}.jpg"))
        vids.append(image_id)
    va = _map(pool, _d2s_validation_job, vjobs)
    ann_dir = root / "d2s" / "annotations"
    for key, job_list, id_list, results in (
        ("training", jobs, ids, tr),
        ("validation", vjobs, vids, va),
    ):
        images, anns = [], []
        clear_images, clear_anns = [], []
        for job, image_id, items in zip(job_list, id_list, results, strict=True):
            im = {"file_name": job[-1], "width": size, "height": size, "id": image_id}
            images.append(im)
            these = [
                _ann(len(anns) + k + 1, image_id, it, it["segmentation"])
                for k, it in enumerate(items)
            ]
            for a in these:
                a.pop("point_xy")
            anns.extend(these)
            if all(it["visible"] > 0.98 for it in items):
                clear_images.append(im)
                clear_anns.extend(these)
        data = {
            "info": {"description": f"dpsnet mini world D2S {key}"},
            "licenses": [],
            "categories": _categories(specs),
            "images": images,
            "annotations": anns,
        }
        atomic_write_json(ann_dir / f"D2S_{key}.json", data)
        counts[f"d2s_{key}"] = _count(images, anns, specs)
        if key == "validation":
            atomic_write_json(
                ann_dir / "D2S_validation_wo_occlusion.json",
                {**data, "images": clear_images, "annotations": clear_anns},
            )
            counts["d2s_validation_wo_occlusion"] = _count(clear_images, clear_anns, specs)
    return counts
