"""The mask-extraction stage: exemplars in; masks, decisions, index and reports out.

``tools/extract_masks.py`` calls ``extract_masks_from_config``. Under its output folder ``OUT/``:

- ``index.json`` (written atomically): ``{"version", "dataset", "json_file", "image_root",
  "settings", "items", "categories"}``; each item ``{"image_id", "file_name" (absolute),
  "category_id" (dataset id), "bbox", "extent", "mask" ("masks/<image_id>.png", box-sized 0/255),
  "coarse_mask", "quality", "coarse_quality", "area", "coarse_area", "area_ratio", "kept",
  "drop_reason" ("" | "pose" | "quality" | "empty" | "unreadable"), "note", "coarse_key",
  "key"}``. The composer reads the items with ``kept`` true.
- ``pose_report.json``: per product, kept and dropped exemplars (``pose.pose_report``), and with
  a file of known bad poses the precision/recall of the drops.
- ``mask_report.json``: run statistics, mean quality, and with a folder of true masks the IoU of
  the coarse and final masks (true masks are read for this report only, never for a decision).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np

from dpsnet.synthesis.mask_jobs import MaskSettings
from dpsnet.synthesis.masks import JOURNAL, compute_masks
from dpsnet.synthesis.pose import drop_scores, pose_report, prune_poses
from dpsnet.utils.io import BadInputError, atomic_write_json, load_json, try_read_image

logger = logging.getLogger(__name__)

INDEX_VERSION = 1

# ---------------------------------------------------------------------------------------------
# Exemplars in.


def load_exemplars(dataset: str | None = None, json_file=None, image_root=None):
    """The exemplars of a registered dataset or of a COCO/RPC JSON and its image folder.

    Returns:
        (items, categories, source): items ``{"image_id", "file_name" (absolute),
        "category_id" (dataset id), "bbox", "height", "width"}`` sorted by image id, one per
        image (the largest box when an image has several); the dataset's categories;
        ``{"dataset", "json_file", "image_root"}``.

    Raises:
        BadInputError: unknown dataset name, missing/malformed JSON.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from dpsnet.data.datasets import read_categories
    from dpsnet.data.datasets.checkout import load_checkout_json

    categories_json = None
    if dataset:
        if dataset not in DatasetCatalog.list():
            raise BadInputError(f"dataset {dataset!r} is not registered")
        meta = MetadataCatalog.get(dataset)
        json_file, image_root = getattr(meta, "json_file", None), getattr(meta, "image_root", None)
        categories_json = getattr(meta, "categories_json", None)
        if not json_file or not image_root:
            raise BadInputError(f"dataset {dataset!r} has no json_file/image_root metadata")
    if not json_file or not image_root:
        raise BadInputError("give a registered dataset name, or a JSON file and an image root")
    categories = read_categories(categories_json or json_file)
    identity = {c["id"]: c["id"] for c in categories}
    records = load_checkout_json(json_file, image_root, id_map=identity, with_masks=False)
    items, several, empty = [], 0, 0
    for r in records:
        anns = r["annotations"]
        if not anns:
            empty += 1
            continue
        several += len(anns) > 1
        a = max(anns, key=lambda a: a["bbox"][2] * a["bbox"][3])
        items.append(
            {
                "image_id": r["image_id"],
                "file_name": os.path.abspath(r["file_name"]),
                "category_id": a["category_id"],
                "bbox": [float(v) for v in a["bbox"]],
                "height": r["height"],
                "width": r["width"],
            }
        )
    if several:
        logger.warning(
            "%s: %d exemplar images have several boxes; the largest is used", json_file, several
        )
    if empty:
        logger.info("%s: %d images without a box are not exemplars", json_file, empty)
    items.sort(key=lambda it: it["image_id"])
    source = {
        "dataset": dataset or os.fspath(json_file),
        "json_file": os.path.abspath(json_file),
        "image_root": os.path.abspath(image_root),
    }
    return items, categories, source


