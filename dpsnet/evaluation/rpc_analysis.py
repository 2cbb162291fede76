"""Where a checkout goes wrong: the most miscounted categories and the most confused pairs.

Both work on one score threshold (the deployed one). Miscounting is read from the count
matrices; confusion from boxes: detections and true boxes of an image are matched ignoring the
category (greedily by score, IoU >= ``iou_threshold``, as COCO matches within a category), and a
matched pair whose categories differ is one confusion "true -> predicted".
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_iou_xywh", "confusion_matrix", "most_confused", "most_miscounted"]


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (n, 4) and (m, 4) XYWH boxes (arrays or nested lists) -> (n, m) float64.

    The one box IoU of dpsnet's evaluation and audits; empty inputs give an empty matrix.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def confusion_matrix(
    gt_image: np.ndarray,
    gt_category: np.ndarray,
    gt_bbox: np.ndarray,
    det_image: np.ndarray,
    det_category: np.ndarray,
    det_bbox: np.ndarray,
    det_score: np.ndarray,
    num_categories: int,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """Class-agnostic box matching per image; counts of (true category, predicted category).

    Args:
        gt_image, gt_category: (M,) int image rows and category indices of the true boxes.
        gt_bbox: (M, 4) XYWH true boxes.
        det_image, det_category: (D,) int, of the (already thresholded) detections.
        det_bbox: (D, 4) XYWH detections; det_score: (D,) scores (matching order).
        num_categories: K.
        iou_threshold: minimum IoU for a match.

    Returns:
        (K, K) int64 matrix; entry [t, p] counts true boxes of category t matched by a detection
        of category p (the diagonal holds correct matches).
    """
    matrix = np.zeros((num_categories, num_categories), np.int64)
    gt_order = np.argsort(gt_image, kind="stable")
    det_order = np.lexsort((-det_score, det_image))  # by image, then score descending
    gt_img_sorted, det_img_sorted = gt_image[gt_order], det_image[det_order]
    images = np.intersect1d(gt_img_sorted, det_img_sorted)
    g_lo, g_hi = (
        np.searchsorted(gt_img_sorted, images),
        np.searchsorted(gt_img_sorted, images, "right"),
    )
    d_lo, d_hi = (
        np.searchsorted(det_img_sorted, images),
        np.searchsorted(det_img_sorted, images, "right"),
    )
    pairs_t, pairs_p = [], []
    for gl, gh, dl, dh in zip(g_lo, g_hi, d_lo, d_hi):
        g, d = gt_order[gl:gh], det_order[dl:dh]
        iou = box_iou_xywh(det_bbox[d], gt_bbox[g])  # (n_det, n_gt), dets by score
        taken = np.zeros(len(g), bool)
        for r in np.flatnonzero(iou.max(axis=1) >= iou_threshold):
            row = np.where(taken, -1.0, iou[r])
            j = int(np.argmax(row))
            if row[j] >= iou_threshold:
                taken[j] = True
                pairs_t.append(gt_category[g[j]])
                pairs_p.append(det_category[d[r]])
    np.add.at(matrix, (np.asarray(pairs_t, np.int64), np.asarray(pairs_p, np.int64)), 1)
    return matrix


def most_miscounted(
    per_category: dict[str, np.ndarray], names: list[str], supercategories: list[str], top_k: int
) -> list[dict]:
    """The categories with the largest total count error (over + under), worst first.

    Args:
        per_category: ``CheckoutCounter.per_category`` output (each (K,)).
        names, supercategories: K names each.
        top_k: rows to return (categories without any error are left out).

    Returns:
        rows of {category, supercategory, gt, pred, over, under, images_wrong, CCD} where CCD is
        (over + under) / gt (None when the category has no true item).
    """
    err = per_category["over"] + per_category["under"]
    order = [k for k in np.argsort(-err, kind="stable") if err[k] > 0][:top_k]
    rows = []
    for k in order:
        gt = int(per_category["gt"][k])
        rows.append(
            {
                "category": names[k],
                "supercategory": supercategories[k],
                "gt": gt,
                "pred": int(per_category["pred"][k]),
                "over": int(per_category["over"][k]),
                "under": int(per_category["under"][k]),
                "images_wrong": int(per_category["images_wrong"][k]),
                "CCD": float(err[k] / gt) if gt else None,
            }
        )
    return rows


def most_confused(matrix: np.ndarray, names: list[str], top_k: int) -> list[dict]:
    """The off-diagonal (true, predicted) pairs of a confusion matrix, most frequent first.

    Returns:
        rows of {true, predicted, boxes, share} where share is the fraction of the true
        category's matched boxes that went to the predicted one.
    """
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:top_k]
    matched = matrix.sum(axis=1)
    rows = []
    for idx in flat:
        t, p = np.unravel_index(idx, off.shape)
        if off[t, p] == 0:
            break
        rows.append(
            {
                "true": names[t],
                "predicted": names[p],
                "boxes": int(off[t, p]),
                "share": float(off[t, p] / matched[t]),
            }
        )
    return rows
