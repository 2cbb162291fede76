"""Generated RPC-like ground truth and detector results, for tests, benchmarks and demos.

Nothing here touches images: a "checkout" is a list of boxes with categories and a clutter level,
and a "detector" is a noisy copy of it (missed items, look-alike confusions, duplicates, low-score
false positives), all drawn from one seed.
"""

from __future__ import annotations

import numpy as np

from dpsnet.data.datasets.checkout import CLUTTER_LEVELS

__all__ = ["make_ground_truth", "make_results"]

# Items per image (inclusive bounds), close to RPC's 7.15 / 12.30 / 17.35 averages.
ITEMS = {"easy": (4, 10), "medium": (10, 15), "hard": (15, 20)}
CATEGORIES_PER_IMAGE = {"easy": (3, 4), "medium": (5, 7), "hard": (8, 10)}


def make_ground_truth(
    num_images: int,
    num_categories: int = 200,
    num_supercategories: int = 17,
    seed: int = 0,
    image_size: int = 1815,
    levels: tuple[str, ...] = CLUTTER_LEVELS,
) -> dict:
    """An RPC-format annotation dict: images (with ``level``), categories, boxes.

    Levels cycle through ``levels`` (an empty tuple gives images without a level). Boxes are
    100-400 px squares-ish placed anywhere in a ``image_size`` square image.
    """
    rng = np.random.default_rng(seed)
    categories = [
        {
            "id": k + 1,
            "name": f"sku_{k + 1:03d}",
            "supercategory": f"super_{k % num_supercategories}",
        }
        for k in range(num_categories)
    ]
    images, anns = [], []
    level_of = [levels[i % len(levels)] if levels else None for i in range(num_images)]
    lo_hi = np.array([ITEMS[lv or "medium"] for lv in level_of])
    n_items = rng.integers(lo_hi[:, 0], lo_hi[:, 1] + 1)
    total = int(n_items.sum())
    wh = rng.uniform(100, 400, size=(total, 2))
    xy = rng.uniform(0, 1, size=(total, 2)) * (image_size - wh)
    boxes = np.round(np.concatenate([xy, wh], axis=1), 2).tolist()
    start = 0
    for i, n in enumerate(n_items.tolist()):
        img = {"file_name": f"{i:06d}.jpg", "width": image_size, "height": image_size, "id": i + 1}
        if level_of[i]:
            img["level"] = level_of[i]
        images.append(img)
        c_lo, c_hi = CATEGORIES_PER_IMAGE[level_of[i] or "medium"]
        n_cats = min(int(rng.integers(c_lo, c_hi + 1)), n, num_categories)
        chosen = rng.choice(num_categories, size=n_cats, replace=False)
        cats = np.concatenate([chosen, rng.choice(chosen, size=n - n_cats)]) + 1
        for j in range(n):
            b = boxes[start + j]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(cats[j]),
                    "bbox": b,
                    "area": round(b[2] * b[3], 2),
                    "iscrowd": 0,
                    "segmentation": [],
                    "point_xy": [b[0] + b[2] / 2, b[1] + b[3] / 2],
                }  # fmt: skip
            )
        start += n
    return {
        "info": {"description": "generated RPC-like checkout set"},
        "licenses": [],
        "categories": categories,
        "__raw_Chinese_name_df": [],
        "images": images,
        "annotations": anns,
    }


def make_results(
    gt: dict,
    seed: int = 0,
    miss_rate: float = 0.03,
    confusion_rate: float = 0.03,
    duplicate_rate: float = 0.02,
    false_positives_per_image: float = 4.0,
    confident_per_image: bool = True,
) -> list[dict]:
    """A noisy detector's COCO results for ``gt``.

    True items are found with probability ``1 - miss_rate`` (scores mostly high), sometimes as a
    neighbouring ("look-alike") category, sometimes twice; false positives with low scores are
    added. With ``confident_per_image``, each image with an item gets one detection scoring
    0.995, so every image has a detection at every threshold rpctool tries (rpctool drops images
    without one; see ``rpc_metrics``).
    """
    rng = np.random.default_rng(seed)
    num_categories = len(gt["categories"])
    anns = gt["annotations"]
    m = len(anns)
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(m, 4)
    image_ids = np.array([a["image_id"] for a in anns], dtype=np.int64)
    cats = np.array([a["category_id"] for a in anns], dtype=np.int64)
    found = rng.random(m) >= miss_rate
    swap = rng.random(m) < confusion_rate
    cats = np.where(swap, (cats % num_categories) + 1, cats)
    scores = 0.5 + 0.5 * rng.beta(5, 1, size=m)
    scores = np.where(swap, rng.uniform(0.3, 0.9, size=m), scores)
    if confident_per_image:
        first = np.unique(image_ids, return_index=True)[1]
        found[first], scores[first] = True, 0.995
    jitter = boxes + rng.normal(0, 4, size=boxes.shape) * np.array([1, 1, 0.5, 0.5])
    jitter[:, 2:] = np.maximum(jitter[:, 2:], 1)
    dup = found & (rng.random(m) < duplicate_rate)
    dup_boxes = boxes[dup] + rng.normal(0, 20, size=(int(dup.sum()), 4))
    dup_boxes[:, 2:] = np.maximum(dup_boxes[:, 2:], 1)
    img_ids = np.array([img["id"] for img in gt["images"]], dtype=np.int64)
    size = np.array([img.get("width", 1815) for img in gt["images"]], dtype=np.float64)
    n_fp = rng.poisson(false_positives_per_image, size=img_ids.size)
    fp_img = np.repeat(np.arange(img_ids.size), n_fp)
    fp_wh = rng.uniform(40, 300, size=(fp_img.size, 2))
    fp_xy = rng.uniform(0, 1, size=(fp_img.size, 2)) * (size[fp_img, None] - fp_wh)
    parts = [
        (image_ids[found], cats[found], jitter[found], scores[found]),
        (image_ids[dup], cats[dup], dup_boxes, rng.uniform(0.05, 0.7, size=int(dup.sum()))),
        (
            img_ids[fp_img],
            rng.integers(1, num_categories + 1, size=fp_img.size),
            np.concatenate([fp_xy, fp_wh], axis=1),
            rng.beta(1, 4, size=fp_img.size),
        ),  # fmt: skip
    ]
    order = rng.permutation(sum(p[0].size for p in parts))
    ids, cs, bs, ss = (np.concatenate([p[i] for p in parts])[order] for i in range(4))
    return [
        {"image_id": i, "category_id": c, "bbox": [round(v, 2) for v in b], "score": round(s, 4)}
        for i, c, b, s in zip(ids.tolist(), cs.tolist(), bs.tolist(), ss.tolist())
    ]