def assemble(
    records: list,
    categories: list,
    source: dict,
    settings: MaskSettings,
    min_quality: float,
    min_area_ratio: float,
    pose_enabled: bool = True,
) -> dict:
    """The index: quality check and pose pruning decided on the (cached or new) records."""
    items = [dict(r) for r in records]
    for it in items:
        if not it["drop_reason"] and it["quality"] < min_quality:
            it["drop_reason"] = "quality"
            it["note"] = f"mask quality {it['quality']:.3f} < {min_quality}"
    prune_poses(items, min_area_ratio, pose_enabled)
    decisions = {
        "min_quality": min_quality,
        "pose_enabled": pose_enabled,
        "min_area_ratio": min_area_ratio,
    }
    return {
        "version": INDEX_VERSION,
        **source,
        "settings": {**settings.coarse_dict(), **settings.refine_dict(), **decisions},
        "items": items,
        "categories": categories,
    }


def truth_report(items: list, out, truth_dir) -> dict:
    """IoU of the coarse and final masks against true masks (for reports only).

    The true mask of exemplar ``<stem>.jpg`` is ``truth_dir/<stem>.png`` (image-sized, 0/255).
    IoU is taken over the whole image, so true pixels outside the box count as missed; an
    exemplar without a mask (empty) scores 0. Unreadable exemplars are not scored.
    """
    out, truth_dir = Path(out), Path(truth_dir)
    if not truth_dir.is_dir():
        raise BadInputError(f"{truth_dir}: true-mask folder not found")
    rows, missing = [], []
    for it in items:
        if it["drop_reason"] == "unreadable":
            continue
        path = truth_dir / (Path(it["file_name"]).stem + ".png")
        truth = try_read_image(path, cv2.IMREAD_GRAYSCALE)
        if truth is None:
            missing.append(it["image_id"])
            continue
        truth = truth > 127
        row = {"image_id": it["image_id"], "category_id": it["category_id"], "kept": it["kept"]}
        for name, field in (("coarse", "coarse_mask"), ("refined", "mask")):
            row[f"iou_{name}"] = round(_iou_in_image(out / it[field], it["extent"], truth), 4)
        rows.append(row)

    def summary(sel: list) -> dict:
        c = np.array([r["iou_coarse"] for r in sel]) if sel else np.zeros(0)
        f = np.array([r["iou_refined"] for r in sel]) if sel else np.zeros(0)
        mean = lambda a: round(float(a.mean()), 4) if a.size else None  # noqa: E731
        return {
            "n": len(sel),
            "mean_iou_coarse": mean(c),
            "mean_iou_refined": mean(f),
            "share_refined_iou_ge_0.9": mean(f >= 0.9),
        }

    cats = sorted({r["category_id"] for r in rows})
    return {
        "truth_dir": os.path.abspath(truth_dir),
        "missing_truth": len(missing),
        "missing_truth_ids": missing[:50],
        "all": summary(rows),
        "kept": summary([r for r in rows if r["kept"]]),
        "per_category": {str(c): summary([r for r in rows if r["category_id"] == c]) for c in cats},
        "worst": sorted(rows, key=lambda r: r["iou_refined"])[:10],
    }


def _iou_in_image(mask_path: Path, extent, truth: np.ndarray) -> float:
    m = try_read_image(mask_path, cv2.IMREAD_GRAYSCALE)
    inter = pred = 0
    if m is not None:
        x0, y0, x1, y1 = extent
        m = m > 127
        inter, pred = int((m & truth[y0:y1, x0:x1]).sum()), int(m.sum())
    union = pred + int(truth.sum()) - inter
    return inter / union if union else 1.0


def read_bad_ids(path) -> list:
    """Image ids of a planted-bad-poses file (``{"bad_image_ids": [...]}`` or a plain list)."""
    data = load_json(path)
    ids = data.get("bad_image_ids") if isinstance(data, dict) else data
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise BadInputError(f"{path}: expected a list of image ids or {{'bad_image_ids': [...]}}")
    return ids


