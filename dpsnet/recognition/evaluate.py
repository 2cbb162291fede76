"""The recogniser's validation: top-1 and macro-F1 of known products and of products added
through the gallery alone, the calibrated unknown distance, and the files a run writes."""

import json
import logging
import os

import numpy as np
import torch

from dpsnet.recognition.embedder import ProductEmbedder
from dpsnet.recognition.gallery import UNKNOWN, Gallery
from dpsnet.recognition.products import load_crops
from dpsnet.recognition.views import build_gallery, embed_views
from dpsnet.utils.io import atomic_write_json

__all__ = [
    "calibrate_unknown_distance",
    "classification_metrics",
    "evaluate_holdout",
    "evaluate_recognizer",
    "final_evaluation",
]

logger = logging.getLogger(__name__)


def classification_metrics(true: np.ndarray, pred: np.ndarray) -> dict:
    """Top-1 accuracy and macro-F1 over the true classes (an ``UNKNOWN`` answer is wrong)."""
    true, pred = np.asarray(true), np.asarray(pred)
    if len(true) == 0:
        return {"top1": float("nan"), "macro_f1": float("nan"), "n": 0}
    f1s = []
    for c in np.unique(true):
        tp = np.sum((pred == c) & (true == c))
        fp = np.sum((pred == c) & (true != c))
        fn = np.sum((pred != c) & (true == c))
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
    return {
        "top1": float(np.mean(true == pred)),
        "macro_f1": float(np.mean(f1s)),
        "unknown_rate": float(np.mean(pred == UNKNOWN)),
        "n": int(len(true)),
    }


def calibrate_unknown_distance(
    known_dist: np.ndarray, known_correct: np.ndarray, quantile: float = 0.98
) -> float:
    """The distance below which ``quantile`` of the correctly named known crops fall."""
    d = known_dist[known_correct]
    return float(np.quantile(d, quantile)) if len(d) else float("inf")


def evaluate_holdout(
    model: ProductEmbedder,
    gallery_crops: torch.Tensor,
    gallery_ids: np.ndarray,
    names: dict[int, str],
    val_crops: torch.Tensor,
    val_ids: np.ndarray,
    held_out: list[int],
    meta: dict | None = None,
    views: dict | None = None,
) -> tuple[dict, Gallery]:
    """The recogniser's validation figures, with held-out products added through the gallery.

    The gallery first holds the known products' exemplars; the held-out products are then added
    one by one with :meth:`Gallery.add_product` (as ``tools/add_product.py`` does). Before
    adding them, their crops measure the open-set behaviour (how often they are called
    "unknown" at the calibrated threshold).

    Returns:
        metrics (overall / known / added top-1 and macro-F1, unknown distance, open-set rates)
        and the final gallery, whose unknown distance is the calibrated one.
    """
    held = set(held_out)
    is_held_g = np.isin(gallery_ids, list(held))
    gallery = build_gallery(
        model, gallery_crops[~is_held_g], gallery_ids[~is_held_g], names, meta, views=views
    )
    val_emb = model.embed(val_crops).numpy()
    is_held_v = np.isin(val_ids, list(held))
    metrics: dict = {"products_known": len(gallery.products), "products_added": len(held)}
    pred_before, dist_before = gallery.classify(val_emb, float("inf"))
    threshold = calibrate_unknown_distance(
        dist_before[~is_held_v], pred_before[~is_held_v] == val_ids[~is_held_v]
    )
    if held:
        open_pred, _ = gallery.classify(val_emb[is_held_v], threshold)
        metrics["held_out_called_unknown_before_adding"] = float(np.mean(open_pred == UNKNOWN))
        known_pred, _ = gallery.classify(val_emb[~is_held_v], threshold)
        metrics["known_called_unknown_at_threshold"] = float(np.mean(known_pred == UNKNOWN))
        for pid in sorted(held):
            rows = gallery_ids == pid
            if rows.any():
                emb = embed_views(model, gallery_crops[rows], views, seed=pid)
                gallery.add_product(pid, names.get(pid, str(pid)), emb)
    gallery.unknown_distance = threshold
    pred, _ = gallery.classify(val_emb, float("inf"))
    metrics["all"] = classification_metrics(val_ids, pred)
    metrics["known"] = classification_metrics(val_ids[~is_held_v], pred[~is_held_v])
    metrics["added"] = classification_metrics(val_ids[is_held_v], pred[is_held_v])
    metrics["unknown_distance"] = threshold
    pred_t, _ = gallery.classify(val_emb)
    metrics["all_with_threshold"] = classification_metrics(val_ids, pred_t)
    return metrics, gallery


def evaluate_recognizer(cfg, output_dir: str) -> dict:
    """Evaluate a trained recogniser again (``tools/train_recognizer.py --eval-only``): read
    ``model_final.pth`` from ``output_dir``, build the gallery as ``cfg`` says now (e.g. other
    RECOGNITION.GALLERY views) with the checkpoint's held-out products added through it, and
    rewrite ``gallery.npz`` and ``metrics.json`` (the training history is kept).

    Returns:
        The metrics written to ``metrics.json``.
    """
    from dpsnet.recognition.embedder import load_embedder

    t = cfg.RECOGNITION.TRAIN
    model, extra = load_embedder(os.path.join(output_dir, "model_final.pth"))
    size, padding = extra["crop_size"], extra["padding"]
    gallery_sets = list(t.GALLERY_DATASETS or t.DATASETS)
    gallery_crops, gallery_ids, names = load_crops(gallery_sets, size, padding)
    val_crops, val_ids, val_names = load_crops(t.VAL_DATASETS, size, padding)
    names.update(val_names)
    previous = {}
    if os.path.isfile(os.path.join(output_dir, "metrics.json")):
        with open(os.path.join(output_dir, "metrics.json")) as f:
            previous = {k: v for k, v in json.load(f).items() if k == "history"}
    return final_evaluation(
        cfg, output_dir, model, (gallery_crops, gallery_ids), (val_crops, val_ids), names,
        extra["held_out_products"], previous, crop_meta={"crop_size": size, "padding": padding},
    )  # fmt: skip


def final_evaluation(
    cfg, output_dir, model, gallery_set, val_set, names, held_out, extra, crop_meta=None
) -> dict:
    """Validation figures with the held-out products added through the gallery; writes
    ``gallery.npz`` and ``metrics.json``."""
    r, t = cfg.RECOGNITION, cfg.RECOGNITION.TRAIN
    crop_meta = crop_meta or {"crop_size": r.CROP.SIZE, "padding": r.CROP.PADDING}
    views = {"rotations": r.GALLERY.ROTATIONS, "jitter_views": r.GALLERY.JITTER_VIEWS}
    metrics, gallery = evaluate_holdout(
        model, *gallery_set, names, *val_set, held_out, crop_meta, views
    )
    metrics.update(
        {
            "train_datasets": list(t.DATASETS),
            "gallery_datasets": list(t.GALLERY_DATASETS or t.DATASETS),
            "gallery_views": views,
            "val_datasets": list(t.VAL_DATASETS),
            "held_out_products": list(held_out),
            **extra,
        }
    )
    gallery.save(os.path.join(output_dir, "gallery.npz"))
    atomic_write_json(os.path.join(output_dir, "metrics.json"), metrics, indent=2)
    logger.info(
        "Recogniser validation: %s", json.dumps({k: metrics[k] for k in ("known", "added")})
    )
    return metrics
