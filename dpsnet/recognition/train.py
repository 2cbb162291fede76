"""Training and evaluation of the recogniser, and gallery building from registered datasets.

Product ids everywhere are the dataset's own category ids (RPC: 1..200), recovered from the
metadata's ``thing_dataset_id_to_contiguous_id``; names come from ``thing_classes``.
"""

import json
import logging
import os
import time

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from tqdm import tqdm

from dpsnet.recognition.crops import (
    STORE_FACTOR,
    augment_crops,
    extract_crops,
    paste_clutter,
    photometric_jitter,
    random_erase,
)
from dpsnet.recognition.embedder import ProductEmbedder, fingerprint, save_embedder
from dpsnet.recognition.gallery import UNKNOWN, Gallery
from dpsnet.recognition.losses import (
    BNNeckClassifier,
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
)
from dpsnet.recognition.sampler import PKBatchSampler
from dpsnet.utils.io import atomic_path, atomic_write_json
from dpsnet.utils.weights import load_weights_file

logger = logging.getLogger(__name__)


def product_catalog(dataset_name: str) -> tuple[dict[int, int], dict[int, str]]:
    """Contiguous class id -> product id, and product id -> name, from a dataset's metadata."""
    meta = MetadataCatalog.get(dataset_name)
    classes = list(meta.get("thing_classes", []))
    mapping = meta.get("thing_dataset_id_to_contiguous_id", None)
    if mapping:
        to_product = {int(c): int(d) for d, c in mapping.items()}
    else:
        to_product = {i: i for i in range(len(classes))}
    names = {to_product[i]: name for i, name in enumerate(classes) if i in to_product}
    return to_product, names


def load_crops(
    dataset_names, size: int, padding: float, factor: float = 1.0, products=None
) -> tuple[torch.Tensor, np.ndarray, dict[int, str]]:
    """Crops of every box of the named datasets, labelled with product ids.

    Args:
        products: keep only these product ids (None: all).

    Returns:
        crops (N, 3, S, S) uint8 RGB, product ids (N,), and product id -> name.
    """
    all_crops, all_ids, all_names = [], [], {}
    for name in dataset_names:
        to_product, names = product_catalog(name)
        all_names.update(names)
        wanted = None
        if products is not None:
            wanted = {c for c, p in to_product.items() if p in set(products)}
        crops, labels, _ = extract_crops(
            DatasetCatalog.get(name), size, padding, factor, wanted, desc=name
        )
        all_crops.append(crops)
        all_ids.append(np.asarray([to_product.get(int(c), int(c)) for c in labels], np.int64))
    return torch.cat(all_crops), np.concatenate(all_ids), all_names


