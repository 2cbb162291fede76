"""The whole RPC evaluation of one set of detections: levels, both threshold protocols, mAP,
the counting view, error analysis; and its outputs (flat metrics, JSON; the Markdown tables are
rendered by ``rpc_markdown``).

Units in the report and the flat metrics: cAcc, mCIoU, mAP50, mmAP and every accuracy or
agreement rate are percentages (as the published tables print them); ACD, mCCD and count errors
are plain numbers (items per image, ratio).

Flat metric names (detectron2's convention, a flat ``{"name": float}`` dict): the averaged level
has no prefix (``cAcc``), a level its name (``easy/cAcc``); ``num_images`` per level;
``score_threshold``; rpctool's searched-threshold protocol under ``search/`` (``search/cAcc``,
``search/easy/threshold``); the counting view under ``count/`` (``count/total_MAE``,
``count/easy/cAcc``). A level without images reports only its ``num_images`` (0).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dpsnet.data.datasets.checkout import CLUTTER_LEVELS
from dpsnet.evaluation.ground_truth import RPCGroundTruth
from dpsnet.evaluation.results_io import Detections
from dpsnet.evaluation.rpc_analysis import confusion_matrix, most_confused, most_miscounted
from dpsnet.evaluation.rpc_map import coco_map
from dpsnet.evaluation.rpc_markdown import markdown_report
from dpsnet.evaluation.rpc_metrics import (
    CHECKOUT_KEYS,
    CheckoutCounter,
    aggregate_counts,
    checkout_metrics,
    round_counts,
    search_score_threshold,
    total_count_metrics,
)
from dpsnet.utils.io import atomic_write_json, atomic_write_text

__all__ = [
    "PERCENT_KEYS",
    "PER_IMAGE_FILE",
    "count_metrics",
    "evaluate_files",
    "evaluate_rpc",
    "flat_metrics",
    "level_rows",
    "write_report",
]

logger = logging.getLogger(__name__)

PERCENT_KEYS = frozenset({"cAcc", "mCIoU", "mAP50", "mmAP", "total_acc", "agree", "agree_cAcc"})
#: Beside ``rpc_metrics.json``: {"threshold", "image_ids", "exact"} (see ``evaluate_rpc``).
PER_IMAGE_FILE = "rpc_per_image.json"


def _report_units(metrics: dict) -> dict:
    """Fractions -> percentages for PERCENT_KEYS (also ``super_``-prefixed); NaN dropped."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, float) and np.isnan(value):
            continue
        base = key.removeprefix("super_")
        out[key] = 100.0 * value if base in PERCENT_KEYS else value
    return out


