"""Drawing the mini world's images one job at a time, in this process or in worker processes.

Every job draws from the :class:`Scenery` of the process (the products, their sprites and banks of
backgrounds) and from its own generator seeded with (seed, split, index), so an image depends on
the seed only, whatever the number of workers. The helpers turn a drawn item into RPC/COCO JSON.
"""

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from dpsnet.data.datasets.checkout import CLUTTER_LEVELS
from dpsnet.data.mini_world.products import make_catalogue, render_product
from dpsnet.data.mini_world.render import (
    exemplar_background,
    noise_field,
    pick_items,
    premultiply,
    render_checkout,
    render_exemplar,
    tray_background,
)
from dpsnet.data.mini_world.world import GENERATOR_VERSION

_SPLIT_CODES = {"train": 1, "val": 2, "test": 3, "pool": 4, "d2s_training": 5, "d2s_validation": 6}
_JPEG = [cv2.IMWRITE_JPEG_QUALITY, 92]

_SCENERY = None  # the Scenery every job draws from (set in this process and in each worker)


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


def categories_json(specs: list) -> list:
    return [{"supercategory": s.supercategory, "id": s.category_id, "name": s.name} for s in specs]


def write_jpg(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", image, _JPEG)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the image")
    path.write_bytes(buf.tobytes())


class Scenery:
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


def set_scenery(scenery: "Scenery | None") -> None:
    """Make ``scenery`` the one this process's jobs draw from (None: release it)."""
    global _SCENERY
    _SCENERY = scenery


def init_worker(seed: int, sizes: dict) -> None:
    """A worker process's initializer: its own Scenery, one OpenCV thread."""
    cv2.setNumThreads(1)
    set_scenery(Scenery(seed, sizes))


def run_jobs(pool, fn, jobs):
    return pool.starmap(fn, jobs, chunksize=8) if pool is not None else [fn(*j) for j in jobs]


def exemplar_job(index: int, cat: int, view_idx: int, bad: bool, out: Path):
    """Render exemplar ``index``; returns (image entry fields, bbox, view record)."""
    world = _SCENERY
    rng = image_rng(world.seed, "train", index)
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
    write_jpg(out / "train2019" / name, image)
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


def checkout_job(split: str, index: int, level: str, folder: Path, name: str):
    world = _SCENERY
    rng = image_rng(world.seed, split, index)
    cats = pick_items(level, [s.category_id for s in world.specs], rng)
    image, items = render_checkout(
        world.sprites, world.by_id, world.sizes["image_size"], cats, rng, world.trays, world.noise
    )
    write_jpg(folder / name, image)
    return items


def d2s_training_job(index: int, cat: int, out: Path, name: str):
    world = _SCENERY
    rng = image_rng(world.seed, "d2s_training", index)
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
    write_jpg(out / name, image)
    return [{**it, "segmentation": rle(it, world.sizes["image_size"])} for it in items]


def d2s_validation_job(index: int, out: Path, name: str):
    world = _SCENERY
    rng = image_rng(world.seed, "d2s_validation", index)
    cats = pick_items(CLUTTER_LEVELS[index % 3], [s.category_id for s in world.specs], rng)
    image, items = render_checkout(
        world.sprites, world.by_id, world.sizes["image_size"], cats, rng, world.trays, world.noise
    )
    write_jpg(out / name, image)
    return [{**it, "segmentation": rle(it, world.sizes["image_size"])} for it in items]


def rle(item: dict, size: int) -> dict:
    full = np.zeros((size, size), np.uint8, order="F")
    x, y, crop = item["mask_crop"]
    full[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
    rle = mask_utils.encode(np.asfortranarray(full))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def annotation(ann_id: int, image_id: int, item: dict, segmentation) -> dict:
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


def split_counts(images: list, anns: list, specs: list) -> dict:
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


def rpc_json(images: list, anns: list, specs: list, split: str) -> dict:
    return {
        "info": {"description": f"dpsnet mini world ({split})", "version": GENERATOR_VERSION},
        "licenses": [],
        "categories": categories_json(specs),
        "__raw_Chinese_name_df": [],
        "images": images,
        "annotations": anns,
    }
