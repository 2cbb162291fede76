"""K x P batch sampling for metric learning: P products, K crops of each, per batch."""

from collections.abc import Iterator, Sequence

import numpy as np


class PKBatchSampler:
    """Yields batches of indices holding exactly ``p`` distinct labels, ``k`` indices each.

    A product with fewer than ``k`` crops is drawn with replacement. One epoch has
    ``max(1, len(labels) // (p * k))`` batches; products are visited in a shuffled cycle so each
    appears about equally often. Products with a single crop cannot form a positive pair on
    their own but still serve as negatives, so they are kept.

    Args:
        labels: (N,) label of each item.
        p: labels per batch (at most the number of distinct labels).
        k: items per label per batch.
        seed: seed of the shuffling; epoch ``e`` uses ``(seed, e)``, so a resumed run draws the
            same batches as an uninterrupted one.
    """

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0):
        labels = np.asarray(labels)
        self.classes, inverse = np.unique(labels, return_inverse=True)
        if len(self.classes) < 2:
            raise ValueError("K x P sampling needs at least 2 distinct labels")
        if p < 2 or k < 1:
            raise ValueError(f"need p >= 2 and k >= 1, got p={p}, k={k}")
        self.p = min(p, len(self.classes))
        self.k = k
        self.seed = seed
        self.epoch = 0
        self.by_class = [np.flatnonzero(inverse == c) for c in range(len(self.classes))]
        self.num_batches = max(1, len(labels) // (self.p * self.k))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order: list[int] = []
        for _ in range(self.num_batches):
            if len(order) < self.p:
                # Top the cycle up with a fresh permutation without repeating a class in a batch.
                fresh = [c for c in rng.permutation(len(self.classes)) if c not in order]
                order.extend(fresh)
            chosen, order = order[: self.p], order[self.p :]
            batch = []
            for c in chosen:
                pool = self.by_class[c]
                batch.extend(rng.choice(pool, self.k, replace=len(pool) < self.k).tolist())
            yield batch
