"""Render a whole labelled set: render, check labels, write images + the original labels.

Input is a COCO/RPC-style JSON with its image folder (or a registered dataset name); output is
``OUTPUT/images/`` with the rendered images under their original file names,
``OUTPUT/instances.json`` with the source JSON's labels for the images that passed the
label-preservation check (annotations copied unchanged), ``OUTPUT/dropped/`` with the images
that failed (for inspection), and ``OUTPUT/render_report.json``.

Each image's randomness comes from ``(seed, image id)``, so results do not depend on worker
count or order, and a rerun skips images already on disk (it re-checks them).
"""

from __future__ import annotations

import copy
import logging
import os
import time
import zlib
from collections import defaultdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dpsnet.synthesis.render.check import CheckParams, check_labels_preserved
from dpsnet.utils.io import (
    IMAGE_EXTENSIONS,
    BadInputError,
    atomic_write_image,
    atomic_write_json,
    load_json,
    read_image,
)

logger = logging.getLogger(__name__)


def default_image_root(json_file: str, data: dict | None = None) -> str:
    """Image folder of a COCO JSON given without one: the JSON's folder, or its ``images/``
    subfolder when the first image is there and not beside the JSON (``tools/synthesize.py``
    writes ``OUT/instances_synth.json`` next to ``OUT/images/``)."""
    folder = os.path.dirname(os.path.abspath(json_file))
    sub = os.path.join(folder, "images")
    if not os.path.isdir(sub):
        return folder
    try:
        first = (data if data is not None else load_json(json_file))["images"][0]["file_name"]
    except (KeyError, IndexError, TypeError):
        return folder
    if not os.path.isfile(os.path.join(folder, first)) and os.path.isfile(os.path.join(sub, first)):
        return sub
    return folder


def resolve_coco(spec: str, image_root: str | None = None) -> tuple[str, str]:
    """A JSON path or registered dataset name -> (json_file, image_root).

    A registered name must carry ``json_file`` and ``image_root`` in its metadata, as
    ``register_checkout_dataset`` and detectron2's ``register_coco_instances`` record them.
    """
    if spec.endswith(".json") or os.path.isfile(spec):
        if not os.path.isfile(spec):
            raise BadInputError(f"{spec}: annotation file not found")
        return spec, image_root or default_image_root(spec)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if spec not in DatasetCatalog.list():
        raise BadInputError(f"{spec}: neither a JSON file nor a registered dataset name")
    meta = MetadataCatalog.get(spec)
    json_file = meta.get("json_file", None)
    root = image_root or meta.get("image_root", None)
    if not json_file or not root:
        raise BadInputError(
            f"{spec}: its metadata has no json_file/image_root; pass the JSON path instead"
        )
    return json_file, root


