"""The pure metric functions: definitions on hand-made counts, sparse == dense, the search."""

import numpy as np
import pytest

from dpsnet.evaluation import (
    CheckoutCounter,
    aggregate_counts,
    checkout_metrics,
    counts_from_detections,
    round_counts,
    search_score_threshold,
    total_count_metrics,
)


def test_checkout_metrics_by_hand():
    # 3 images, 3 categories; image 0 exact, image 1 one item short, image 2 one extra + swap.
    gt = np.array([[1, 0, 2], [0, 3, 0], [1, 1, 0]])
    pred = np.array([[1, 0, 2], [0, 2, 0], [0, 2, 1]])
    m = checkout_metrics(pred, gt)
    assert m["cAcc"] == pytest.approx(1 / 3)
    assert m["ACD"] == pytest.approx((0 + 1 + 3) / 3)
    # per category |P-G| / G: c0 1/2, c1 2/4, c2 1/2
    assert m["mCCD"] == pytest.approx(0.5)
    # per category sum min / sum max: c0 1/2, c1 3/5, c2 2/3
    assert m["mCIoU"] == pytest.approx((1 / 2 + 3 / 5 + 2 / 3) / 3)
    assert m["num_images"] == 3


def test_checkout_metrics_undefined_terms_are_skipped():
    gt = np.array([[1, 0, 0], [1, 0, 0]])
    pred = np.array([[1, 0, 1], [1, 0, 0]])  # c1 never seen: skipped; c2 only predicted
    m = checkout_metrics(pred, gt)
    assert m["mCCD"] == pytest.approx(0.0)  # only c0 has true items
    assert m["mCIoU"] == pytest.approx((1.0 + 0.0) / 2)  # c0 and c2
    empty = checkout_metrics(np.zeros((0, 3), int), np.zeros((0, 3), int))
    assert empty["num_images"] == 0 and np.isnan(empty["cAcc"])
    with pytest.raises(ValueError, match="must both be"):
        checkout_metrics(np.zeros((2, 3)), np.zeros((3, 2)))


def _random_problem(seed, n=40, k=7, d=300, m=200):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, n, d), rng.integers(0, k, d), rng.random(d).round(2),
        rng.integers(0, n, m), rng.integers(0, k, m), n, k,
    )  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_counter_equals_dense(seed):
    di, dc, ds, gi, gc, n, k = _random_problem(seed)
    counter = CheckoutCounter(di, dc, ds, gi, gc, n, k)
    gt = counts_from_detections(gi, gc, None, n, k)
    for t in (0.0, 0.3, 0.5, 0.77, 1.01):
        pred = counts_from_detections(di, dc, ds, n, k, threshold=t)
        assert counter.metrics(t) == checkout_metrics(pred, gt)
        p2, g2 = counter.dense_counts(t)
        np.testing.assert_array_equal(p2, pred)
        np.testing.assert_array_equal(g2, gt)
        per = counter.per_category(t)
        np.testing.assert_array_equal(per["over"], np.maximum(pred - gt, 0).sum(0))
        np.testing.assert_array_equal(per["under"], np.maximum(gt - pred, 0).sum(0))
        np.testing.assert_array_equal(per["images_wrong"], (pred != gt).sum(0))
        np.testing.assert_array_equal(counter.exact(t), (pred == gt).all(1))
        assert counter.num_exact(t) == (pred == gt).all(1).sum()


def test_threshold_is_inclusive():
    counter = CheckoutCounter([0], [0], [0.5], [0], [0], 1, 1)
    assert counter.num_exact(0.5) == 1 and counter.num_exact(0.5000001) == 0


def test_search_follows_rpctool_rounds():
    di, dc, ds, gi, gc, n, k = _random_problem(2)
    counter = CheckoutCounter(di, dc, ds, gi, gc, n, k)
    found = search_score_threshold(counter)
    assert len(found.trace) == 40
    first = [t for t, _ in found.trace[:10]]
    np.testing.assert_allclose(first, np.linspace(0.01, 0.99, 10))
    # Each round spans the 3 best thresholds of the previous one.
    for r in range(3):
        ts = np.array([t for t, _ in found.trace[10 * r : 10 * r + 10]])
        cs = np.array([c for _, c in found.trace[10 * r : 10 * r + 10]])
        best = ts[np.argsort(-cs, kind="stable")[:3]]
        nxt = [t for t, _ in found.trace[10 * (r + 1) : 10 * (r + 2)]]
        assert nxt[0] == best.min() and nxt[-1] == best.max()
    last = found.trace[30:]
    assert found.threshold == last[int(np.argmax([c for _, c in last]))][0]
    assert found.metrics == counter.metrics(found.threshold)
    assert found.metrics["cAcc"] == max(c for _, c in last)


def test_round_aggregate_total():
    np.testing.assert_array_equal(round_counts([0.49, 0.5, 1.5, 2.51, -0.7]), [0, 1, 2, 3, 0])
    counts = np.array([[1, 2, 3], [0, 1, 0]])
    np.testing.assert_array_equal(
        aggregate_counts(counts, np.array([0, 1, 0]), 2), [[4, 2], [0, 1]]
    )
    np.testing.assert_array_equal(aggregate_counts(counts, np.zeros(3, int), 1), [[6], [1]])
    m = total_count_metrics(np.array([2.4, 3.6, 5.0]), np.array([2, 3, 7]))
    assert m["total_MAE"] == pytest.approx((0.4 + 0.6 + 2.0) / 3)
    assert m["total_RMSE"] == pytest.approx(np.sqrt((0.16 + 0.36 + 4.0) / 3))
    assert m["total_acc"] == pytest.approx(1 / 3)
