"""Pose pruning: drop exemplars whose view of the product is unrealistic on a checkout tray.

A product lying on a tray is seen from above at about its largest extent. An exemplar camera
that looks at it edge-on (a thin side view) shows a much smaller silhouette, and pasting that
silhouette into a top-view scene would teach the detector a pose it never meets. The method's
rule: ``ratio = mask area / the largest mask area among the exemplars of the same product``;
keep the exemplar when ``ratio > threshold`` (0.45, ``cfg.SYNTHESIS.POSE.MIN_AREA_RATIO``).

The largest area is taken over the exemplars whose mask is usable (not empty, unreadable or of
too low a quality), so that one broken mask cannot set the reference for its product.

Items are the records of the masks index (``dpsnet.synthesis.masks``): dicts with at least
``image_id``, ``category_id``, ``area`` and ``drop_reason`` (``""`` while usable).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

#: Drop reasons decided before pose pruning; such items never set a product's reference area.
MASK_DROP_REASONS = ("unreadable", "empty", "quality")


def area_ratios(areas, category_ids, usable) -> np.ndarray:
    """Each mask's area divided by the largest usable area of its category.

    Args:
        areas: (N,) mask areas in pixels.
        category_ids: (N,) category of each mask.
        usable: (N,) bool, masks allowed to be the reference.

    Returns:
        (N,) float64 ratios; 0.0 for a category without a usable mask of positive area.
    """
    areas = np.asarray(areas, np.float64)
    cats = np.asarray(category_ids)
    usable = np.asarray(usable, bool)
    ratios = np.zeros(len(areas), np.float64)
    for c in np.unique(cats):
        sel = cats == c
        ref = areas[sel & usable]
        top = ref.max() if ref.size else 0.0
        if top > 0:
            ratios[sel] = areas[sel] / top
    return ratios


def prune_poses(items: list[dict], min_ratio: float = 0.45, enabled: bool = True) -> list[dict]:
    """Set ``area_ratio``, ``kept`` and ``drop_reason`` of every item (in place).

    An item keeps an earlier drop reason (unreadable, empty, quality); otherwise it is dropped
    with reason ``"pose"`` when its ratio is not above ``min_ratio`` (and pruning is enabled).

    Returns:
        ``items``.
    """
    if not items:
        return items
    usable = [not it.get("drop_reason") for it in items]
    areas = [it.get("area", 0) for it in items]
    ratios = area_ratios(areas, [it["category_id"] for it in items], usable)
    for it, ok, r in zip(items, usable, ratios):
        it["area_ratio"] = round(float(r), 4)
        if ok and enabled and not r > min_ratio:
            it["drop_reason"] = "pose"
        it["kept"] = not it.get("drop_reason")
    return items


def pose_report(items: list[dict], categories: list[dict], min_ratio: float) -> dict:
    """Per product: how many exemplars were kept and which were dropped, and why.

    Args:
        items: pruned index records (``prune_poses``).
        categories: the dataset's categories (``id``, ``name``).
        min_ratio: the threshold used.

    Returns:
        ``{"min_area_ratio", "total": {...}, "products": [{"category_id", "name", "exemplars",
        "kept", "dropped": {reason: n}, "max_area", "dropped_items": [{"image_id",
        "file_name", "area_ratio", "reason"}]}]}``, products in category-id order.
    """
    names = {c["id"]: c.get("name", str(c["id"])) for c in categories}
    by_cat = defaultdict(list)
    for it in items:
        by_cat[it["category_id"]].append(it)
    products, total = [], defaultdict(int)
    for cat in sorted(set(names) | set(by_cat)):
        its = sorted(by_cat.get(cat, []), key=lambda it: it["image_id"])
        dropped = defaultdict(int)
        for it in its:
            if not it.get("kept"):
                dropped[it.get("drop_reason") or "unknown"] += 1
        usable = [it.get("area", 0) for it in its if it.get("drop_reason") not in MASK_DROP_REASONS]
        entry = {
            "category_id": cat,
            "name": names.get(cat, str(cat)),
            "exemplars": len(its),
            "kept": sum(bool(it.get("kept")) for it in its),
            "dropped": dict(sorted(dropped.items())),
            "max_area": int(max(usable, default=0)),
            "dropped_items": [
                {
                    "image_id": it["image_id"],
                    "file_name": it.get("file_name", ""),
                    "area_ratio": it.get("area_ratio", 0.0),
                    "reason": it.get("drop_reason") or "unknown",
                }
                for it in its
                if not it.get("kept")
            ],
        }
        products.append(entry)
        total["exemplars"] += entry["exemplars"]
        total["kept"] += entry["kept"]
        for reason, n in dropped.items():
            total[f"dropped_{reason}"] += n
    return {"min_area_ratio": min_ratio, "total": dict(total), "products": products}


def drop_scores(items: list[dict], bad_ids, reasons=("pose",)) -> dict:
    """Precision and recall of the drops against a known list of bad exemplars.

    Args:
        items: pruned index records.
        bad_ids: image ids known to be bad (e.g. the mini world's planted thin side views).
        reasons: drop reasons that count as a drop (``("pose",)``: pose pruning's own drops).

    Returns:
        ``{"reasons", "dropped", "bad", "true_positives", "precision", "recall",
        "false_drops": [ids], "missed": [ids]}``; precision (recall) is None when nothing was
        dropped (nothing is bad). Bad ids that are not items of the index are ignored.
    """
    ids = {it["image_id"] for it in items}
    bad = {i for i in bad_ids if i in ids}
    dropped = {it["image_id"] for it in items if it.get("drop_reason") in reasons}
    tp = len(dropped & bad)
    return {
        "reasons": list(reasons),
        "dropped": len(dropped),
        "bad": len(bad),
        "true_positives": tp,
        "precision": round(tp / len(dropped), 4) if dropped else None,
        "recall": round(tp / len(bad), 4) if bad else None,
        "false_drops": sorted(dropped - bad),
        "missed": sorted(bad - dropped),
    }
