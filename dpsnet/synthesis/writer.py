"""Writing a synthesized set: scenes in parallel, resumable, in shards that merge exactly.

Layout under the output folder ``OUT``::

    instances_synth.json    RPC/COCO JSON of the whole set (categories of the exemplar set)
    images/synth_<i>.jpg    scene i (file_name "synth_<i>.jpg": the image root is OUT/images,
                            as RPC's train2019/ beside instances_train2019.json)
    labels/synth_<i>.json   scene i's labels and the fingerprint they were made with (resume)
    shards/instances.shard-<k>-of-<n>.json   the labels of shard k (sharded runs only)
    synth_report.json       counts per level, dropped labels, skipped exemplars, stage times

Scene i depends only on ``(SYNTHESIS.SEED, i)``, the parameters and the exemplars, which a
*fingerprint* sums up. A run reuses every scene whose image and labels are on disk with the
current fingerprint, so a killed run resumes where it stopped; shard k of n makes the scenes
``i % n == k``; ``merge_shards`` (``dpsnet.synthesis.dataset``) checks that the shards agree and
cover every index, and writes the same ``instances_synth.json`` an unsharded run writes
(annotation ids are numbered in scene order, the same function writes both), byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2

from dpsnet.synthesis.compose import STAGES, ComposeParams, SceneComposer
from dpsnet.synthesis.dataset import (
    IMAGES,
    JSON_NAME,
    build_instances,
    dataset_name,
    merge_shards,
    register_synthesized,
)
from dpsnet.synthesis.items import Item, check_items, load_index
from dpsnet.utils.io import BadInputError, atomic_path, atomic_write_json, load_json

logger = logging.getLogger(__name__)

REPORT_NAME = "synth_report.json"
FORMAT_VERSION = 1
_SHARD_RE = re.compile(r"instances\.shard-(\d+)-of-(\d+)\.json$")


@dataclass(frozen=True)
class WriteSpec:
    """What a worker needs to write scenes (picklable)."""

    items: tuple[Item, ...]
    params: ComposeParams
    seed: int
    output: str
    num_images: int
    image_format: str = "jpg"
    jpeg_quality: int = 92
    image_id_start: int = 1
    fingerprint: str = ""
    overwrite: bool = False


def fingerprint(spec: WriteSpec, backgrounds: list[str]) -> str:
    """A digest of everything a scene's pixels and labels depend on.

    Not of paths, workers or the number of scenes: asking for more scenes later reuses those
    already made.
    """
    p = asdict(spec.params)
    p.pop("background_dir")
    p.pop("cache_items")
    desc = {
        "version": FORMAT_VERSION,
        "params": p,
        "backgrounds": backgrounds,
        "seed": spec.seed,
        "image_format": spec.image_format,
        "jpeg_quality": spec.jpeg_quality,
        "image_id_start": spec.image_id_start,
        "items": [
            [it.image_id, it.category_id, list(it.extent), list(it.image_size), it.mask_crc]
            for it in sorted(spec.items, key=lambda i: i.image_id)
        ],
    }
    return hashlib.sha1(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:20]


def scene_stem(index: int) -> str:
    return f"synth_{index:07d}"


_WORKER: dict = {}


def _init_worker(spec: WriteSpec) -> None:
    cv2.setNumThreads(1)
    _WORKER["spec"] = spec
    _WORKER["composer"] = SceneComposer(list(spec.items), spec.params, spec.seed)


def _write_scene(index: int) -> dict:
    """Compose, write and label scene ``index`` (or reuse it); returns its record."""
    spec: WriteSpec = _WORKER["spec"]
    out = Path(spec.output)
    stem = scene_stem(index)
    file_name = f"{stem}.{spec.image_format}"
    image_path = out / IMAGES / file_name
    label_path = out / "labels" / f"{stem}.json"
    if not spec.overwrite and image_path.is_file() and label_path.is_file():
        try:
            rec = load_json(label_path)
            if rec.get("fingerprint") == spec.fingerprint and rec.get("index") == index:
                rec["reused"] = True
                return rec
        except BadInputError:
            pass  # a damaged label file: make the scene again
    t0 = time.thread_time()
    scene = _WORKER["composer"].compose(index)
    t1 = time.thread_time()
    params = [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality] if spec.image_format == "jpg" else []
    ok, buf = cv2.imencode("." + spec.image_format, scene.image, params)
    if not ok:
        raise OSError(f"{image_path}: OpenCV could not encode the image")
    t2 = time.thread_time()
    with atomic_path(image_path) as tmp:
        tmp.write_bytes(buf.tobytes())
    H, W = scene.image.shape[:2]
    rec = {
        "fingerprint": spec.fingerprint,
        "index": index,
        "image": {
            "file_name": file_name,
            "width": int(W),
            "height": int(H),
            "id": spec.image_id_start + index,
            "level": scene.level,
        },
        "annotations": scene.annotations,
        "stats": {
            "planned": scene.planned,
            "placed": scene.placed,
            "dropped": scene.dropped,
            "relaxed": scene.relaxed,
            "bad_items": scene.bad_items,
        },
    }
    atomic_write_json(label_path, rec)  # after the image: a label file means both are there
    rec["timings"] = {**scene.timings, "encode": t2 - t1, "write": time.thread_time() - t2}
    rec["timings"]["compose"] = t1 - t0
    return rec


def _info(spec: WriteSpec) -> dict:
    return {
        "description": "dpsnet synthesized checkout scenes (tools/synthesize.py)",
        "version": FORMAT_VERSION,
        "fingerprint": spec.fingerprint,
        "seed": spec.seed,
        "num_images": spec.num_images,
        "image_size": list(spec.params.image_size),
    }


def _check_every_product(categories, items, excluded, index: str, allow: bool) -> None:
    """Warn per product with no usable exemplar left; an error unless ``allow``.

    Raises:
        BadInputError: some category would be absent from every scene and ``allow`` is False.
    """
    present = {it.category_id for it in items}
    missing = [
        cat
        for cat in categories
        if int(cat["id"]) not in excluded and int(cat["id"]) not in present
    ]
    for cat in missing:
        logger.warning(
            "PRODUCT MISSING: category %s (%s) has no usable exemplar left in %s (missing, "
            "pruned or unreadable): it will not appear in any synthesized scene",
            cat["id"],
            cat.get("name", "?"),
            index,
        )
    if missing and not allow:
        names = ", ".join(f"{c['id']} ({c.get('name', '?')})" for c in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise BadInputError(
            f"{index}: {len(missing)} product(s) have no usable exemplar left: {names}{more}; "
            "fix their exemplars, exclude them (SYNTHESIS.COMPOSE.EXCLUDE_CATEGORIES), or allow "
            "it with --allow-missing-products (SYNTHESIS.COMPOSE.ALLOW_MISSING_PRODUCTS True)"
        )


def spec_from_config(cfg, *, overwrite: bool = False, pool=None):
    """(WriteSpec, categories, skipped exemplars) from ``cfg.SYNTHESIS``.

    Raises:
        BadInputError: no/unreadable masks index, or no usable exemplar in it.
    """
    c = cfg.SYNTHESIS.COMPOSE
    if not c.MASKS_INDEX:
        raise BadInputError(
            "SYNTHESIS.COMPOSE.MASKS_INDEX is empty: give the index.json of tools/extract_masks.py"
        )
    if c.IMAGE_FORMAT not in ("jpg", "png"):
        raise ValueError(f"SYNTHESIS.COMPOSE.IMAGE_FORMAT must be jpg or png, not {c.IMAGE_FORMAT}")
    items, categories, _ = load_index(c.MASKS_INDEX)
    excluded = {int(x) for x in c.EXCLUDE_CATEGORIES}
    unknown = excluded - {int(cat["id"]) for cat in categories}
    if unknown:
        raise BadInputError(
            f"{c.MASKS_INDEX}: SYNTHESIS.COMPOSE.EXCLUDE_CATEGORIES names category ids "
            f"{sorted(unknown)} that the index does not have"
        )
    items = [it for it in items if it.category_id not in excluded]
    if not items:
        raise BadInputError(f"{c.MASKS_INDEX}: no item is kept")
    items, skipped = check_items(items, pool)
    if not items:
        raise BadInputError(f"{c.MASKS_INDEX}: none of the kept exemplars is usable")
    _check_every_product(categories, items, excluded, c.MASKS_INDEX, c.ALLOW_MISSING_PRODUCTS)
    params = ComposeParams.from_config(cfg)
    spec = WriteSpec(
        items=tuple(items),
        params=params,
        seed=int(cfg.SYNTHESIS.SEED),
        output=str(c.OUTPUT_DIR),
        num_images=int(c.NUM_IMAGES),
        image_format=c.IMAGE_FORMAT,
        jpeg_quality=int(c.JPEG_QUALITY),
        image_id_start=int(c.IMAGE_ID_START),
        overwrite=overwrite,
    )
    from dpsnet.synthesis.backgrounds import Backgrounds

    names = Backgrounds.describe(params.background_dir, params.num_generated_backgrounds)
    spec = WriteSpec(**{**spec.__dict__, "fingerprint": fingerprint(spec, names)})
    return spec, categories, skipped


def synthesize(
    cfg,
    *,
    shard: int = 0,
    num_shards: int = 1,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    register: bool = True,
) -> dict:
    """Synthesize ``cfg.SYNTHESIS.COMPOSE.NUM_IMAGES`` scenes (or one shard of them).

    Args:
        cfg: config with ``SYNTHESIS.*`` (see ``dpsnet/config/synthesis.py``).
        shard, num_shards: make only the scenes ``i % num_shards == shard``; the pieces are
            merged by ``merge_shards`` (called here once every shard's file is in the folder).
        workers: processes (the output does not depend on it).
        overwrite: make every scene again instead of reusing those on disk.
        progress: show a tqdm bar.
        register: register the finished set (see ``register_synthesized``).

    Returns:
        the report (also written to ``OUT/synth_report.json``, per shard when sharded).
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f"--shard must lie in [0, {num_shards}), got {shard}")
    from tqdm import tqdm

    t_start = time.perf_counter()
    pool = None
    if workers > 1:
        import multiprocessing as mp

        pool = mp.get_context("fork" if os.name == "posix" else "spawn").Pool(workers)
    try:
        spec, categories, skipped = spec_from_config(cfg, overwrite=overwrite, pool=pool)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    out = Path(spec.output)
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    indices = list(range(shard, spec.num_images, num_shards))
    records = []
    bar = tqdm(total=len(indices), desc="synthesize", unit="img", disable=not progress)
    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(spec,)) as pool:
            chunk = max(1, min(8, len(indices) // (4 * workers)))
            for rec in pool.imap_unordered(_write_scene, indices, chunksize=chunk):
                records.append(rec)
                bar.update()
    else:
        threads = cv2.getNumThreads()
        _init_worker(spec)
        try:
            for i in indices:
                records.append(_write_scene(i))
                bar.update()
        finally:
            _WORKER.clear()
            cv2.setNumThreads(threads)
    bar.close()
    records.sort(key=lambda r: r["index"])
    report = _report(records, skipped, spec, time.perf_counter() - t_start)
    if num_shards == 1:
        atomic_write_json(out / JSON_NAME, build_instances(records, categories, _info(spec)))
        atomic_write_json(out / REPORT_NAME, report, indent=1)
        report["json_file"] = str(out / JSON_NAME)
    else:
        name = f"instances.shard-{shard:03d}-of-{num_shards:03d}.json"
        shard_doc = {
            "shard": {"index": shard, "count": num_shards, "fingerprint": spec.fingerprint},
            "info": _info(spec),
            "categories": categories,
            "records": [
                {k: r[k] for k in ("index", "image", "annotations", "stats")} for r in records
            ],
            "skipped_items": skipped,
        }
        atomic_write_json(out / "shards" / name, shard_doc)
        atomic_write_json(
            out / f"synth_report.shard-{shard:03d}-of-{num_shards:03d}.json", report, indent=1
        )
        report["shard_file"] = str(out / "shards" / name)
        done = {
            int(m.group(1))
            for p in (out / "shards").glob("*.json")
            if (m := _SHARD_RE.search(p.name)) and int(m.group(2)) == num_shards
        }
        if done == set(range(num_shards)):
            logger.info("All %d shards are in %s: merging", num_shards, out)
            try:
                report["json_file"] = str(merge_shards(out, register=False))
            except BadInputError as e:
                logger.warning("Shards not merged: %s", e)
    if register and "json_file" in report:
        report["dataset"] = register_synthesized(dataset_name(cfg, out), out)
    return report


def _report(records: list[dict], skipped: list[dict], spec: WriteSpec, seconds: float) -> dict:
    per_level = defaultdict(lambda: {"images": 0, "instances": 0, "dropped": 0, "planned": 0})
    timings = defaultdict(float)
    bad, relaxed, reused = set(), 0, 0
    for r in records:
        lv = per_level[r["image"]["level"]]
        lv["images"] += 1
        lv["instances"] += len(r["annotations"])
        lv["dropped"] += r["stats"]["dropped"]
        lv["planned"] += r["stats"]["planned"]
        relaxed += r["stats"]["relaxed"]
        bad.update(r["stats"]["bad_items"])
        reused += bool(r.get("reused"))
        for k, v in r.get("timings", {}).items():
            timings[k] += v
    made = len(records) - reused
    order = [*STAGES, "compose", "encode", "write"]
    return {
        "fingerprint": spec.fingerprint,
        "images": len(records),
        "written": made,
        "reused": reused,
        "per_level": dict(sorted(per_level.items())),
        "relaxed_placements": relaxed,
        "skipped_items": skipped,
        "items_failed_while_composing": sorted(bad),
        "usable_items": len(spec.items),
        "seconds": round(seconds, 3),
        "mean_cpu_ms_per_written_image": {
            k: round(1000 * timings[k] / made, 3) for k in order if made and k in timings
        },
    }