def split_products(products, holdout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split product ids into (known, held out); the held-out share is rounded, seeded."""
    products = sorted(int(p) for p in products)
    n_out = int(round(holdout_fraction * len(products)))
    rng = np.random.default_rng(seed)
    held = sorted(int(p) for p in rng.choice(products, n_out, replace=False)) if n_out else []
    return [p for p in products if p not in set(held)], held


def num_views(views: dict | None) -> int:
    """How many embeddings :func:`embed_views` makes of each exemplar."""
    if not views:
        return 1
    return 1 + 3 * bool(views.get("rotations")) + int(views.get("jitter_views", 0))


def embed_views(
    model: ProductEmbedder,
    crops: torch.Tensor,
    views: dict | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> np.ndarray:
    """Embeddings of exemplar crops and, for a richer gallery, of views of them: the three other
    right-angle rotations (products lie at any angle on a tray) and ``jitter_views`` copies
    under random lighting and blur (as in training: strength 0.8, blur probability 0.5), the
    k-th at rotation k mod 4 when rotations are on. Crops are processed by batches, so the
    views are never all in memory.

    Args:
        crops: (N, 3, S, S) uint8 or [0, 1] float RGB crops.
        views: ``{"rotations": bool, "jitter_views": int}``; None: the crops as they are.
        seed: seed of the jitter.

    Returns:
        (N * V, D) float32 embeddings, view-major (rows ``v * N`` to ``(v + 1) * N - 1`` are
        view ``v``), V = :func:`num_views`; product ids follow with ``np.tile(ids, V)``.
    """
    views = views or {}
    rotations, jitter = bool(views.get("rotations")), int(views.get("jitter_views", 0))
    generator = torch.Generator().manual_seed(seed)
    out: list[list[torch.Tensor]] = [[] for _ in range(num_views(views))]
    for start in range(0, len(crops), batch_size):
        x = crops[start : start + batch_size]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x
        batch = [x] + ([torch.rot90(x, r, (2, 3)) for r in (1, 2, 3)] if rotations else [])
        for k in range(jitter):
            base = torch.rot90(x, k % 4, (2, 3)) if rotations else x
            batch.append(photometric_jitter(base, 0.8, 0.5, generator))
        for v, view in enumerate(batch):
            out[v].append(model.embed(view, batch_size))
    if len(crops) == 0:
        return np.zeros((0, model.embed_dim), np.float32)
    return torch.cat([torch.cat(v) for v in out]).numpy()


def build_gallery(
    model: ProductEmbedder,
    crops: torch.Tensor,
    product_ids: np.ndarray,
    names: dict[int, str],
    meta: dict | None = None,
    backend: str = "numpy",
    views: dict | None = None,
    seed: int = 0,
) -> Gallery:
    """A gallery of the embeddings of exemplar crops (and of their views, see
    :func:`embed_views`; the settings are kept in the gallery's metadata so that products
    added later get the same views)."""
    emb = embed_views(model, crops, views, seed)
    product_ids = np.tile(np.asarray(product_ids), num_views(views))
    gallery_meta = {"embedder": {"arch": model.arch, "fingerprint": fingerprint(model)}}
    gallery_meta["embedder"].update(meta or {})
    gallery_meta["views"] = dict(views or {})
    present = {int(p) for p in np.unique(product_ids)}
    return Gallery(
        emb,
        product_ids,
        {p: n for p, n in names.items() if p in present},
        meta=gallery_meta,
        backend=backend,
    )


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


def train_recognizer(cfg, output_dir: str, resume: bool = False) -> dict:
    """Train the embedder on K x P batches of exemplar crops; evaluate; write results.

    Writes ``model_final.pth`` (embedder + crop settings + product split), ``gallery.npz``
    (all training products, held-out ones added through the gallery, calibrated unknown
    distance), ``metrics.json``, and ``last_checkpoint.pth`` every CHECKPOINT_PERIOD epochs
    (``resume=True`` continues from it).

    Returns:
        The metrics written to ``metrics.json``.
    """
    r, t = cfg.RECOGNITION, cfg.RECOGNITION.TRAIN
    os.makedirs(output_dir, exist_ok=True)
    size, padding = r.CROP.SIZE, r.CROP.PADDING
    stored, ids, names = load_crops(t.DATASETS, int(round(size * STORE_FACTOR)), padding)
    stored, ids = _limit_per_product(stored, ids, t.MAX_CROPS_PER_PRODUCT, t.SEED)
    gallery_sets = list(t.GALLERY_DATASETS or t.DATASETS)
    gallery_crops, gallery_ids, gallery_names = load_crops(gallery_sets, size, padding)
    names.update(gallery_names)
    # The split is over every product the gallery or training knows (synthesized scenes may
    # lack the held-out products altogether); held-out products never reach training.
    products = np.union1d(np.unique(ids), np.unique(gallery_ids))
    known, held_out = split_products(products, t.HOLDOUT_FRACTION, t.SEED)
    train_rows = np.flatnonzero(np.isin(ids, known))
    logger.info(
        "Recogniser: %d crops of %d products for training, %d products held out: %s",
        len(train_rows),
        len(known),
        len(held_out),
        held_out,
    )
    torch.manual_seed(t.SEED)  # the initial weights
    model = ProductEmbedder(cfg)
    params = list(model.parameters())
    # Optional softmax cross-entropy over the known products (training only; see
    # BNNeckClassifier): the classifier's class k is known[k].
    classifier = None
    if t.CE_WEIGHT > 0 or t.CLASSIFY_EPOCHS > 0:
        classifier = BNNeckClassifier(model.embed_dim, len(known))
        params += [p for p in classifier.parameters() if p.requires_grad]
    class_of = torch.from_numpy(np.searchsorted(np.asarray(known), ids).astype(np.int64))
    optimizer = torch.optim.Adam(params, lr=t.BASE_LR)
    sampler = PKBatchSampler(ids[train_rows], t.P, t.K, seed=t.SEED)
    crop_meta = {"crop_size": size, "padding": padding}
    views = {"rotations": r.GALLERY.ROTATIONS, "jitter_views": r.GALLERY.JITTER_VIEWS}
    val_crops, val_ids, val_names = load_crops(t.VAL_DATASETS, size, padding)
    names.update(val_names)
    start_epoch, history = 0, []
    ckpt_path = os.path.join(output_dir, "last_checkpoint.pth")
    if resume and os.path.isfile(ckpt_path):
        state = load_weights_file(ckpt_path)  # tensors and plain data only
        model.load_state_dict(state["model"])
        if classifier is not None:
            classifier.load_state_dict(state["classifier"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"], state["history"]
        logger.info("Resumed from %s at epoch %d", ckpt_path, start_epoch)
    for epoch in range(start_epoch, t.EPOCHS):
        gen = torch.Generator().manual_seed(t.SEED * 100003 + epoch)
        torch.manual_seed(t.SEED * 100003 + epoch)
        lr = t.BASE_LR * (t.LR_DROP_FACTOR if 0 < t.LR_DROP_EPOCH <= epoch else 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        mode = "all" if epoch < t.ALL_TRIPLET_EPOCHS else "hard"
        mode = "classify" if epoch < t.CLASSIFY_EPOCHS else mode
        loss_fn = batch_all_triplet_loss if mode == "all" else batch_hard_triplet_loss
        model.train()
        if classifier is not None:
            classifier.train()
        sampler.set_epoch(epoch)
        losses, tic = [], time.perf_counter()
        for batch in tqdm(sampler, desc=f"epoch {epoch + 1}", leave=False):
            rows = train_rows[batch]
            x = augment_crops(stored[rows].float() / 255.0, size, gen, rotate=t.ROTATE)
            x = paste_clutter(x, t.CLUTTER_PROB, gen)
            x = photometric_jitter(x, t.COLOR_JITTER, t.BLUR_PROB, gen)
            x = random_erase(x, t.ERASE_PROB, gen)
            emb = model(x)
            if mode == "classify":
                loss = _cross_entropy(classifier, emb, class_of[rows], t.CE_LABEL_SMOOTHING)
            else:
                loss = loss_fn(emb, torch.from_numpy(ids[rows]))
                if classifier is not None and t.CE_WEIGHT > 0:
                    ce = _cross_entropy(classifier, emb, class_of[rows], t.CE_LABEL_SMOOTHING)
                    loss = loss + t.CE_WEIGHT * ce
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "mode": mode})
        if t.EVAL_PERIOD and (epoch + 1) % t.EVAL_PERIOD == 0 and epoch + 1 < t.EPOCHS:
            m, _ = evaluate_holdout(
                model,
                gallery_crops,
                gallery_ids,
                names,
                val_crops,
                val_ids,
                held_out,
                crop_meta,
                views,
            )
            history[-1].update(known_top1=m["known"]["top1"], added_top1=m["added"]["top1"])
            logger.info(
                "epoch %d validation: known top-1 %.3f, added top-1 %.3f",
                epoch + 1,
                m["known"]["top1"],
                m["added"]["top1"],
            )
        logger.info(
            "epoch %d/%d  %s-triplet loss %.4f  lr %.0e  (%.1f s)",
            epoch + 1,
            t.EPOCHS,
            mode,
            history[-1]["loss"],
            lr,
            time.perf_counter() - tic,
        )
        if (epoch + 1) % t.CHECKPOINT_PERIOD == 0 or epoch + 1 == t.EPOCHS:
            state = {
                "model": model.state_dict(),
                "classifier": classifier.state_dict() if classifier is not None else None,
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "history": history,
            }
            with atomic_path(ckpt_path) as tmp:
                torch.save(state, tmp)
    save_embedder(
        model,
        os.path.join(output_dir, "model_final.pth"),
        {**crop_meta, "known_products": known, "held_out_products": held_out},
    )
    return _final_evaluation(
        cfg, output_dir, model, (gallery_crops, gallery_ids), (val_crops, val_ids), names,
        held_out, {"history": history},
    )  # fmt: skip


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
    return _final_evaluation(
        cfg, output_dir, model, (gallery_crops, gallery_ids), (val_crops, val_ids), names,
        extra["held_out_products"], previous, crop_meta={"crop_size": size, "padding": padding},
    )  # fmt: skip


def _final_evaluation(
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


def _cross_entropy(classifier, embeddings, classes, label_smoothing: float) -> torch.Tensor:
    logits = classifier(embeddings)
    return torch.nn.functional.cross_entropy(logits, classes, label_smoothing=label_smoothing)


def _limit_per_product(crops, ids, max_per_product: int, seed: int):
    if max_per_product <= 0:
        return crops, ids
    rng = np.random.default_rng(seed)
    keep = []
    for pid in np.unique(ids):
        rows = np.flatnonzero(ids == pid)
        if len(rows) > max_per_product:
            rows = np.sort(rng.choice(rows, max_per_product, replace=False))
        keep.append(rows)
    keep = np.concatenate(keep)
    return crops[keep], ids[keep]
