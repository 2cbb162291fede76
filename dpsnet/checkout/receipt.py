"""Checkout receipts: a model's output for one image read as a shopping list, and their CSV.

A receipt lists every product detected with ``score >= threshold`` (the same rule as the RPC
evaluator's fixed threshold): its dataset category id, name, supercategory and count and, beside
it, the counting view's estimate when the model has one. DPSNet returns per image
``{"instances", "density": (C, h, w), "counts": (C,)}`` with C = 1 (total), one channel per
supercategory or one per category; a stock detectron2 model returns only ``instances``.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence

import numpy as np
import torch

from dpsnet.checkout.catalog import ProductCatalog

__all__ = ["CSV_COLUMNS", "lower_score_thresholds", "make_receipt", "receipts_csv"]

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("image", "product_id", "name", "supercategory", "count", "view_count")


def lower_score_thresholds(cfg, threshold: float) -> None:
    """Let the model keep detections down to ``threshold`` (its own test thresholds are lowered,
    never raised, so count-guided post-processing still sees what it is configured to see)."""
    for node in (cfg.MODEL.ROI_HEADS, cfg.MODEL.RETINANET):
        node.SCORE_THRESH_TEST = min(node.SCORE_THRESH_TEST, threshold)


def round_value(value: float, digits: int = 3) -> float:
    return float(round(float(value), digits))


def make_receipt(
    outputs: dict, catalog: ProductCatalog, threshold: float, image: str, height: int, width: int
) -> dict:
    """The receipt of one image from the model's output dict.

    Args:
        outputs: ``{"instances": Instances (pred_boxes, scores, pred_classes)}`` and optionally
            ``"counts"``: (C,) tensor of the counting view.
        catalog: names and ids of the model's classes.
        threshold: detections with ``score >= threshold`` are counted and drawn.
        image: the image's name (path relative to the input folder).
        height, width: the image's size in pixels.

    Returns:
        A JSON-serialisable dict: ``image``, ``height``, ``width``, ``score_threshold``,
        ``items`` (``product_id``, ``name``, ``supercategory``, ``count``, ``view_count``),
        ``total``, ``view_total``, ``view_levels`` (the counting view's levels),
        ``view_supercategories`` (with a supercategory level) and ``detections``
        (``product_id``, ``name``, ``class``, ``score``, ``bbox`` XYWH). View fields are None
        when the model has no counting view (or its channels fit no layout).
    """
    boxes, scores, classes = np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    if "instances" in outputs:
        inst = outputs["instances"].to("cpu")
        # float64 first: a bfloat16 model (CPU precision "auto") has no numpy dtype.
        boxes = inst.pred_boxes.tensor.to(torch.float64).numpy()
        scores = inst.scores.to(torch.float64).numpy()
        classes = inst.pred_classes.numpy().astype(np.int64)
    keep = scores >= threshold
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    order = np.argsort(-scores, kind="stable")
    counts = outputs.get("counts")
    views: dict[str, np.ndarray] = {}
    if counts is not None:
        if isinstance(counts, torch.Tensor):
            counts = counts.detach().to("cpu", torch.float64).numpy()
        counts = np.asarray(counts, dtype=np.float64).reshape(-1)
        layout = catalog.split_counts(counts.size)
        if layout is None:
            logger.warning(
                "%s: %d count channels fit no counting-view layout (levels %s, %d classes, "
                "%d supercategories); counts ignored",
                image, counts.size, catalog.count_levels, len(catalog.names),
                len(catalog.supercategory_names),
            )  # fmt: skip
        else:
            views = {level: counts[sl] for level, sl in layout.items()}
    per_class = np.bincount(classes, minlength=len(catalog.names))
    items = []
    for c, name in enumerate(catalog.names):
        view = round_value(views["category"][c]) if "category" in views else None
        if per_class[c] or (view is not None and round(view) > 0):
            items.append(
                {
                    "product_id": catalog.product_ids[c],
                    "name": name,
                    "supercategory": catalog.supercategories[c],
                    "count": int(per_class[c]),
                    "view_count": view,
                }
            )
    items.sort(key=lambda item: item["product_id"])
    supers = None
    if "supercategory" in views:
        sc_ids = np.asarray(catalog.supercategory_ids, np.int64)
        supers = [
            {
                "name": sc,
                "count": int(per_class[sc_ids == i].sum()),
                "view_count": round_value(views["supercategory"][i]),
            }
            for i, sc in enumerate(catalog.supercategory_names)
        ]
    # Every level sums to the total; the total channel, when there is one, is the view's own.
    first = views.get("total", next(iter(views.values()), None))
    return {
        "image": image,
        "height": int(height),
        "width": int(width),
        "score_threshold": float(threshold),
        "items": items,
        "total": int(keep.sum()),
        "view_total": None if first is None else round_value(first.sum()),
        "view_levels": list(views) or None,
        "view_supercategories": supers,
        "detections": [
            {
                "product_id": catalog.product_ids[classes[i]],
                "name": catalog.names[classes[i]],
                "class": int(classes[i]),
                "score": round_value(scores[i], 4),
                "bbox": [
                    round_value(boxes[i, 0], 1),
                    round_value(boxes[i, 1], 1),
                    round_value(boxes[i, 2] - boxes[i, 0], 1),
                    round_value(boxes[i, 3] - boxes[i, 1], 1),
                ],
            }
            for i in order
        ],
    }


def receipts_csv(receipts: Sequence[dict], skipped: Sequence[dict] = ()) -> str:
    """One CSV for a folder: a row per product line, then a ``TOTAL`` row per image.

    Files that could not be checked out (``skipped``: ``{"file", "reason"}``) follow, one
    ``SKIPPED`` row each (no product, no count), so the CSV alone shows nothing went missing;
    their reasons are in ``summary.json`` and the report.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in receipts:
        rows = [[r["image"], *(item[k] for k in CSV_COLUMNS[1:])] for item in r["items"]]
        rows.append([r["image"], "", "TOTAL", "", r["total"], r["view_total"]])
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    for s in skipped:
        writer.writerow([s["file"], "", "SKIPPED", "", "", ""])
    return buf.getvalue()
