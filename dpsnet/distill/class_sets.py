"""Set-valued pseudo-labels for ``DISTILL.CLASS_SET_RATIO``: "one of these products".

A teacher trained on synthesized scenes finds the checkout photos' products well (boxes) but,
within a look-alike pair, often names the wrong twin with confidence; a hard pseudo-label teaches
that guess back, round after round. With a class set, a kept pseudo box names every product
whose probability is at least ``ratio`` times that of the product the teacher chose, and the
student's box classifier is trained on the set (the partial-label loss
``-log sum_{c in set} p(c)``): the box is still foreground, still this kind of product, but the
choice between the plausible twins is left to what the synthesized scenes (exact labels) teach.
A box whose set is one product gets the ordinary cross-entropy.

* ``attach_class_probabilities(model)``: the teacher's detections carry ``pred_probs`` ((N, K)
  foreground class probabilities of the proposal each detection came from);
* ``class_set`` (pure): the set of one detection;
* ``confusion_counts``, ``confusable_pairs`` (pure, ``DISTILL.CLASS_SET_PAIR_SHARE``): products
  the teacher hesitates between often enough on this pool (look-alikes, found without labels)
  are confusable, and every box named one of them carries the other in its set too: a twin named
  wrongly with confidence is then still covered;
* ``add_class_sets(mapper)``: a training mapper's instances carry ``gt_class_sets`` ((N, K) bool)
  from the annotations' ``category_set`` (contiguous ids, see ``load_checkout_json``);
* ``enable_class_sets(model)``: the box predictor's classification loss honours them.
"""

import logging

import numpy as np
import torch
from detectron2.layers import cat
from detectron2.utils import comm

__all__ = [
    "add_class_sets",
    "attach_class_probabilities",
    "class_set",
    "confusable_pairs",
    "confusion_counts",
    "enable_class_sets",
    "pool_confusable_pairs",
    "set_valued_cross_entropy",
]

logger = logging.getLogger(__name__)


def class_set(
    probs: np.ndarray, cls: int, ratio: float, pairs: np.ndarray | None = None
) -> np.ndarray:
    """Sorted classes with ``probs[c] >= ratio * probs[cls]``, always including ``cls``.

    Args:
        probs: (K,) foreground class probabilities of one detection.
        cls: the class the detection names.
        ratio: in (0, 1]; 0 or less: ``[cls]`` alone (hard labels).
        pairs: optional (K, K) bool, the pool's confusable products (``confusable_pairs``):
            every product confusable with ``cls`` joins the set too.
    """
    if ratio <= 0:
        return np.array([int(cls)])
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    members = np.flatnonzero(probs >= ratio * probs[int(cls)])
    if pairs is not None:
        members = np.union1d(members, np.flatnonzero(pairs[int(cls)]))
    return np.union1d(members, [int(cls)]).astype(int)


def confusion_counts(
    detections, num_classes: int, ratio: float, min_score: float
) -> tuple[np.ndarray, np.ndarray]:
    """How often the teacher's confident boxes leave room for another product.

    Args:
        detections: iterable of (probs (N, K), classes (N,), scores (N,)) per image.
        num_classes: K.
        ratio: see ``class_set``.
        min_score: only boxes scoring at least this count (those that may become labels).

    Returns:
        counts (K, K): boxes named c whose product d has ``p(d) >= ratio * p(c)``; totals (K,):
        boxes named c (the diagonal of counts equals totals).
    """
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    totals = np.zeros(num_classes, dtype=np.int64)
    for probs, classes, scores in detections:
        keep = np.asarray(scores) >= min_score
        probs = np.asarray(probs, dtype=np.float64)[keep]
        classes = np.asarray(classes, dtype=np.int64)[keep]
        if not len(classes):
            continue
        chosen = probs[np.arange(len(classes)), classes][:, None]
        np.add.at(counts, classes, (probs >= ratio * chosen).astype(np.int64))
        np.add.at(totals, classes, 1)
    return counts, totals


def confusable_pairs(counts: np.ndarray, totals: np.ndarray, share: float) -> np.ndarray:
    """(K, K) symmetric bool: products c, d with ``counts[c, d] >= share * totals[c]`` (either
    way round), the diagonal False. ``share`` <= 0: no pairs."""
    k = len(totals)
    if share <= 0:
        return np.zeros((k, k), dtype=bool)
    frac = counts / np.maximum(totals, 1)[:, None]
    pairs = (frac >= share) & (totals[:, None] > 0)
    pairs = pairs | pairs.T
    np.fill_diagonal(pairs, False)
    return pairs