def list_images(spec: str, image_root: str | None = None) -> list[str]:
    """Image paths of a folder, a COCO JSON (under ``image_root``) or a registered dataset."""
    if os.path.isdir(spec):
        files = sorted(
            str(p) for p in Path(spec).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise BadInputError(f"{spec}: folder holds no images")
        return files
    if spec.endswith(".json") or os.path.isfile(spec):
        data = load_json(spec)
        root = image_root or default_image_root(spec, data)
        try:
            return [os.path.join(root, im["file_name"]) for im in data["images"]]
        except (KeyError, TypeError):
            raise BadInputError(f"{spec}: no 'images' list with 'file_name' entries") from None
    from detectron2.data import DatasetCatalog

    if spec not in DatasetCatalog.list():
        raise BadInputError(f"{spec}: neither a folder, a JSON file nor a registered dataset")
    return [d["file_name"] for d in DatasetCatalog.get(spec)]


def image_seed(seed: int, image_id) -> list[int]:
    """Seed sequence of one image: stable across runs, processes and orderings."""
    if isinstance(image_id, (int, np.integer)) and int(image_id) >= 0:
        return [int(seed), int(image_id)]
    return [int(seed), zlib.crc32(str(image_id).encode())]


# Worker state, set once per process (the renderer can be large: statistics or a network).
_STATE: dict = {}


def _init_worker(state: dict) -> None:
    _STATE.clear()
    _STATE.update(state)
    if state.get("torch_threads"):
        import torch

        torch.set_num_threads(state["torch_threads"])


def _write(path: Path, image: np.ndarray) -> None:
    ext = path.suffix.lower()
    params = None
    if ext in (".jpg", ".jpeg"):
        import cv2

        params = [cv2.IMWRITE_JPEG_QUALITY, 95]
    atomic_write_image(path, image, params)


def _render_one(task: tuple[int, dict, list[dict]]) -> dict:
    _, record, anns = task
    s = _STATE
    name = record["file_name"]
    out = {"image_id": record.get("id"), "file_name": name, "status": "bad_input", "items": []}
    kept_path, dropped_path = s["out_root"] / "images" / name, s["out_root"] / "dropped" / name
    try:
        src = read_image(os.path.join(s["src_root"], name))
        rendered = None
        if not s["overwrite"]:
            for p in (kept_path, dropped_path):
                if p.is_file():
                    rendered = read_image(p)
                    break
        if rendered is None:
            rng = np.random.default_rng(image_seed(s["seed"], record.get("id", name)))
            renderer = s["renderer"]
            if hasattr(renderer, "render_record"):
                rendered = renderer.render_record(src, rng, record)
            else:
                rendered = renderer.render(src, rng)
            if rendered.shape != src.shape:
                raise ValueError(
                    f"{name}: renderer returned shape {rendered.shape}, source is {src.shape}"
                )
        if s["check"] is not None:
            result = check_labels_preserved(src, rendered, anns, s["check"])
            out["items"] = [(r.ann_id, r.score) for r in result.items]
            ok = result.ok
            out["failed"] = [(r.ann_id, r.score) for r in result.failed]
        else:
            ok = True
        dest, other = (kept_path, dropped_path) if ok else (dropped_path, kept_path)
        if not dest.is_file() or s["overwrite"] or other.is_file():
            _write(dest, rendered)
        if other.is_file():
            other.unlink()
        out["status"] = "ok" if ok else "dropped"
    except (BadInputError, ValueError, OSError) as e:
        out["error"] = str(e)
    return out


def render_dataset(
    renderer,
    json_file: str,
    image_root: str,
    output_dir: str | os.PathLike,
    *,
    seed: int = 0,
    num_workers: int = 0,
    check: CheckParams | None = None,
    overwrite: bool = False,
    limit: int = 0,
    desc: str = "render",
) -> dict:
    """Render every image of a COCO/RPC JSON and keep the original labels of those that pass.

    Args:
        renderer: an object with ``render(image_bgr_uint8, rng) -> image`` of the same shape, and
            a ``parallel_safe`` attribute (False runs it in this process only).
        json_file, image_root: the labelled source set.
        output_dir: where ``images/``, ``dropped/``, ``instances.json`` and
            ``render_report.json`` go.
        seed: seed of every random choice (image i uses ``(seed, image id)``).
        num_workers: processes (0 = this process).
        check: label-preservation thresholds; None skips the check (every image is kept).
        overwrite: render again images already on disk.
        limit: render only the first ``limit`` images (0 = all).
        desc: progress-bar label.

    Returns:
        The report (also written to ``render_report.json``): counts of images, kept, dropped by
        the check and unreadable; items checked/failed; and per dropped image, its failed items.
    """
    t0 = time.perf_counter()
    data = load_json(json_file)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise BadInputError(f"{json_file}: not a COCO/RPC JSON (no 'images' list)")
    anns_by_image = defaultdict(list)
    for ann in data.get("annotations", []):
        anns_by_image[ann.get("image_id")].append(ann)
    images = data["images"][:limit] if limit > 0 else data["images"]
    tasks = [(i, im, anns_by_image.get(im.get("id"), [])) for i, im in enumerate(images)]
    out_root = Path(output_dir)
    (out_root / "images").mkdir(parents=True, exist_ok=True)
    state = {
        "renderer": renderer,
        "check": check,
        "seed": seed,
        "src_root": image_root,
        "out_root": out_root,
        "overwrite": overwrite,
    }
    parallel = num_workers > 0 and getattr(renderer, "parallel_safe", False) and len(tasks) > 1
    if parallel:
        state["torch_threads"] = 1
        with get_context("fork").Pool(num_workers, _init_worker, (state,)) as pool:
            it = pool.imap(_render_one, tasks, chunksize=max(1, min(8, len(tasks) // num_workers)))
            results = list(tqdm(it, total=len(tasks), desc=desc))
    else:
        _init_worker(state)
        results = [_render_one(t) for t in tqdm(tasks, desc=desc)]
    _STATE.clear()

    kept_ids = {r["image_id"] for r in results if r["status"] == "ok"}
    out = copy.copy(data)
    out["images"] = [im for im in images if im.get("id") in kept_ids]
    out["annotations"] = [a for a in data.get("annotations", []) if a.get("image_id") in kept_ids]
    info = dict(data.get("info") or {})
    info["render"] = {
        "source": os.path.abspath(json_file),
        "renderer": getattr(renderer, "name", type(renderer).__name__),
        "seed": seed,
    }
    out["info"] = info
    instances = out_root / "instances.json"
    atomic_write_json(instances, out)

    scores = [s for r in results for _, s in r["items"] if s is not None]
    report = {
        "source": os.path.abspath(json_file),
        "output": str(out_root.resolve()),
        "instances": str(instances.resolve()),
        "renderer": info["render"]["renderer"],
        "images": len(results),
        "kept": sum(r["status"] == "ok" for r in results),
        "dropped_by_check": sum(r["status"] == "dropped" for r in results),
        "bad_input": sum(r["status"] == "bad_input" for r in results),
        "items": sum(len(r["items"]) for r in results),
        "items_checked": len(scores),
        "items_failed": sum(len(r.get("failed", [])) for r in results),
        "score_quantiles": (
            dict(zip(("p01", "p05", "p50"), np.quantile(scores, [0.01, 0.05, 0.5]).tolist()))
            if scores
            else {}
        ),
        "check": None if check is None else vars(check),
        "seconds": round(time.perf_counter() - t0, 3),
        "dropped": [
            {"image_id": r["image_id"], "file_name": r["file_name"], "failed": r["failed"]}
            for r in results
            if r["status"] == "dropped"
        ],
        "bad": [
            {"file_name": r["file_name"], "error": r.get("error")}
            for r in results
            if r["status"] == "bad_input"
        ],
    }
    for b in report["bad"]:
        logger.warning("%s: skipped %s", desc, b["error"])
    logger.info(
        "%s: %d images, %d kept, %d dropped by the label check, %d unreadable",
        desc,
        report["images"],
        report["kept"],
        report["dropped_by_check"],
        report["bad_input"],
    )
    atomic_write_json(out_root / "render_report.json", report, indent=1)
    return report


def register_rendered(name: str, json_file: str, image_root: str, source: str | None = None):
    """Register a rendered set under ``name`` (idempotent).

    When ``source`` is a registered dataset, its ``categories_json`` is reused so that the
    rendered set shares the source's class order.
    """
    from detectron2.data import MetadataCatalog

    from dpsnet.data.datasets import register_checkout_dataset

    categories_json = None
    if source and source in MetadataCatalog.list():
        categories_json = MetadataCatalog.get(source).get("categories_json", None)
    register_checkout_dataset(name, json_file, image_root, categories_json=categories_json)
    return name
