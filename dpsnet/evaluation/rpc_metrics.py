"""RPC checkout metrics on plain arrays: counts -> cAcc / ACD / mCCD / mCIoU, and threshold search.

Definitions (REFERENCE.md section 3; Wei et al., "RPC: A Large-Scale Retail Product Checkout
Dataset"). For N images and K categories, with P_ik the predicted and G_ik the true count of
category k in image i:

- cAcc  = (1/N) * #{i : P_ik == G_ik for every k}
- ACD   = (1/N) * sum_i sum_k |P_ik - G_ik|
- mCCD  = mean over categories k of  sum_i |P_ik - G_ik| / sum_i G_ik
- mCIoU = mean over categories k of  sum_i min(P_ik, G_ik) / sum_i max(P_ik, G_ik)

All functions here return fractions (cAcc 0.9 means 90 %); the evaluator's report turns cAcc,
mCIoU and mAP into percentages, as the published tables print them.

Where these functions differ from the public tool ``rpctool==0.1.6`` (``evaluate_v1``), they
follow the definition; each difference is tested in ``tests/evaluation/test_rpctool_parity.py``:

1. **Images without a detection.** rpctool builds its per-image counts from the detections, so an
   image with no detection above the threshold is left out of N and of every sum: missing a whole
   checkout costs nothing. Here every evaluated image counts (its prediction is all zeros).
2. **Categories absent from the ground truth.** rpctool divides by K = all categories, and a
   category with sum_i G_ik == 0 makes mCCD NaN (0/0) or inf (x/0), and a category never seen nor
   predicted makes mCIoU NaN. Here mCCD averages over categories present in the ground truth of
   the evaluated images, and mCIoU over categories present in the ground truth or the predictions
   (those whose ratio is defined; a category that is only predicted scores 0). Where every
   category occurs in the ground truth (RPC's test set) both give the same figure.
3. **An empty set of images** (e.g. a level with no image) makes rpctool raise ``IndexError``;
   here ``checkout_metrics`` returns NaN figures with ``num_images == 0`` and the report omits them.
4. rpctool computes mCCD and mCIoU in float32; here float64 (differences ~1e-7, far below the
   tool's printed precision of 2 decimals).

The threshold search reproduces rpctool's protocol exactly (4 rounds of 10 thresholds between 0.01
and 0.99, each round spanning the 3 best thresholds of the previous one, the answer being the first
best threshold of the last round; a detection counts when ``score >= threshold``), but ranks
thresholds by the cAcc defined above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CheckoutCounter",
    "ThresholdSearch",
    "aggregate_counts",
    "checkout_metrics",
    "counts_from_detections",
    "round_counts",
    "search_score_threshold",
    "total_count_metrics",
]

CHECKOUT_KEYS = ("cAcc", "ACD", "mCCD", "mCIoU")


def round_counts(counts: np.ndarray) -> np.ndarray:
    """Round real-valued counts (e.g. density-map integrals) to non-negative integers.

    Halves round up (``floor(x + 0.5)``), negative values become 0.

    Args:
        counts: array of any shape, real counts.

    Returns:
        int64 array of the same shape.
    """
    counts = np.asarray(counts, dtype=np.float64)
    return np.maximum(np.floor(counts + 0.5), 0).astype(np.int64)


def counts_from_detections(
    image_index: np.ndarray,
    category_index: np.ndarray,
    scores: np.ndarray | None,
    num_images: int,
    num_categories: int,
    threshold: float | None = None,
) -> np.ndarray:
    """Count detections per image and category (a dense receipt matrix).

    Args:
        image_index: (D,) int, row of each detection's image in ``[0, num_images)``.
        category_index: (D,) int, each detection's category in ``[0, num_categories)``.
        scores: (D,) float or None; with ``threshold``, only detections with
            ``score >= threshold`` are counted (rpctool's rule).
        num_images: N.
        num_categories: K.
        threshold: score threshold, or None to count every detection.

    Returns:
        (N, K) int64 counts.
    """
    image_index = np.asarray(image_index, dtype=np.int64)
    category_index = np.asarray(category_index, dtype=np.int64)
    if threshold is not None:
        keep = np.asarray(scores, dtype=np.float64) >= threshold
        image_index, category_index = image_index[keep], category_index[keep]
    flat = np.bincount(
        image_index * num_categories + category_index, minlength=num_images * num_categories
    )
    return flat.reshape(num_images, num_categories).astype(np.int64)


def aggregate_counts(counts: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """Sum per-category counts into groups (supercategories, or one total when all groups are 0).

    Args:
        counts: (N, K) counts.
        groups: (K,) int, the group of each category in ``[0, num_groups)``.
        num_groups: G.

    Returns:
        (N, G) counts, same dtype as ``counts``.
    """
    counts = np.asarray(counts)
    out = np.zeros((counts.shape[0], num_groups), dtype=counts.dtype)
    np.add.at(out.T, np.asarray(groups, dtype=np.int64), counts.T)
    return out


def _metrics_from_sums(
    num_exact: int,
    num_images: int,
    abs_diff: np.ndarray,
    gt_sum: np.ndarray,
    min_sum: np.ndarray,
    max_sum: np.ndarray,
) -> dict[str, float]:
    """The four checkout metrics from per-category integer sums (shared by dense and sparse)."""
    has_gt = gt_sum > 0
    has_any = max_sum > 0
    nan = float("nan")
    return {
        "cAcc": num_exact / num_images if num_images else nan,
        "ACD": float(abs_diff.sum()) / num_images if num_images else nan,
        "mCCD": float(np.mean(abs_diff[has_gt] / gt_sum[has_gt])) if has_gt.any() else nan,
        "mCIoU": float(np.mean(min_sum[has_any] / max_sum[has_any])) if has_any.any() else nan,
        "num_images": int(num_images),
    }


def checkout_metrics(pred_counts: np.ndarray, gt_counts: np.ndarray) -> dict[str, float]:
    """cAcc, ACD, mCCD and mCIoU of predicted against true counts (see the module docstring).

    Args:
        pred_counts: (N, K) non-negative integer counts (round real counts first with
            :func:`round_counts`).
        gt_counts: (N, K) true counts.

    Returns:
        dict with ``cAcc``, ``ACD``, ``mCCD``, ``mCIoU`` (fractions; NaN when undefined, e.g.
        N == 0) and ``num_images``.
    """
    pred = np.asarray(pred_counts, dtype=np.int64)
    gt = np.asarray(gt_counts, dtype=np.int64)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred_counts {pred.shape} and gt_counts {gt.shape} must both be (N, K)")
    diff = np.abs(pred - gt)
    return _metrics_from_sums(
        int(np.count_nonzero(~diff.any(axis=1))),
        pred.shape[0],
        diff.sum(axis=0),
        gt.sum(axis=0),
        np.minimum(pred, gt).sum(axis=0),
        np.maximum(pred, gt).sum(axis=0),
    )


def total_count_metrics(pred_total: np.ndarray, gt_total: np.ndarray) -> dict[str, float]:
    """Errors of a predicted total item count per image (e.g. a density map's integral).

    Args:
        pred_total: (N,) real predicted totals.
        gt_total: (N,) true totals.

    Returns:
        ``total_MAE`` and ``total_RMSE`` of the raw prediction, ``total_acc`` (fraction of images
        whose rounded prediction equals the true total), ``num_images``; NaN when N == 0.
    """
    pred = np.asarray(pred_total, dtype=np.float64)
    gt = np.asarray(gt_total, dtype=np.float64)
    if pred.size == 0:
        return {"total_MAE": float("nan"), "total_RMSE": float("nan"), "total_acc": float("nan"),
                "num_images": 0}  # fmt: skip
    err = pred - gt
    return {
        "total_MAE": float(np.mean(np.abs(err))),
        "total_RMSE": float(np.sqrt(np.mean(err**2))),
        "total_acc": float(np.mean(round_counts(pred) == gt)),
        "num_images": int(pred.size),
    }


class CheckoutCounter:
    """Detections and ground truth of one image set, counted sparsely at any score threshold.

    Only (image, category) pairs that occur in the detections or the ground truth are stored, so
    evaluating a threshold costs O(detections + pairs), not O(N * K): this is what makes the
    threshold search fast on RPC's test set (24,000 images x 200 categories).

    Args:
        image_index: (D,) int, detection image rows in ``[0, num_images)``.
        category_index: (D,) int, detection categories in ``[0, num_categories)``.
        scores: (D,) float detection scores.
        gt_image_index: (M,) int, ground-truth box image rows.
        gt_category_index: (M,) int, ground-truth box categories.
        num_images: N (images without any box still count).
        num_categories: K.
    """

    def __init__(
        self,
        image_index: np.ndarray,
        category_index: np.ndarray,
        scores: np.ndarray,
        gt_image_index: np.ndarray,
        gt_category_index: np.ndarray,
        num_images: int,
        num_categories: int,
    ):
        self.num_images = int(num_images)
        self.num_categories = int(num_categories)
        k = np.int64(num_categories)
        det_keys = np.asarray(image_index, dtype=np.int64) * k + np.asarray(
            category_index, np.int64
        )
        gt_keys = np.asarray(gt_image_index, dtype=np.int64) * k + np.asarray(
            gt_category_index, np.int64
        )
        keys, inverse = np.unique(np.concatenate([det_keys, gt_keys]), return_inverse=True)
        self._num_keys = keys.size
        self._key_image = keys // k
        self._key_category = keys % k
        self._det_key = inverse[: det_keys.size]
        self._scores = np.asarray(scores, dtype=np.float64)
        self._gt = np.bincount(inverse[det_keys.size :], minlength=keys.size)

    def pair_counts(self, threshold: float) -> np.ndarray:
        """(pairs,) predicted counts of the stored (image, category) pairs at ``threshold``."""
        return np.bincount(self._det_key[self._scores >= threshold], minlength=self._num_keys)

    def num_exact(self, threshold: float) -> int:
        """How many images are exactly right (every category's count) at ``threshold``."""
        return int(np.count_nonzero(self.exact(threshold)))

    def exact(self, threshold: float) -> np.ndarray:
        """(num_images,) bool: the images whose every category's count is right at ``threshold``."""
        wrong = self.pair_counts(threshold) != self._gt
        return np.bincount(self._key_image[wrong], minlength=self.num_images) == 0

    def metrics(self, threshold: float) -> dict[str, float]:
        """The checkout metrics at ``threshold``; equal to ``checkout_metrics`` on dense counts."""
        pred = self.pair_counts(threshold)
        gt = self._gt
        cat, k = self._key_category, self.num_categories
        wrong = pred != gt
        num_wrong = np.count_nonzero(np.bincount(self._key_image[wrong], minlength=self.num_images))
        return _metrics_from_sums(
            self.num_images - int(num_wrong),
            self.num_images,
            np.bincount(cat, weights=np.abs(pred - gt), minlength=k).astype(np.int64),
            np.bincount(cat, weights=gt, minlength=k).astype(np.int64),
            np.bincount(cat, weights=np.minimum(pred, gt), minlength=k).astype(np.int64),
            np.bincount(cat, weights=np.maximum(pred, gt), minlength=k).astype(np.int64),
        )

    def per_category(self, threshold: float) -> dict[str, np.ndarray]:
        """Per-category error totals at ``threshold``, each (K,) int64.

        Returns:
            ``gt`` (true items), ``pred`` (counted detections), ``over`` (sum of P - G where the
            prediction is too high), ``under`` (sum of G - P where it is too low) and
            ``images_wrong`` (images whose count of that category is wrong).
        """
        pred = self.pair_counts(threshold)
        gt, cat, k = self._gt, self._key_category, self.num_categories

        def per_cat(values):
            return np.bincount(cat, weights=values, minlength=k).astype(np.int64)

        return {
            "gt": per_cat(gt),
            "pred": per_cat(pred),
            "over": per_cat(np.maximum(pred - gt, 0)),
            "under": per_cat(np.maximum(gt - pred, 0)),
            "images_wrong": per_cat(pred != gt),
        }

    def dense_counts(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """((N, K) predicted, (N, K) true) counts; for small sets and tests."""
        shape = (self.num_images, self.num_categories)
        pred, gt = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        pred[self._key_image, self._key_category] = self.pair_counts(threshold)
        gt[self._key_image, self._key_category] = self._gt
        return pred, gt


@dataclass
class ThresholdSearch:
    """Result of :func:`search_score_threshold`.

    Attributes:
        threshold: the chosen score threshold.
        metrics: the checkout metrics at that threshold.
        trace: every (threshold, cAcc) evaluated, in order (rounds x steps entries).
    """

    threshold: float
    metrics: dict[str, float]
    trace: list[tuple[float, float]] = field(default_factory=list)


def search_score_threshold(
    counter: CheckoutCounter,
    *,
    low: float = 0.01,
    high: float = 0.99,
    rounds: int = 4,
    steps: int = 10,
    keep: int = 3,
) -> ThresholdSearch:
    """rpctool's threshold search: the score threshold maximising cAcc on the evaluated set.

    Each round tries ``steps`` evenly spaced thresholds between the bounds, and the next round
    spans the ``keep`` best ones (ties go to the earlier threshold, as pandas' ``nlargest``
    does). The answer is the first best threshold of the last round, as in rpctool; it may be
    beaten by a threshold tried in an earlier round. Optimistic by construction: the threshold is
    tuned on the very images it is scored on.

    Args:
        counter: the detections and ground truth of the evaluated images.
        low, high: first round's bounds.
        rounds, steps, keep: rpctool's 4, 10 and 3.

    Returns:
        ThresholdSearch with the threshold, its metrics, and the trace of tried thresholds.
    """
    bounds = (low, high)
    trace: list[tuple[float, float]] = []
    n = max(counter.num_images, 1)
    for _ in range(rounds):
        thresholds = np.linspace(min(bounds), max(bounds), steps)
        exact = np.array([counter.num_exact(float(t)) for t in thresholds])
        trace.extend((float(t), e / n) for t, e in zip(thresholds, exact))
        best = np.argsort(-exact, kind="stable")[:keep]
        bounds = (thresholds[best].min(), thresholds[best].max())
    threshold = float(thresholds[int(np.argmax(exact))])
    return ThresholdSearch(threshold, counter.metrics(threshold), trace)
