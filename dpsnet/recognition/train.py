"""Training the recogniser: K x P batches of augmented exemplar crops, triplet losses and an
optional cross-entropy, checkpoints to resume from, then the validation of ``evaluate.py``."""

import logging
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from dpsnet.recognition.crops import (
    STORE_FACTOR,
    augment_crops,
    paste_clutter,
    photometric_jitter,
    random_erase,
)
from dpsnet.recognition.embedder import ProductEmbedder, save_embedder
from dpsnet.recognition.evaluate import evaluate_holdout, final_evaluation
from dpsnet.recognition.losses import (
    BNNeckClassifier,
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
)
from dpsnet.recognition.products import load_crops, split_products
from dpsnet.recognition.sampler import PKBatchSampler
from dpsnet.utils.io import atomic_path
from dpsnet.utils.precision import autocast_context, settings_from_config
from dpsnet.utils.weights import load_weights_file

logger = logging.getLogger(__name__)


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
    settings = settings_from_config(cfg, loader_workers=0)  # crops are in memory: no loader
    torch.set_num_threads(settings.threads)
    logger.info("CPU settings: %s", settings.reason)
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
            with autocast_context(settings):  # bf16 only where it measured faster here
                emb = model(x)
            emb = emb.float()  # distances, triplet and cross-entropy losses in float32
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
    return final_evaluation(
        cfg, output_dir, model, (gallery_crops, gallery_ids), (val_crops, val_ids), names,
        held_out, {"history": history},
    )  # fmt: skip


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