def pool_confusable_pairs(
    instances, ratio: float, share: float, min_score: float
) -> np.ndarray | None:
    """The confusable products of a whole pool (summed over all ranks' detections).

    Args:
        instances: this rank's teacher detections (detectron2 ``Instances`` on the CPU), those
            with ``pred_probs`` counted.
        ratio, share, min_score: see ``class_set``, ``confusable_pairs``, ``confusion_counts``.

    Returns:
        (K, K) bool, or None when ``ratio`` or ``share`` is off or no detection has
        probabilities. Every rank must call it (it gathers).
    """
    if ratio <= 0 or share <= 0:
        return None
    with_probs = [i for i in instances if i.has("pred_probs")]
    num_classes = max((int(i.pred_probs.shape[1]) for i in with_probs), default=0)
    num_classes = max(comm.all_gather(num_classes))
    if num_classes == 0:
        return None
    detections = (
        (i.pred_probs.float().numpy(), i.pred_classes.numpy(), i.scores.float().numpy())
        for i in with_probs
    )
    counts, totals = confusion_counts(detections, num_classes, ratio, min_score)
    parts = comm.all_gather((counts, totals))
    return confusable_pairs(sum(c for c, _ in parts), sum(t for _, t in parts), share)


def attach_class_probabilities(model):
    """Make a detector's detections carry ``pred_probs`` ((N, K), the softmax of their proposal).

    Wraps ``model.roi_heads.box_predictor.inference`` (detectron2's ``FastRCNNOutputLayers``,
    which returns the kept proposal of each detection). Returns the model; one without that
    box predictor is returned as it is (its detections then get hard labels, with a warning).
    """
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    if predictor is None or not hasattr(predictor, "predict_probs"):
        logger.warning(
            "DISTILL.CLASS_SET_RATIO: %s has no detectron2 box predictor; its detections carry "
            "no class probabilities unless it adds them itself (pred_probs)",
            type(model).__name__,
        )
        return model
    inference = predictor.inference

    def _inference(predictions, proposals):
        results, kept = inference(predictions, proposals)
        probs = predictor.predict_probs(predictions, proposals)
        for res, idx, p in zip(results, kept, probs, strict=True):
            # detectron2 drops non-finite proposals before it indexes: then the indices shift
            if len(p) and torch.isfinite(p).all():
                res.pred_probs = p[idx, :-1]
        return results, kept

    predictor.inference = _inference
    return model


def add_class_sets(mapper):
    """Make a training ``mapper`` attach ``gt_class_sets`` to instances with ``category_set``.

    Returns the same mapper object (its ``_transform_annotations`` wrapped). An image none of
    whose annotations has a set gets no field (its boxes are trained as hard labels).
    """
    transform_annotations = mapper._transform_annotations

    def _transform(dataset_dict, transforms, image_shape):
        sets = [
            a.get("category_set")
            for a in dataset_dict.get("annotations", [])
            if not a.get("iscrowd", 0)
        ]
        transform_annotations(dataset_dict, transforms, image_shape)
        instances = dataset_dict.get("instances")
        if instances is None or not any(sets):
            return
        if len(instances) != len(sets):  # detectron2 dropped a box left empty by the transforms
            logger.warning(
                "%s: a box became empty after augmentation; its class sets are not used",
                dataset_dict.get("file_name"),
            )
            return
        classes = instances.gt_classes.tolist()
        width = max(max(s or [0]) for s in sets) + 1
        mask = torch.zeros((len(sets), max(width, max(classes) + 1)), dtype=torch.bool)
        for i, (s, c) in enumerate(zip(sets, classes, strict=True)):
            mask[i, [c, *(s or [])]] = True
        instances.gt_class_sets = mask

    mapper._transform_annotations = _transform
    return mapper


def set_valued_cross_entropy(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-log sum_{c allowed} softmax(scores)_c``.

    Args:
        scores: (R, K + 1) logits.
        allowed: (R, K + 1) bool, at least one True per row; one True per row gives exactly
            the cross-entropy of that class.
    """
    if scores.numel() == 0:
        return scores.sum() * 0.0
    masked = scores.float().masked_fill(~allowed, float("-inf"))
    return (torch.logsumexp(scores.float(), dim=1) - torch.logsumexp(masked, dim=1)).mean()


def enable_class_sets(model):
    """Train the box classifier of ``model`` on the proposals' ``gt_class_sets`` where present.

    A foreground proposal matched to a box with a class set may be any class of the set; every
    other proposal keeps its one class (the loss then equals detectron2's cross-entropy). Box
    regression is unchanged (it uses the named class). Returns the model.
    """
    predictor = model.roi_heads.box_predictor
    if getattr(predictor, "use_sigmoid_ce", False) or getattr(predictor, "use_fed_loss", False):
        raise ValueError(
            "DISTILL.CLASS_SET_RATIO needs the softmax box classifier (no sigmoid or federated "
            "loss in MODEL.ROI_BOX_HEAD)"
        )
    losses = predictor.losses

    def _losses(predictions, proposals):
        out = losses(predictions, proposals)
        if not any(p.has("gt_class_sets") for p in proposals):
            return out
        scores = predictions[0]
        k1 = scores.shape[1]
        allowed = []
        for p in proposals:
            gt = p.gt_classes
            a = torch.nn.functional.one_hot(gt, k1).bool()
            if p.has("gt_class_sets") and len(p):
                sets = p.gt_class_sets
                fg = gt < k1 - 1
                a[fg, : sets.shape[1]] |= sets[fg].to(a.device)
            allowed.append(a)
        loss = set_valued_cross_entropy(scores, cat(allowed, dim=0))
        out["loss_cls"] = loss * predictor.loss_weight.get("loss_cls", 1.0)
        return out

    predictor.losses = _losses
    return model
