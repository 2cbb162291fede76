"""Where items go and how many: the pure, numpy-only part of scene composition.

- ``level_of_index``: the clutter level of scene ``i`` from the level mix alone (an even spread
  over the indices, so any shard of the indices gets its share);
- ``sample_instances``: the category of every instance of a scene, RPC's scheme (a number of
  categories, then a number of instances, each category at least once);
- ``find_position``: a random position for a new box whose IoU with every placed box is at most
  a limit; the limit grows step by step up to 1.0, where any position fits, so the search always
  ends after a bounded number of draws.

Boxes are ``[x0, y0, x1, y1]`` in pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

_GOLDEN = 0.6180339887498949  # 1 / golden ratio: the most even one-dimensional Weyl sequence


def level_of_index(index: int, mix: Sequence[float]) -> int:
    """Level (an index into ``mix``) of scene ``index``.

    The point ``frac(index / golden ratio)`` falls in one of the intervals that split [0, 1) in
    proportion to ``mix``: every run of consecutive indices (and every shard) gets close to its
    share of each level, and no state is carried from one scene to the next.

    Raises:
        ValueError: a negative weight or weights summing to zero.
    """
    w = np.asarray(mix, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"level mix must be non-negative weights with a positive sum, got {mix}")
    u = (index * _GOLDEN) % 1.0
    edges = np.cumsum(w) / w.sum()
    return int(min(np.searchsorted(edges, u, side="right"), w.size - 1 - np.argmax(w[::-1] > 0)))


def sample_instances(
    rng: np.random.Generator,
    category_ids: Sequence[int],
    categories: Sequence[int],
    instances: Sequence[int],
) -> list[int]:
    """Category id of every instance of one scene, in placement order.

    Args:
        rng: the scene's generator.
        category_ids: categories that have at least one usable item.
        categories: ``[min, max]`` number of distinct categories (clipped to what exists).
        instances: ``[min, max]`` number of instances; never fewer than the categories drawn.

    Returns:
        list[int]: each drawn category once, the remaining instances drawn uniformly among them,
        shuffled.
    """
    if not len(category_ids):
        raise ValueError("no category has a usable item")
    n_avail = len(category_ids)
    c0, c1 = (min(int(v), n_avail) for v in categories)
    n_cat = int(rng.integers(c0, c1 + 1))
    n0, n1 = int(instances[0]), int(instances[1])
    n_inst = int(rng.integers(max(n0, n_cat), max(n1, n_cat) + 1))
    cats = rng.choice(np.asarray(category_ids), size=n_cat, replace=False)
    extra = rng.choice(cats, size=n_inst - n_cat, replace=True)
    return [int(c) for c in rng.permutation(np.concatenate([cats, extra]))]


def max_iou(candidates: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Largest IoU of each candidate box with any of ``boxes``.

    Args:
        candidates: (N, 4) boxes.
        boxes: (M, 4) boxes; M may be 0.

    Returns:
        (N,) float64; zeros when there are no boxes.
    """
    c = np.asarray(candidates, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(b):
        return np.zeros(len(c))
    ix = np.minimum(c[:, None, 2], b[None, :, 2]) - np.maximum(c[:, None, 0], b[None, :, 0])
    iy = np.minimum(c[:, None, 3], b[None, :, 3]) - np.maximum(c[:, None, 1], b[None, :, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    area_c = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_c[:, None] + area_b[None, :] - inter
    return (inter / np.maximum(union, 1e-12)).max(axis=1)


def iou_limits(max_iou_limit: float, relax_step: float) -> list[float]:
    """The IoU limits tried in turn: ``max_iou_limit``, + step, ..., ending with 1.0."""
    if relax_step <= 0:
        raise ValueError(f"the IoU relax step must be positive, got {relax_step}")
    limits, v = [], float(max_iou_limit)
    while v < 1.0 - 1e-9:
        limits.append(v)
        v += relax_step
    return [*limits, 1.0]


@dataclass(frozen=True)
class Placement:
    """Where ``find_position`` put a box: top-left corner and the IoU limit it met."""

    x: int
    y: int
    iou_limit: float
    iou: float


def find_position(
    width: int,
    height: int,
    bounds: tuple[int, int, int, int],
    boxes: np.ndarray,
    rng: np.random.Generator,
    *,
    max_iou_limit: float = 0.5,
    relax_step: float = 0.1,
    attempts: int = 30,
    accept: Callable[[int, int], bool] | None = None,
) -> Placement:
    """A random top-left corner for a ``width`` x ``height`` box inside ``bounds``.

    At each limit of ``iou_limits(max_iou_limit, relax_step)``, ``attempts`` corners are drawn
    at once; the first whose box has IoU <= the limit with every placed box (and that
    ``accept`` approves, if given) wins. At the last limit (1.0) every corner qualifies and
    ``accept`` is no longer asked, so the search ends after at most
    ``attempts * len(iou_limits(...))`` draws.

    Args:
        width, height: the new box's size (must fit inside ``bounds``).
        bounds: ``(x0, y0, x1, y1)`` area the whole box must stay in.
        boxes: (M, 4) boxes already placed.
        rng: the scene's generator.
        max_iou_limit, relax_step, attempts: the search schedule (see above).
        accept: extra test of a corner ``(x, y)``, e.g. that no earlier item gets hidden too
            much.

    Returns:
        Placement with the corner, the limit it met and its actual largest IoU.
    """
    bx0, by0, bx1, by1 = bounds
    if width > bx1 - bx0 or height > by1 - by0:
        raise ValueError(f"a {width}x{height} box does not fit in {bounds}")
    attempts = max(1, int(attempts))
    for limit in iou_limits(max_iou_limit, relax_step):
        xs = rng.integers(bx0, bx1 - width + 1, size=attempts)
        ys = rng.integers(by0, by1 - height + 1, size=attempts)
        cand = np.stack([xs, ys, xs + width, ys + height], axis=1)
        ious = max_iou(cand, boxes)
        for j in np.flatnonzero(ious <= limit + 1e-9):
            if limit >= 1.0 or accept is None or accept(int(xs[j]), int(ys[j])):
                return Placement(int(xs[j]), int(ys[j]), limit, float(ious[j]))
    raise AssertionError("unreachable: the last IoU limit (1.0) accepts every position")
