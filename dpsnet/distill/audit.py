"""Audit of pseudo-labels against the pool's hidden ground truth.

Runs *after* a round's pseudo-labels are written, on that JSON file and the pool's ground-truth
file; it returns figures for the report and feeds nothing back (the labeller never imports this
module, and a test checks that selection does not change when the ground truth is missing).

A pseudo box is a true positive when it matches an unmatched ground-truth box of the same category
with IoU >= ``iou_threshold`` (greedy, highest score first).
"""

import logging
import os
from collections import Counter, defaultdict

import numpy as np

from dpsnet.evaluation.rpc_analysis import box_iou_xywh
from dpsnet.utils.io import BadInputError, load_json

logger = logging.getLogger(__name__)

__all__ = ["audit_pseudo_labels", "audit_pseudo_label_files", "box_iou_xywh"]

# (box_iou_xywh is the evaluation's, re-exported for the audit's callers)


def _match(
    pseudo: list[dict], gt: list[dict], iou_threshold: float, sets: bool = False
) -> tuple[int, np.ndarray]:
    """Greedy same-category matching. Returns (true positives, [M] bool: GT box matched).

    With ``sets``, a pseudo box with a ``category_set`` matches a box of any of its categories.
    """
    matched = np.zeros(len(gt), dtype=bool)
    if not pseudo or not gt:
        return 0, matched
    order = sorted(range(len(pseudo)), key=lambda i: -pseudo[i].get("score", 1.0))
    ious = box_iou_xywh([p["bbox"] for p in pseudo], [g["bbox"] for g in gt])
    gt_cats = np.array([g["category_id"] for g in gt])
    tp = 0
    for i in order:
        cats = pseudo[i].get("category_set") if sets else None
        same = np.isin(gt_cats, cats or [pseudo[i]["category_id"]])
        cand = np.where(same & ~matched, ious[i], -1.0)
        j = int(np.argmax(cand))
        if cand[j] >= iou_threshold:
            matched[j] = True
            tp += 1
    return tp, matched


def _covered_fraction(box_xywh, regions_xyxy) -> float:
    """Fraction of a box's area inside the union of painted regions (rasterised at 1 px)."""
    x, y, w, h = box_xywh
    x0, y0, x1, y1 = int(np.floor(x)), int(np.floor(y)), int(np.ceil(x + w)), int(np.ceil(y + h))
    if x1 <= x0 or y1 <= y0:
        return 0.0
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for rx0, ry0, rx1, ry1 in regions_xyxy:
        cx0, cy0 = max(int(np.floor(rx0)), x0), max(int(np.floor(ry0)), y0)
        cx1, cy1 = min(int(np.ceil(rx1)), x1), min(int(np.ceil(ry1)), y1)
        if cx1 > cx0 and cy1 > cy0:
            mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = True
    return float(mask.mean())


