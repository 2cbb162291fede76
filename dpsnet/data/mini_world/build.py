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
from pathlib import Path

import cv2
import numpy as np

from dpsnet.data.datasets.checkout import CLUTTER_LEVELS
from dpsnet.data.mini_world.d2s import build_d2s
from dpsnet.data.mini_world.jobs import (
    Scenery,
    annotation,
    checkout_job,
    exemplar_job,
    init_worker,
    rpc_json,
    run_jobs,
    set_scenery,
    split_counts,
)
from dpsnet.data.mini_world.products import SUPERCATEGORIES
from dpsnet.data.mini_world.render import LEVEL_ITEMS
from dpsnet.data.mini_world.world import (
    DEFAULT_SIZES,
    GENERATOR_VERSION,
    ID_OFFSETS,
    SIZE_PRESETS,
    MiniWorld,
)
from dpsnet.utils.io import atomic_write_json

__all__ = [
    "DEFAULT_SIZES",
    "GENERATOR_VERSION",
    "ID_OFFSETS",
    "SIZE_PRESETS",
    "MiniWorld",
    "build_mini_world",
]

logger = logging.getLogger(__name__)


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

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # images are small: OpenCV's threads cost more than they give
    world = Scenery(seed, sizes)
    set_scenery(world)
    specs = world.specs
    pool = None
    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
        pool = ctx.Pool(workers, initializer=init_worker, initargs=(seed, sizes))
    try:
        counts = _build_all(world, root, pool)
    finally:
        set_scenery(None)
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
            "levels": {k: {"categories": v[0], "instances": v[1]} for k, v in LEVEL_ITEMS.items()},
            "lookalike_pairs": [[s.category_id, s.lookalike_of] for s in specs if s.lookalike_of],
            "counts": counts,
        },
        indent=1,
    )
    logger.info("Built the mini world at %s (seed %d)", root, seed)
    return MiniWorld(root=root, seed=seed, sizes=sizes, counts=counts)


def _build_all(world: Scenery, root: Path, pool) -> dict:
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
    results = run_jobs(pool, exemplar_job, jobs)
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
        anns.append(annotation(len(anns) + 1, image_id, item, []))
        views.append(
            {
                "image_id": image_id,
                "file_name": name,
                "category_id": cat,
                "bad_pose": bool(bad),
                **view,
            }
        )
    atomic_write_json(root / "instances_train2019.json", rpc_json(images, anns, specs, "train"))
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
    counts["train"] = split_counts(images, anns, specs)

    # Checkout splits: levels in equal thirds (easy, medium, hard cycling).
    size = sizes["image_size"]
    for split, folder, n in (
        ("val", "val2019", sizes["val_images"]),
        ("test", "test2019", sizes["test_images"]),
        ("pool", "pool", sizes["pool_images"]),
    ):
        jobs = [
            (split, i, CLUTTER_LEVELS[i % 3], root / folder, f"{split}_{i:05d}.jpg")
            for i in range(n)
        ]
        results = run_jobs(pool, checkout_job, jobs)
        images, anns = [], []
        for (_, i, level, _, name), items in zip(jobs, results, strict=True):
            image_id = ID_OFFSETS[split] + i
            images.append(
                {"file_name": name, "width": size, "height": size, "id": image_id, "level": level}
            )
            for it in items:
                anns.append(annotation(len(anns) + 1, image_id, it, []))
        data = rpc_json(images, anns, specs, split)
        if split == "pool":
            atomic_write_json(root / "pool_groundtruth.json", data)
            hidden = [{k: v for k, v in im.items() if k != "level"} for im in images]
            atomic_write_json(
                root / "instances_pool.json", rpc_json(hidden, [], specs, "pool (unlabelled)")
            )
        else:
            atomic_write_json(root / f"instances_{split}2019.json", data)
        counts[split] = split_counts(images, anns, specs)

    # D2S-style variant: COCO with RLE masks; image id = scene * 100 + lighting * 10 + rotation.
    counts.update(build_d2s(world, root, pool))
    return counts