def level_rows(gt: RPCGroundTruth, levels: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Image rows per level; "averaged" is every image (computed jointly, not a mean of levels).

    Args:
        gt: the evaluated images.
        levels: names to report, or None for the levels present in ``gt`` (easy, medium, hard
            first) followed by "averaged".

    Returns:
        level -> (n,) int64 rows (possibly empty for a requested level without images).
    """
    present = set(gt.levels) - {""}
    if levels is None:
        levels = [lv for lv in CLUTTER_LEVELS if lv in present]
        levels += sorted(present - set(CLUTTER_LEVELS)) + ["averaged"]
    level_of = np.array(gt.levels, dtype=object)
    return {
        lv: np.arange(gt.num_images) if lv == "averaged" else np.flatnonzero(level_of == lv)
        for lv in levels
    }


def _subset_counter(gt: RPCGroundTruth, dets: Detections, rows: np.ndarray) -> CheckoutCounter:
    """A CheckoutCounter over the images at ``rows`` (re-indexed 0..n-1)."""
    new_row = np.full(gt.num_images, -1, np.int64)
    new_row[rows] = np.arange(rows.size)
    d_keep = new_row[dets.image_index] >= 0
    g_keep = new_row[gt.ann_image] >= 0
    return CheckoutCounter(
        new_row[dets.image_index[d_keep]],
        dets.category_index[d_keep],
        dets.score[d_keep],
        new_row[gt.ann_image[g_keep]],
        gt.ann_category[g_keep],
        rows.size,
        gt.num_categories,
    )


def count_metrics(
    gt: RPCGroundTruth,
    dets: Detections,
    levels: dict[str, np.ndarray],
    score_threshold: float | None = 0.5,
    search_threshold: bool = True,
) -> dict[str, dict]:
    """Checkout metrics per level at the fixed threshold and with rpctool's search (fractions).

    Returns:
        level -> {"num_images", "fixed": {...} (when score_threshold is given),
        "search": {"threshold", ...} (when search_threshold)}.
    """
    out = {}
    for level, rows in levels.items():
        entry: dict = {"num_images": int(rows.size)}
        if rows.size:
            counter = _subset_counter(gt, dets, rows)
            if score_threshold is not None:
                entry["fixed"] = counter.metrics(score_threshold)
            if search_threshold:
                found = search_score_threshold(counter)
                entry["search"] = {"threshold": found.threshold, **found.metrics}
        out[level] = entry
    return out


def _counting_view(
    gt: RPCGroundTruth,
    dets: Detections,
    rows: np.ndarray,
    counts: np.ndarray,
    groups: np.ndarray,
    kind: str,
    score_threshold: float | None,
) -> dict[str, float]:
    """Count-only metrics of the counting view on the images at ``rows`` (fractions)."""
    pred = counts[rows]
    gt_grouped = aggregate_counts(gt.subset(rows).counts(), groups, counts.shape[1])
    out = total_count_metrics(pred.sum(axis=1), gt_grouped.sum(axis=1))
    if kind != "total":
        prefix = "super_" if kind == "supercategory" else ""
        for key, value in checkout_metrics(round_counts(pred), gt_grouped).items():
            if key in CHECKOUT_KEYS:
                out[prefix + key] = value
    if score_threshold is not None:
        keep = dets.score >= score_threshold
        det_total = np.bincount(dets.image_index[keep], minlength=gt.num_images)[rows]
        out["det_total_MAE"] = float(np.mean(np.abs(det_total - gt_grouped.sum(axis=1))))
        # The distillation rule: accept an image when the detector and the view agree.
        agree = round_counts(pred.sum(axis=1)) == det_total
        out["agree"] = float(np.mean(agree))
        if agree.any():
            counter = _subset_counter(gt, dets, rows[agree])
            out["agree_cAcc"] = counter.metrics(score_threshold)["cAcc"]
    return out


def evaluate_rpc(
    gt: RPCGroundTruth,
    dets: Detections,
    *,
    levels: Sequence[str] | None = None,
    score_threshold: float | None = 0.5,
    search_threshold: bool = True,
    compute_map: bool = True,
    counts: np.ndarray | None = None,
    count_groups: np.ndarray | None = None,
    count_kind: str = "total",
    top_k: int = 10,
    match_iou: float = 0.5,
) -> dict:
    """Evaluate detections on a checkout set, as RPC does, and analyse the errors.

    Args:
        gt: ground truth of the evaluated images (every image counts, with or without detection).
        dets: all detections (mAP uses all; checkout metrics count ``score >= threshold``).
        levels: see :func:`level_rows`.
        score_threshold: the fixed (deployable) threshold, or None to report only the search.
        search_threshold: also report rpctool's protocol (threshold searched on this set).
        compute_map: compute mAP50 / mmAP with pycocotools (the slow part on large sets).
        counts: (N, C) counts from the counting view per image, or None.
        count_groups: (K,) channel of each category (all 0 for a total count).
        count_kind: "total", "supercategory" or "category" (what the channels mean).
        top_k: rows of the most miscounted / most confused tables.
        match_iou: IoU of a box match for the confusion table.

    Returns:
        A JSON-serialisable report: ``score_threshold``, sizes, ``levels`` (level -> sections
        ``fixed``, ``search``, ``map``, ``count``, in report units), ``categories``
        (``most_miscounted``, ``most_confused``, ``threshold``), and ``metrics`` (flat).
    """
    rows_by_level = level_rows(gt, levels)
    checkout = count_metrics(gt, dets, rows_by_level, score_threshold, search_threshold)
    maps = {}
    if compute_map:
        maps = coco_map(gt, dets, {lv: r for lv, r in rows_by_level.items() if r.size})
    report_levels = {}
    for level, entry in checkout.items():
        section = {"num_images": entry["num_images"]}
        for name in ("fixed", "search"):
            if name in entry:
                section[name] = _report_units(entry[name])
        if level in maps:
            section["map"] = _report_units(maps[level])
        if counts is not None and entry["num_images"]:
            rows = rows_by_level[level]
            view = _counting_view(gt, dets, rows, counts, count_groups, count_kind, score_threshold)
            section["count"] = _report_units(view)
        report_levels[level] = section

    # Error analysis over every image, at the fixed threshold (else the searched one).
    threshold = score_threshold
    if threshold is None:
        threshold = report_levels.get("averaged", {}).get("search", {}).get("threshold")
    categories: dict = {"threshold": threshold, "most_miscounted": [], "most_confused": []}
    per_image = None
    if threshold is not None and gt.num_images:
        every = np.arange(gt.num_images)
        counter = _subset_counter(gt, dets, every)
        per_image = {
            "threshold": float(threshold),
            "image_ids": gt.image_ids.tolist(),
            "exact": counter.exact(threshold).tolist(),
        }
        per_cat = counter.per_category(threshold)
        categories["most_miscounted"] = most_miscounted(
            per_cat, gt.category_names, gt.supercategories, top_k
        )
        kept = dets.select(dets.score >= threshold)
        matrix = confusion_matrix(
            gt.ann_image, gt.ann_category, gt.ann_bbox, kept.image_index, kept.category_index,
            kept.bbox, kept.score, gt.num_categories, match_iou,
        )  # fmt: skip
        categories["most_confused"] = most_confused(matrix, gt.category_names, top_k)
    report = {
        "score_threshold": score_threshold,
        "num_images": gt.num_images,
        "num_categories": gt.num_categories,
        "num_detections": len(dets),
        "count_kind": count_kind if counts is not None else None,
        "levels": report_levels,
        "categories": categories,
        # Which images' receipts are exactly right, at the threshold of the error analysis: two
        # models evaluated on the same images are compared image by image with it (paired).
        "per_image": per_image,
    }
    report["metrics"] = flat_metrics(report)
    return report


def flat_metrics(report: dict) -> dict[str, float]:
    """The report's figures as one flat ``{name: float}`` dict (names in the module docstring)."""
    flat: dict[str, float] = {}
    if report.get("score_threshold") is not None:
        flat["score_threshold"] = float(report["score_threshold"])
    for level, section in report["levels"].items():
        prefix = "" if level == "averaged" else f"{level}/"
        flat[f"{prefix}num_images"] = float(section["num_images"])
        for key, value in section.get("fixed", {}).items():
            if key != "num_images":
                flat[prefix + key] = float(value)
        for key, value in section.get("map", {}).items():
            flat[prefix + key] = float(value)
        for key, value in section.get("search", {}).items():
            if key != "num_images":
                flat[f"search/{prefix}{key}"] = float(value)
        for key, value in section.get("count", {}).items():
            if key != "num_images":
                flat[f"count/{prefix}{key}"] = float(value)
    return flat


def write_report(
    output_dir: str | os.PathLike, report: dict, results: list[dict] | None = None
) -> None:
    """Write ``rpc_metrics.json``, ``rpc_metrics.md``, the report's ``per_image`` exactness
    (``rpc_per_image.json``, compact) and, if given, the COCO results
    (``coco_instances_results.json``) to ``output_dir``, each atomically."""
    out = Path(output_dir)
    if results is not None:
        atomic_write_json(out / "coco_instances_results.json", results)
    per_image = report.get("per_image")
    if per_image is not None:
        atomic_write_json(out / PER_IMAGE_FILE, per_image)
    report = {k: v for k, v in report.items() if k != "per_image"}
    atomic_write_json(out / "rpc_metrics.json", report, indent=2)
    atomic_write_text(out / "rpc_metrics.md", markdown_report(report) + "\n")
    logger.info("RPC evaluation written to %s", out)


def evaluate_files(
    results_path: str | os.PathLike,
    annotations_path: str | os.PathLike,
    *,
    levels: Sequence[str] | None = None,
    score_threshold: float | None = 0.5,
    search_threshold: bool = True,
    compute_map: bool = True,
    output_dir: str | os.PathLike | None = None,
    top_k: int = 10,
    transform: Callable[[Detections], Detections] | None = None,
) -> dict:
    """Evaluate a COCO results file against an RPC annotation file (``tools/evaluate_rpc.py``).

    Every image of the annotation file is evaluated, with or without detections. ``transform``,
    when given, maps the parsed detections before anything is measured (``tools/evaluate_rpc.py
    --cross-class-iou`` merges products overlapping on one object with it).

    Raises:
        BadInputError: an unreadable or malformed file, naming it and the first bad entry.
    """
    from dpsnet.evaluation.results_io import parse_results
    from dpsnet.utils.io import load_json

    gt = RPCGroundTruth.from_json(annotations_path)
    dets = parse_results(load_json(results_path), gt, source=str(results_path))
    if transform is not None:
        dets = transform(dets)
    report = evaluate_rpc(
        gt,
        dets,
        levels=levels,
        score_threshold=score_threshold,
        search_threshold=search_threshold,
        compute_map=compute_map,
        top_k=top_k,
    )
    report["results_file"] = str(results_path)
    report["annotations_file"] = str(annotations_path)
    if output_dir is not None:
        write_report(output_dir, report)
    return report
