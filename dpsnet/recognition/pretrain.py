"""Backbone pretraining on product crops: a stand-in for ImageNet weights where none can be had.

The paper starts DPSNet from ImageNet weights; dpsnet cannot download them, and a detector
trained from random initialisation on a CPU budget learns to find products long before it learns
to name them (on the mini world the class-agnostic detector reaches AP50 0.87 in 300 iterations
while the 20-class one stays near chance). This stage trains the detector's own ResNet trunk
(``build_resnet_backbone`` with the same config: depth, norm, strides) as a product classifier on
small crops of the training datasets' boxes, which costs a fraction of a detection iteration per
image, and saves it under the names DPSNet's backbone uses (``backbone.bottom_up.*``), so that
``MODEL.WEIGHTS`` loads it and every other part starts fresh.

Only training data is read (``PRETRAIN.DATASETS``, default ``DATASETS.TRAIN``); the held-out
accuracy it reports comes from a seeded split of those crops, not from an evaluation split.
"""

import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from torch import nn
from tqdm import tqdm

from dpsnet.engine.checkpoint import checkpoint_fields
from dpsnet.recognition.crops import STORE_FACTOR, augment_crops, photometric_jitter
from dpsnet.recognition.products import load_crops
from dpsnet.utils.checkpoint_meta import META_KEY
from dpsnet.utils.io import atomic_path, atomic_write_json
from dpsnet.utils.precision import apply_cpu_settings, settings_from_config

logger = logging.getLogger(__name__)

#: Prefix of the trunk's parameters inside DPSNet (and detectron2's FPN backbones).
BACKBONE_PREFIX = "backbone.bottom_up."


class CropClassifier(nn.Module):
    """The detector's ResNet trunk, global average pooling and a linear product classifier.

    Inputs are RGB crops in [0, 1]; they are turned into what the detector sees (``INPUT.FORMAT``
    channel order, 0-255, minus ``MODEL.PIXEL_MEAN``, over ``MODEL.PIXEL_STD``).
    """

    def __init__(self, cfg, num_classes: int):
        super().__init__()
        self.bottom_up = build_resnet_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        self.feature = self.bottom_up._out_features[-1]
        channels = self.bottom_up.output_shape()[self.feature].channels
        self.classifier = nn.Linear(channels, num_classes)
        self.bgr = cfg.INPUT.FORMAT == "BGR"
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, -1, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(1, -1, 1, 1))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.flip(1) if self.bgr else crops
        x = (x * 255.0 - self.pixel_mean) / self.pixel_std
        features = self.bottom_up(x)[self.feature]
        return self.classifier(features.mean(dim=(2, 3)))


