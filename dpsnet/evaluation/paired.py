"""Two models on the same images: how far apart their cAcc is, beyond the images drawn.

cAcc on a split of a few hundred images moves by several points with the images alone (150
images: one image is 0.67 points, and a binomial standard error near 50 % is 4 points). Two
models evaluated on the *same* images are compared image by image: the difference of their cAcc
is the mean of per-image differences (+1 an image only the first gets exactly right, -1 one only
the second does), and a paired bootstrap over the images (``scipy.stats.bootstrap``) gives its
interval. ``paired_cacc_difference`` works on the ``per_image`` exactness that
``dpsnet.evaluation.rpc_report.evaluate_rpc`` reports and ``write_report`` writes
(``rpc_per_image.json``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["paired_cacc_difference"]


def paired_cacc_difference(
    first: dict,
    second: dict,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict | None:
    """cAcc(first) - cAcc(second) on the images both were evaluated on, with its interval.

    Args:
        first, second: per-image exactness, ``{"image_ids": [...], "exact": [bool, ...]}``.
        confidence: the interval's confidence level.
        n_resamples: bootstrap resamples of the images.
        seed: the bootstrap's seed (the same seed gives the same interval).

    Returns:
        None when they share no image; else {"difference", "low", "high" (cAcc points),
        "confidence", "images" (shared), "first_only" / "second_only" (images exactly right for
        one model alone), "method"}.

    Raises:
        ValueError: ``image_ids`` and ``exact`` of different lengths.
    """
    from scipy import stats

    a, b = _exact_by_id(first, "first"), _exact_by_id(second, "second")
    ids = sorted(a.keys() & b.keys())
    if not ids:
        return None
    x = np.array([a[i] for i in ids], dtype=bool)
    y = np.array([b[i] for i in ids], dtype=bool)
    diff = x.astype(np.float64) - y
    mean = float(diff.mean()) * 100
    if np.all(diff == diff[0]):  # no spread to resample (e.g. identical models)
        low = high = mean
    else:
        res = stats.bootstrap(
            (diff,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_resamples,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        low = float(res.confidence_interval.low) * 100
        high = float(res.confidence_interval.high) * 100
    return {
        "difference": mean,
        "low": low,
        "high": high,
        "confidence": confidence,
        "images": len(ids),
        "first_only": int(np.count_nonzero(x & ~y)),
        "second_only": int(np.count_nonzero(~x & y)),
        "method": f"paired bootstrap over images (percentile, {n_resamples} resamples, "
        f"seed {seed})",
    }


def _exact_by_id(per_image: dict, what: str) -> dict:
    ids, exact = per_image.get("image_ids", []), per_image.get("exact", [])
    if len(ids) != len(exact):
        raise ValueError(
            f"{what}: {len(ids)} image ids but {len(exact)} exactness flags in per-image results"
        )
    return dict(zip(ids, (bool(e) for e in exact), strict=True))
