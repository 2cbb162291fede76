"""A synthesized set as a dataset: its RPC/COCO JSON, shards merged into it, its registration.

``OUT/instances_synth.json`` holds every scene (categories of the exemplar set, so class ids
match the exemplar dataset's), ``OUT/images`` the scene images; a sharded run writes
``OUT/shards/instances.shard-<k>-of-<n>.json`` that :func:`merge_shards` turns into the same JSON
an unsharded run writes, byte for byte.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dpsnet.utils.io import BadInputError, atomic_write_json, load_json

__all__ = [
    "IMAGES",
    "JSON_NAME",
    "build_instances",
    "dataset_name",
    "merge_shards",
    "register_synthesized",
]

logger = logging.getLogger(__name__)

JSON_NAME = "instances_synth.json"
IMAGES = "images"


def build_instances(records: list[dict], categories: list, info: dict) -> dict:
    """The RPC/COCO JSON of scene records (sorted by index); annotation ids in scene order."""
    images, anns = [], []
    for rec in sorted(records, key=lambda r: r["index"]):
        images.append(rec["image"])
        for a in rec["annotations"]:
            anns.append(
                {
                    "area": a["area"],
                    "bbox": a["bbox"],
                    "category_id": a["category_id"],
                    "id": len(anns) + 1,
                    "image_id": rec["image"]["id"],
                    "iscrowd": 0,
                    "segmentation": a["segmentation"],
                    "point_xy": a["point_xy"],
                    "exemplar_id": a["exemplar_id"],
                }
            )
    return {
        "info": info,
        "licenses": [],
        "categories": categories,
        "images": images,
        "annotations": anns,
    }


def merge_shards(output: str | os.PathLike, register: bool = False, name: str = "") -> Path:
    """Merge ``OUT/shards/*`` into ``OUT/instances_synth.json`` (what an unsharded run writes).

    Raises:
        BadInputError: no shard files, shards of different runs (fingerprints or counts),
            missing shards or scenes, or scene images missing from ``OUT/images``.
    """
    out = Path(output)
    files = sorted((out / "shards").glob("instances.shard-*-of-*.json"))
    if not files:
        raise BadInputError(f"{out / 'shards'}: no shard files (instances.shard-K-of-N.json)")
    docs = [load_json(f) for f in files]
    fps = {d["shard"]["fingerprint"] for d in docs}
    counts = {d["shard"]["count"] for d in docs}
    if len(fps) != 1 or len(counts) != 1:
        raise BadInputError(
            f"{out / 'shards'}: shards of different runs (fingerprints {sorted(fps)}, "
            f"shard counts {sorted(counts)}); remove the stale ones"
        )
    n = counts.pop()
    have = {d["shard"]["index"] for d in docs}
    if have != set(range(n)):
        missing = sorted(set(range(n)) - have)
        raise BadInputError(f"{out / 'shards'}: missing shard(s) {missing} of {n}")
    info = docs[0]["info"]
    if len({d["info"]["num_images"] for d in docs}) != 1:
        raise BadInputError(f"{out / 'shards'}: shards made for different numbers of scenes")
    records = [r for d in docs for r in d["records"]]
    got = sorted(r["index"] for r in records)
    if got != list(range(info["num_images"])):
        raise BadInputError(
            f"{out / 'shards'}: the shards hold {len(got)} scenes, expected {info['num_images']}"
        )
    absent = [
        r["image"]["file_name"]
        for r in records
        if not (out / IMAGES / r["image"]["file_name"]).is_file()
    ]
    if absent:
        raise BadInputError(
            f"{out}: {len(absent)} scene image(s) missing (e.g. {absent[0]}); copy every "
            "shard's images/ folder here before merging"
        )
    path = out / JSON_NAME
    atomic_write_json(path, build_instances(records, docs[0]["categories"], info))
    logger.info("Merged %d shards (%d scenes) into %s", n, len(records), path)
    if register:
        register_synthesized(name or f"synth_{out.resolve().name}", out)
    return path


def dataset_name(cfg, output: Path) -> str:
    return cfg.SYNTHESIS.COMPOSE.DATASET_NAME or f"synth_{Path(output).resolve().name}"


def register_synthesized(name: str, output: str | os.PathLike) -> str:
    """Register ``OUT/instances_synth.json`` (images in ``OUT/images``) as dataset ``name``.

    Its categories are the exemplar set's (copied into the JSON), so class ids match the
    exemplar dataset's. In a config,
    ``DATASETS.REGISTER: [[name, "OUT/instances_synth.json", "OUT/images"]]`` does the same in
    every process that loads the config (see ``dpsnet.engine.load_config``).
    """
    from dpsnet.data.datasets import register_checkout_dataset

    out = Path(output)
    register_checkout_dataset(name, out / JSON_NAME, out / IMAGES, evaluator_type="rpc")
    return name