def _union_area(regions_xyxy, width: int, height: int) -> int:
    """Pixels of a ``width`` x ``height`` image inside the union of XYXY regions."""
    if not regions_xyxy or not width or not height:
        return 0
    mask = np.zeros((int(height), int(width)), dtype=bool)
    for rx0, ry0, rx1, ry1 in regions_xyxy:
        x0, y0 = max(int(np.floor(rx0)), 0), max(int(np.floor(ry0)), 0)
        x1, y1 = min(int(np.ceil(rx1)), int(width)), min(int(np.ceil(ry1)), int(height))
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True
    return int(mask.sum())


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def audit_pseudo_labels(
    pseudo: dict, groundtruth: dict, *, iou_threshold: float = 0.5, covered: float = 0.5
) -> dict:
    """Precision and recall of one round's pseudo-labels against the pool's ground truth.

    Args:
        pseudo: the round's pseudo-label JSON (images carry ``pool_image_id``, ``pseudo_kind``,
            ``painted_boxes`` and optionally ``ignore_boxes`` [[x0, y0, x1, y1], ...]).
        groundtruth: the pool's hidden ground truth (COCO/RPC JSON with the pool's image ids).
        iou_threshold: IoU for a pseudo box to count as correct.
        covered: a missed object counts as painted over when this fraction of its box is painted.

    Returns:
        A JSON-ready dict: per kind ("image", "instance", "all") images, pseudo boxes, true
        positives, precision, recall over the selected images' objects; the fraction of
        image-level samples whose per-category counts are exactly right; pool recall; and for
        instance-level samples, how many unlabelled objects were painted over (or lie in ignore
        regions); the shares of the pool's image area painted over and left as ignore regions;
        the boxes with a ``category_set`` and the share of them matching an object of one of
        their categories.
    """
    gt_by_image = defaultdict(list)
    for ann in groundtruth.get("annotations", []):
        gt_by_image[ann["image_id"]].append(ann)
    gt_ids = {img["id"] for img in groundtruth.get("images", [])}
    ps_by_image = defaultdict(list)
    for ann in pseudo.get("annotations", []):
        if not ann.get("iscrowd", 0):  # crowd boxes are ignore regions, not labels
            ps_by_image[ann["image_id"]].append(ann)

    stats = {k: Counter() for k in ("image", "instance", "all")}
    exact_images = 0
    missed_instance, missed_painted = 0, 0
    area = Counter()
    for img in groundtruth.get("images", []):
        area["pool"] += int(img.get("width") or 0) * int(img.get("height") or 0)
    for img in pseudo.get("images", []):
        pool_id = img["pool_image_id"]
        if pool_id not in gt_ids:
            raise BadInputError(f"pseudo-label image {pool_id} is not in the pool ground truth")
        kind = img["pseudo_kind"]
        gt, ps = gt_by_image[pool_id], ps_by_image[img["id"]]
        tp, matched = _match(ps, gt, iou_threshold)
        set_boxes = [p for p in ps if p.get("category_set")]
        if set_boxes:
            set_tp = _match(set_boxes, gt, iou_threshold, sets=True)[0]
            stats["all"].update(set_boxes=len(set_boxes), set_true_positives=set_tp)
        for k in (kind, "all"):
            stats[k].update(images=1, boxes=len(ps), true_positives=tp, objects=len(gt))
        if kind == "image":
            exact = Counter(a["category_id"] for a in ps) == Counter(a["category_id"] for a in gt)
            exact_images += int(exact)
        else:
            painted = img.get("painted_boxes", []) + img.get("ignore_boxes", [])
            w, h = img.get("width"), img.get("height")
            area["painted"] += _union_area(img.get("painted_boxes", []), w, h)
            area["ignored"] += _union_area(img.get("ignore_boxes", []), w, h)
            for g, m in zip(gt, matched, strict=True):
                if not m:
                    missed_instance += 1
                    missed_painted += int(_covered_fraction(g["bbox"], painted) >= covered)

    out = {}
    for k, s in stats.items():
        out[k] = {
            "images": s["images"],
            "boxes": s["boxes"],
            "true_positives": s["true_positives"],
            "objects": s["objects"],
            "precision": _ratio(s["true_positives"], s["boxes"]),
            "recall": _ratio(s["true_positives"], s["objects"]),
        }
    pool_objects = sum(len(gt_by_image[i]) for i in gt_ids)
    out["image_level_exact"] = _ratio(exact_images, stats["image"]["images"])
    out["pool_images"] = len(gt_ids)
    out["pool_objects"] = pool_objects
    out["pool_recall"] = _ratio(stats["all"]["true_positives"], pool_objects)
    out["instance_missed_objects"] = missed_instance
    out["instance_missed_painted"] = _ratio(missed_painted, missed_instance)
    # Shares of the pool's image area (None when the ground truth has no image sizes).
    out["area_painted_fraction"] = _ratio(area["painted"], area["pool"])
    out["area_ignored_fraction"] = _ratio(area["ignored"], area["pool"])
    # Set-valued pseudo-labels (DISTILL.CLASS_SET_RATIO): boxes with a set of categories, and
    # the share of them whose object's category is in the set.
    out["class_set_boxes"] = stats["all"]["set_boxes"]
    out["class_set_precision"] = _ratio(
        stats["all"]["set_true_positives"], stats["all"]["set_boxes"]
    )
    out["iou_threshold"] = iou_threshold
    return out


def audit_pseudo_label_files(
    pseudo_json: str | os.PathLike, groundtruth_json: str | os.PathLike, **kwargs
) -> dict:
    """``audit_pseudo_labels`` on files (errors name the file)."""
    return audit_pseudo_labels(load_json(pseudo_json), load_json(groundtruth_json), **kwargs)