def _holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) index split; the held-out part is empty for fraction 0."""
    order = np.random.default_rng(seed).permutation(n)
    k = int(round(n * fraction)) if n > 1 else 0
    return np.sort(order[k:]), np.sort(order[:k])


def _augment(stored: torch.Tensor, size: int, p, generator: torch.Generator) -> torch.Tensor:
    crops = augment_crops(stored.float() / 255.0, size, generator, rotate=True)
    flip = torch.rand(crops.shape[0], generator=generator) < 0.5
    crops = torch.where(flip.view(-1, 1, 1, 1), crops.flip(3), crops)
    return photometric_jitter(crops, float(p.COLOR_JITTER), float(p.BLUR_PROB), generator)


@torch.no_grad()
def _accuracy(
    model: CropClassifier, stored: torch.Tensor, labels: torch.Tensor, size: int
) -> float:
    if len(labels) == 0:
        return float("nan")
    model.eval()
    correct = 0
    for start in range(0, len(labels), 256):
        batch = stored[start : start + 256].float() / 255.0
        # The plain crop is the stored square's centre (it was stored STORE_FACTOR wider).
        margin = int(round(batch.shape[-1] * (1 - 1 / STORE_FACTOR) / 2))
        batch = batch[..., margin : batch.shape[-2] - margin, margin : batch.shape[-1] - margin]
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False)
        correct += (model(batch).argmax(1) == labels[start : start + 256]).sum().item()
    model.train()
    return correct / len(labels)


def pretrain_backbone(cfg, output_path: str) -> dict:
    """Train the detector's trunk as a crop classifier and save it for ``MODEL.WEIGHTS``.

    Args:
        cfg: a config with dpsnet's keys (``PRETRAIN.*`` and the detector's ``MODEL.RESNETS``).
        output_path: the ``.pth`` to write (atomically); a ``.json`` beside it gets the metrics.

    Returns:
        The metrics: crops, classes, held-out accuracy, final training loss, seconds.
    """
    p = cfg.PRETRAIN
    datasets = list(p.DATASETS) or list(cfg.DATASETS.TRAIN)
    if not datasets:
        raise ValueError("PRETRAIN.DATASETS and DATASETS.TRAIN are both empty: nothing to crop")
    # A class-agnostic detector reads one-class views (RECOGNITION.CLASS_AGNOSTIC); a one-class
    # classifier learns nothing, so its trunk is pretrained on the products of their sources.
    datasets = [MetadataCatalog.get(n).get("agnostic_source", n) for n in datasets]
    seed = int(cfg.SEED) if cfg.SEED >= 0 else 0
    size = int(p.CROP_SIZE)
    crops, product_ids, names = load_crops(datasets, size, float(p.PADDING), STORE_FACTOR)
    if len(product_ids) == 0:
        raise ValueError(f"no annotated boxes in {datasets}: nothing to pretrain on")
    classes = sorted(set(product_ids.tolist()))
    label_of = {pid: i for i, pid in enumerate(classes)}
    labels = torch.as_tensor([label_of[int(pid)] for pid in product_ids])
    train_idx, held_idx = _holdout_split(len(labels), float(p.HOLDOUT_FRACTION), seed)
    logger.info(
        "Pretraining the %s trunk on %d crops of %d products from %s (%d held out)",
        f"ResNet-{cfg.MODEL.RESNETS.DEPTH}",
        len(train_idx),
        len(classes),
        datasets,
        len(held_idx),
    )

    torch.manual_seed(seed)
    model = CropClassifier(cfg, len(classes))
    model.train()
    # bfloat16 autocast / channels-last / threads as measured on this machine (the crops are
    # in memory, so no loader process takes a core)
    apply_cpu_settings(model, settings_from_config(cfg, loader_workers=0))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(p.BASE_LR), weight_decay=float(p.WEIGHT_DECAY), fused=True
    )
    iters, warmup = int(p.MAX_ITER), max(int(p.WARMUP_ITERS), 1)

    def lr_factor(it: int) -> float:  # linear warm-up, then cosine to zero
        if it < warmup:
            return (it + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (it - warmup) / max(iters - warmup, 1)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(seed)
    train_stored, train_labels = crops[train_idx], labels[train_idx]
    batch = min(int(p.IMS_PER_BATCH), len(train_idx))
    losses, start = [], time.perf_counter()
    bar = tqdm(range(iters), desc="pretrain backbone", unit="it")
    for _ in bar:
        pick = torch.randint(len(train_idx), (batch,), generator=generator)
        inputs = _augment(train_stored[pick], size, p, generator)
        loss = F.cross_entropy(model(inputs).float(), train_labels[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    seconds = time.perf_counter() - start

    metrics = {
        "datasets": datasets,
        "crops": len(labels),
        "classes": len(classes),
        "class_names": [names.get(pid, str(pid)) for pid in classes],
        "iterations": iters,
        "batch": batch,
        "final_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
        "heldout_crops": len(held_idx),
        "heldout_accuracy": _accuracy(model, crops[held_idx], labels[held_idx], size),
        "train_accuracy": _accuracy(model, train_stored[:2000], train_labels[:2000], size),
        "seconds": round(seconds, 1),
        "seconds_per_iter": round(seconds / max(iters, 1), 3),
    }
    state = {BACKBONE_PREFIX + k: v for k, v in model.bottom_up.state_dict().items()}
    with atomic_path(output_path) as tmp:
        # dpsnet's fields (catalogue, config, ...) as in every checkpoint the Trainer saves
        torch.save({"model": state, "pretrain": metrics, META_KEY: checkpoint_fields(cfg)}, tmp)
    atomic_write_json(str(output_path).rsplit(".", 1)[0] + ".json", metrics, indent=1)
    logger.info(
        "Pretrained trunk: held-out crop accuracy %.3f, %.2f s/iter -> %s",
        metrics["heldout_accuracy"],
        metrics["seconds_per_iter"],
        output_path,
    )
    return metrics
