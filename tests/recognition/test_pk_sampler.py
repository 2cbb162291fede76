"""PKBatchSampler: every batch holds P distinct products with K crops each."""

from collections import Counter

import numpy as np
import pytest

from dpsnet.recognition import PKBatchSampler


def _labels():
    # Uneven classes: 7 has a single crop, 3 has two (fewer than K), the others many.
    return np.array([0] * 9 + [1] * 6 + [2] * 5 + [3] * 2 + [5] * 8 + [7] * 1 + [9] * 7)


@pytest.mark.parametrize("p,k", [(4, 3), (2, 4), (7, 2)])
def test_batches_are_k_times_p(p, k):
    labels = _labels()
    sampler = PKBatchSampler(labels, p=p, k=k, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == max(1, len(labels) // (p * k))
    for batch in batches:
        assert len(batch) == p * k
        counts = Counter(labels[batch].tolist())
        assert len(counts) == p, f"batch {batch} has products {counts}"
        assert set(counts.values()) == {k}


def test_small_classes_are_drawn_with_replacement_and_all_classes_visited():
    labels = _labels()
    sampler = PKBatchSampler(labels, p=4, k=4, seed=0)
    seen = Counter()
    for epoch in range(10):
        sampler.set_epoch(epoch)
        for batch in sampler:
            seen.update(labels[batch].tolist())
            # The single crop of product 7 fills its K slots alone.
            rows = [i for i in batch if labels[i] == 7]
            assert len(set(rows)) <= 1
    assert set(seen) == set(np.unique(labels).tolist())


def test_epochs_are_reproducible_and_differ():
    labels = _labels()
    a, b = PKBatchSampler(labels, 3, 2, seed=5), PKBatchSampler(labels, 3, 2, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)


def test_p_is_capped_by_the_number_of_products():
    sampler = PKBatchSampler([0, 0, 1, 1, 1], p=8, k=2)
    batch = next(iter(sampler))
    assert len(batch) == 4


@pytest.mark.parametrize(
    "labels,p,k", [([1, 1, 1], 2, 2), ([0, 1], 1, 2), ([0, 1], 2, 0)], ids=["one", "p1", "k0"]
)
def test_bad_arguments(labels, p, k):
    with pytest.raises(ValueError):
        PKBatchSampler(labels, p, k)