def extract_masks(
    items,
    categories,
    source,
    out,
    settings: MaskSettings,
    *,
    min_quality=0.5,
    min_area_ratio=0.45,
    pose_enabled=True,
    workers=1,
    truth_dir=None,
    planted_bad_poses=None,
) -> dict:
    """Masks, decisions and reports for a list of exemplars; writes everything under ``out``.

    Args:
        items, categories, source: from ``load_exemplars``.
        out: output folder.
        settings: mask settings.
        min_quality: quality check (``cfg.SYNTHESIS.MASKS.MIN_QUALITY``).
        min_area_ratio, pose_enabled: pose pruning (``cfg.SYNTHESIS.POSE``).
        workers: processes.
        truth_dir: optional folder of true masks, for ``mask_report.json`` only.
        planted_bad_poses: optional file of known bad poses, for ``pose_report.json`` only.

    Returns:
        ``{"index", "pose_report", "mask_report"}`` as written.
    """
    out = Path(out)
    bad_ids = read_bad_ids(planted_bad_poses) if planted_bad_poses else None
    t0 = time.perf_counter()
    records, stats = compute_masks(items, out, settings, workers)
    index = assemble(
        records, categories, source, settings, min_quality, min_area_ratio, pose_enabled
    )
    skipped = [it for it in index["items"] if it["drop_reason"] in ("unreadable", "empty")]
    for it in skipped[:50]:
        logger.warning("skipped exemplar %s (%s): %s", it["image_id"], it["file_name"], it["note"])
    if len(skipped) > 50:
        logger.warning(
            "... and %d more skipped exemplars (drop_reason in index.json)", len(skipped) - 50
        )
    atomic_write_json(out / "index.json", index)
    (out / JOURNAL).unlink(missing_ok=True)
    kept = [it for it in index["items"] if it["kept"]]
    poses = pose_report(index["items"], categories, min_area_ratio)
    if bad_ids is not None:
        every = ("pose", "quality", "empty", "unreadable")
        poses["planted_bad_poses"] = {
            "file": os.path.abspath(planted_bad_poses),
            "pose_drops": drop_scores(index["items"], bad_ids, ("pose",)),
            "all_drops": drop_scores(index["items"], bad_ids, every),
        }
    atomic_write_json(out / "pose_report.json", poses, indent=1)
    quality = np.array([it["quality"] for it in index["items"] if it["area"] > 0])
    report = {
        "run": {
            **stats,
            "exemplars": len(items),
            "kept": len(kept),
            "workers": workers,
            "wall_s": round(time.perf_counter() - t0, 2),
        },
        "quality": {
            "mean": round(float(quality.mean()), 4) if quality.size else None,
            "min_quality": min_quality,
        },
        "truth": truth_report(index["items"], out, truth_dir) if truth_dir else None,
    }
    atomic_write_json(out / "mask_report.json", report, indent=1)
    logger.info(
        "masks: %d exemplars, %d kept, %d computed, %d reused, %.1f s -> %s",
        len(items),
        len(kept),
        stats["computed"],
        stats["reused"],
        report["run"]["wall_s"],
        out,
    )
    return {"index": index, "pose_report": poses, "mask_report": report}


def extract_masks_from_config(
    cfg,
    out,
    *,
    dataset=None,
    json_file=None,
    image_root=None,
    workers=1,
    truth_dir=None,
    planted_bad_poses=None,
) -> dict:
    """``extract_masks`` with every setting from ``cfg.SYNTHESIS`` (``tools/extract_masks.py``)."""
    items, categories, source = load_exemplars(dataset, json_file, image_root)
    return extract_masks(
        items,
        categories,
        source,
        out,
        MaskSettings.from_config(cfg),
        min_quality=cfg.SYNTHESIS.MASKS.MIN_QUALITY,
        min_area_ratio=cfg.SYNTHESIS.POSE.MIN_AREA_RATIO,
        pose_enabled=cfg.SYNTHESIS.POSE.ENABLED,
        workers=workers,
        truth_dir=truth_dir,
        planted_bad_poses=planted_bad_poses,
    )
