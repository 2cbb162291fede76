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

Cross-class merging (``merge_across_classes``): Faster R-CNN suppresses duplicates per class, so
one object the classifier hesitates on keeps a box for each product it hesitates between (a
look-alike pair: 0.5 and 0.4), and the object's probability is split between them. A global
score threshold then either counts the object twice (low threshold) or not at all (high). Merged,
the object is one detection named by its best product, scored by the sum of its detections'
scores (capped at 1): how sure the model is that an object is there, not which product it is.
"""

import torch
from detectron2.layers import nms
from detectron2.structures import Instances, pairwise_iou

__all__ = ["count_guided_keep", "merge_across_classes", "select_by_count"]


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


def merge_across_classes(instances: Instances, iou: float) -> Instances:
    """One detection per object, whatever product each of its detections names.

    Greedy non-maximum suppression across classes (detectron2's ``nms``, IoU above ``iou``
    suppresses): each kept detection keeps its box, product and every other field, and its score
    becomes the sum of its own and of the scores of the detections it suppressed, capped at 1.

    Args:
        instances: one image's detections with ``pred_boxes``, ``scores`` and ``pred_classes``.
        iou: overlap above which two detections are one object.

    Returns:
        The merged detections, by decreasing score.
    """
    if len(instances) < 2:
        return instances
    boxes = instances.pred_boxes
    scores = instances.scores.float()
    keep = nms(boxes.tensor.float(), scores, iou)  # by decreasing score
    # a suppressed detection belongs to the first (best) kept one that overlaps it: that is the
    # one that suppressed it
    owner = (pairwise_iou(boxes[keep], boxes) > iou).float().argmax(dim=0)
    owner[keep] = torch.arange(len(keep), device=owner.device)
    summed = torch.zeros(len(keep), device=scores.device).index_add_(0, owner, scores)
    merged = instances[keep]
    merged.scores = summed.clamp(max=1.0).to(instances.scores.dtype)
    return merged[torch.argsort(merged.scores, descending=True, stable=True)]
