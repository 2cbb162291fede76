"""Count-guided inference: the counting view settles how many detections an image keeps.

A single global score threshold decides the receipt of every image the same way, while the
counting view predicts, per image, how many objects there are. Count-guided inference uses that
count: within each group of the guiding level (the whole image for "total", one supercategory or
one category otherwise) it keeps the N best-scoring detections, N the group's rounded count,
within bounds set by the score:

* detections scoring at least ``keep_score`` are always kept (the count cannot veto them);
* detections scoring below ``min_score`` are always dropped (the count cannot promote them);
* in between, detections are taken in decreasing score order while the group has fewer than N.

The receipt therefore no longer hinges on one threshold for the uncertain detections only.
"""

import torch
from detectron2.structures import Instances

__all__ = ["count_guided_keep", "select_by_count"]


def count_guided_keep(
    scores: torch.Tensor,
    groups: torch.Tensor,
    counts: torch.Tensor,
    *,
    min_score: float,
    keep_score: float,
) -> torch.Tensor:
    """Which detections count-guided inference keeps.

    Args:
        scores: (N,) detection scores.
        groups: (N,) group index of each detection (0 for "total"; supercategory or class).
        counts: (G,) real-valued predicted counts of the groups.
        min_score: detections below it are dropped.
        keep_score: detections at or above it are kept.

    Returns:
        (N,) bool mask.
    """
    if min_score > keep_score:
        raise ValueError(f"min_score {min_score} is above keep_score {keep_score}")
    n = scores.numel()
    keep = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if n == 0:
        return keep
    wanted = torch.floor(counts.clamp(min=0) + 0.5).long()  # half-up, like the evaluator
    order = torch.argsort(scores, descending=True, stable=True)
    s, g = scores[order], groups[order].long()
    # rank of each detection within its group, in decreasing score order
    same = g[:, None] == g[None, :]
    rank = torch.tril(same.long(), diagonal=-1).sum(dim=1)
    candidate = s >= min_score
    chosen = (s >= keep_score) | (candidate & (rank < wanted[g]))
    keep[order] = chosen & candidate
    return keep


def select_by_count(
    instances: Instances,
    counts: torch.Tensor,
    class_to_group: torch.Tensor,
    *,
    min_score: float,
    keep_score: float,
) -> Instances:
    """Apply :func:`count_guided_keep` to one image's detections.

    Args:
        instances: detections with ``scores`` and ``pred_classes``.
        counts: (G,) counts of the guiding level's groups.
        class_to_group: (K,) group of each class.
        min_score, keep_score: see :func:`count_guided_keep`.

    Returns:
        The kept detections, in their original order.
    """
    groups = class_to_group.to(instances.pred_classes.device)[instances.pred_classes]
    keep = count_guided_keep(
        instances.scores, groups, counts, min_score=min_score, keep_score=keep_score
    )
    return instances[keep]
