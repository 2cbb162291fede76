"""Checkout receipts: a model's output for one image read as a shopping list, and a folder run.

A receipt lists every product detected with ``score >= threshold`` (the same rule as the RPC
evaluator's fixed threshold): its dataset category id, name, supercategory and count and, beside
it, the counting view's estimate when the model has one. DPSNet returns per image
``{"instances", "density": (C, h, w), "counts": (C,)}`` with C = 1 (total), one channel per
supercategory or one per category; a stock detectron2 model returns only ``instances``.

:func:`run_checkout` runs a predictor over a list of files (see :func:`find_inputs`) and writes,
atomically, per image ``annotated/<name>.jpg``, ``thumbs/<name>.jpg`` and ``receipts/<name>.json``,
then ``receipts.csv`` and ``summary.json`` for the folder. Unreadable files are skipped and listed
with their reason. ``dpsnet.utils.report`` turns the result into ``report.html``.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dpsnet.utils.io import BadInputError, atomic_write_image, atomic_write_json, atomic_write_text
from dpsnet.utils.io import read_image as _read_image
from dpsnet.utils.report import draw_receipt

__all__ = [
    "CheckoutRun",
    "InputFile",
    "ProductCatalog",
    "find_inputs",
    "lower_score_thresholds",
    "make_receipt",
    "receipts_csv",
    "run_checkout",
]

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("image", "product_id", "name", "supercategory", "count", "view_count")


@dataclass
class ProductCatalog:
    """What each contiguous class id the model predicts means, from dataset metadata.

    Attributes:
        names: (K,) product name of each contiguous class.
        product_ids: (K,) dataset category id of each class (the inverse of metadata's
            ``thing_dataset_id_to_contiguous_id``; the class index itself without one).
        supercategories: (K,) supercategory name of each class ("" when unknown).
        supercategory_names: (S,) supercategories, in channel order of a per-supercategory count.
        supercategory_ids: (K,) index into ``supercategory_names`` of each class (-1: none).
        count_levels: the counting view's levels in channel order (``MODEL.COUNTING_HEAD.LEVELS``:
            "total" 1 channel, "supercategory" S, "category" K); None: guessed from the number
            of channels as the RPC evaluator does (K: category, S: supercategory, 1: total).
        source: the dataset the metadata came from ("" when none had ``thing_classes``).
    """

    names: list[str]
    product_ids: list[int]
    supercategories: list[str]
    supercategory_names: list[str] = field(default_factory=list)
    supercategory_ids: list[int] = field(default_factory=list)
    count_levels: tuple[str, ...] | None = None
    source: str = ""

    @classmethod
    def from_metadata(
        cls,
        metadata,
        num_classes: int | None = None,
        source: str = "",
        count_levels: Sequence[str] | None = None,
    ):
        """Build from a detectron2 ``Metadata`` (``thing_classes`` and, if present,
        ``thing_dataset_id_to_contiguous_id``, ``supercategory_names``,
        ``thing_supercategory_ids``); classes beyond the metadata are named ``class <i>``."""
        names = list(getattr(metadata, "thing_classes", None) or [])
        k = num_classes if num_classes is not None else len(names)
        if names and len(names) != k:
            logger.warning(
                "%s has %d thing_classes but the model predicts %d classes",
                source or "metadata",
                len(names),
                k,
            )
        names = [names[i] if i < len(names) else f"class {i}" for i in range(k)]
        ids = list(range(k))
        for dataset_id, contiguous in (
            getattr(metadata, "thing_dataset_id_to_contiguous_id", None) or {}
        ).items():
            if 0 <= contiguous < k:
                ids[contiguous] = int(dataset_id)
        supers = list(getattr(metadata, "supercategory_names", None) or [])
        super_ids = list(getattr(metadata, "thing_supercategory_ids", None) or [])
        super_ids = [int(super_ids[i]) if i < len(super_ids) else -1 for i in range(k)]
        per_class = [supers[i] if 0 <= i < len(supers) else "" for i in super_ids]
        levels = tuple(count_levels) if count_levels else None
        return cls(names, ids, per_class, supers, super_ids, levels, source if names else "")

    @classmethod
    def from_config(cls, cfg) -> ProductCatalog:
        """Metadata of ``DATASETS.TEST[0]``, else ``DATASETS.TRAIN[0]``, for the model's classes."""
        from detectron2.data import MetadataCatalog

        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
            num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
        head = cfg.MODEL.get("COUNTING_HEAD")
        levels = list(head.LEVELS) if head is not None and "LEVELS" in head else None
        for name in [*cfg.DATASETS.TEST[:1], *cfg.DATASETS.TRAIN[:1]]:
            meta = MetadataCatalog.get(name)
            if getattr(meta, "thing_classes", None):
                return cls.from_metadata(meta, num_classes, source=name, count_levels=levels)
        logger.warning("no dataset in DATASETS.TEST/TRAIN has thing_classes: products unnamed")
        return cls.from_metadata(None, num_classes, count_levels=levels)

    def split_counts(self, num_channels: int) -> dict[str, slice] | None:
        """The channels of each level of a counting view with ``num_channels`` channels.

        Returns:
            level -> slice of channels, or None when the channels fit no known layout.
        """
        sizes = {"total": 1, "supercategory": len(self.supercategory_names)}
        sizes["category"] = len(self.names)
        candidates = [self.count_levels] if self.count_levels else [
            ("category",), ("supercategory",), ("total",)
        ]  # fmt: skip
        for levels in candidates:
            if all(lv in sizes and sizes[lv] for lv in levels):
                if sum(sizes[lv] for lv in levels) == num_channels:
                    starts = np.cumsum([0] + [sizes[lv] for lv in levels])
                    return {lv: slice(a, b) for lv, a, b in zip(levels, starts, starts[1:])}
        return None


def lower_score_thresholds(cfg, threshold: float) -> None:
    """Let the model keep detections down to ``threshold`` (its own test thresholds are lowered,
    never raised, so count-guided post-processing still sees what it is configured to see)."""
    for node in (cfg.MODEL.ROI_HEADS, cfg.MODEL.RETINANET):
        node.SCORE_THRESH_TEST = min(node.SCORE_THRESH_TEST, threshold)


def _round(value: float, digits: int = 3) -> float:
    return float(round(float(value), digits))


def make_receipt(
    outputs: dict, catalog: ProductCatalog, threshold: float, image: str, height: int, width: int
) -> dict:
    """The receipt of one image from the model's output dict.

    Args:
        outputs: ``{"instances": Instances (pred_boxes, scores, pred_classes)}`` and optionally
            ``"counts"``: (C,) tensor of the counting view.
        catalog: names and ids of the model's classes.
        threshold: detections with ``score >= threshold`` are counted and drawn.
        image: the image's name (path relative to the input folder).
        height, width: the image's size in pixels.

    Returns:
        A JSON-serialisable dict: ``image``, ``height``, ``width``, ``score_threshold``,
        ``items`` (``product_id``, ``name``, ``supercategory``, ``count``, ``view_count``),
        ``total``, ``view_total``, ``view_levels`` (the counting view's levels),
        ``view_supercategories`` (with a supercategory level) and ``detections``
        (``product_id``, ``name``, ``class``, ``score``, ``bbox`` XYWH). View fields are None
        when the model has no counting view (or its channels fit no layout).
    """
    boxes, scores, classes = np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    if "instances" in outputs:
        inst = outputs["instances"].to("cpu")
        boxes = inst.pred_boxes.tensor.numpy().astype(np.float64)
        scores = inst.scores.numpy().astype(np.float64)
        classes = inst.pred_classes.numpy().astype(np.int64)
    keep = scores >= threshold
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    order = np.argsort(-scores, kind="stable")
    counts = outputs.get("counts")
    views: dict[str, np.ndarray] = {}
    if counts is not None:
        if isinstance(counts, torch.Tensor):
            counts = counts.detach().to("cpu", torch.float64).numpy()
        counts = np.asarray(counts, dtype=np.float64).reshape(-1)
        layout = catalog.split_counts(counts.size)
        if layout is None:
            logger.warning(
                "%s: %d count channels fit no counting-view layout (levels %s, %d classes, "
                "%d supercategories); counts ignored",
                image, counts.size, catalog.count_levels, len(catalog.names),
                len(catalog.supercategory_names),
            )  # fmt: skip
        else:
            views = {level: counts[sl] for level, sl in layout.items()}
    per_class = np.bincount(classes, minlength=len(catalog.names))
    items = []
    for c, name in enumerate(catalog.names):
        view = _round(views["category"][c]) if "category" in views else None
        if per_class[c] or (view is not None and round(view) > 0):
            items.append(
                {
                    "product_id": catalog.product_ids[c],
                    "name": name,
                    "supercategory": catalog.supercategories[c],
                    "count": int(per_class[c]),
                    "view_count": view,
                }
            )
    items.sort(key=lambda item: item["product_id"])
    supers = None
    if "supercategory" in views:
        sc_ids = np.asarray(catalog.supercategory_ids, np.int64)
        supers = [
            {
                "name": sc,
                "count": int(per_class[sc_ids == i].sum()),
                "view_count": _round(views["supercategory"][i]),
            }
            for i, sc in enumerate(catalog.supercategory_names)
        ]
    # Every level sums to the total; the total channel, when there is one, is the view's own.
    first = views.get("total", next(iter(views.values()), None))
    return {
        "image": image,
        "height": int(height),
        "width": int(width),
        "score_threshold": float(threshold),
        "items": items,
        "total": int(keep.sum()),
        "view_total": None if first is None else _round(first.sum()),
        "view_levels": list(views) or None,
        "view_supercategories": supers,
        "detections": [
            {
                "product_id": catalog.product_ids[classes[i]],
                "name": catalog.names[classes[i]],
                "class": int(classes[i]),
                "score": _round(scores[i], 4),
                "bbox": [
                    _round(boxes[i, 0], 1),
                    _round(boxes[i, 1], 1),
                    _round(boxes[i, 2] - boxes[i, 0], 1),
                    _round(boxes[i, 3] - boxes[i, 1], 1),
                ],
            }
            for i in order
        ],
    }


def receipts_csv(receipts: Sequence[dict]) -> str:
    """One CSV for a folder: a row per product line, then a ``TOTAL`` row per image."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in receipts:
        rows = [[r["image"], *(item[k] for k in CSV_COLUMNS[1:])] for item in r["items"]]
        rows.append([r["image"], "", "TOTAL", "", r["total"], r["view_total"]])
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


@dataclass
class InputFile:
    """A file to check out: ``path`` on disk and ``name``, its path relative to its input."""

    path: Path
    name: str


def find_inputs(
    inputs: Sequence[str], exclude: str | os.PathLike | None = None
) -> tuple[list[InputFile], list[dict]]:
    """Expand folders (recursively, every file) and glob patterns into a sorted list of files.

    Args:
        inputs: folders, files or glob patterns (``**`` recurses).
        exclude: a folder whose files are never inputs (the output folder).

    Returns:
        (files, problems): ``problems`` lists ``{"file", "reason"}`` for inputs matching nothing.
    """
    skip = Path(exclude).resolve() if exclude else None
    files, problems, seen = [], [], set()

    def add(path: Path, root: Path) -> None:
        real = path.resolve()
        if real in seen or (skip and real.is_relative_to(skip)):
            return
        seen.add(real)
        files.append(InputFile(path, path.relative_to(root).as_posix()))

    for pattern in inputs:
        path = Path(pattern)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for f in sorted(filenames):
                    add(Path(dirpath) / f, path)
        elif path.is_file():
            add(path, path.parent)
        elif glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                problems.append({"file": pattern, "reason": "the pattern matches no file"})
            root = Path(os.path.commonpath([m.parent for m in matches])) if matches else None
            for m in matches:
                add(m, root)
        else:
            problems.append({"file": pattern, "reason": "no such file or folder"})
    return files, problems


def _output_stems(files: Sequence[InputFile]) -> list[str]:
    """``sub/a.jpg`` -> ``sub/a``; names made unique (``a.jpg``, ``a.png`` -> ``a``, ``a_2``)."""
    stems, used = [], set()
    for f in files:
        base = Path(f.name).with_suffix("").as_posix()
        stem, n = base, 1
        while stem in used:
            n += 1
            stem = f"{base}_{n}"
        used.add(stem)
        stems.append(stem)
    return stems


@dataclass
class CheckoutRun:
    """The outcome of :func:`run_checkout`: receipts of processed images and skipped files.

    Each receipt also holds the output paths, relative to ``output_dir``: ``annotated``,
    ``thumbnail``, ``receipt``; ``source`` is the input file's path.
    """

    output_dir: Path
    receipts: list[dict]
    skipped: list[dict]
    seconds: float
    catalog: ProductCatalog

    def summary(self) -> dict:
        """Folder totals: images, items per product, counting-view agreement."""
        products: dict[int, dict] = {}
        for r in self.receipts:
            for item in r["items"]:
                p = products.setdefault(
                    item["product_id"],
                    {k: item[k] for k in ("product_id", "name", "supercategory")}
                    | {"count": 0, "view_count": None},
                )
                p["count"] += item["count"]
                if item["view_count"] is not None:
                    p["view_count"] = _round((p["view_count"] or 0.0) + item["view_count"])
        viewed = [r for r in self.receipts if r["view_total"] is not None]
        agree = sum(round(r["view_total"]) == r["total"] for r in viewed)
        return {
            "images": len(self.receipts),
            "skipped": len(self.skipped),
            "items": sum(r["total"] for r in self.receipts),
            "view_items": _round(sum(r["view_total"] for r in viewed)) if viewed else None,
            "view_agreement": f"{agree}/{len(viewed)}" if viewed else None,
            "seconds": _round(self.seconds, 2),
            "products": sorted(products.values(), key=lambda p: p["product_id"]),
        }


def run_checkout(
    predictor: Callable[[np.ndarray], dict],
    files: Sequence[InputFile],
    output_dir: str | os.PathLike,
    catalog: ProductCatalog,
    threshold: float,
    *,
    skipped: Sequence[dict] = (),
    thumb_size: int = 320,
    read_image: Callable[[Path], np.ndarray] = _read_image,
) -> CheckoutRun:
    """Check out every file: predict, write the annotated image, thumbnail and receipt.

    Args:
        predictor: BGR (H, W, 3) uint8 image -> the model's output dict for it.
        files: from :func:`find_inputs`.
        output_dir: where the outputs go (created).
        catalog: names and ids of the model's classes.
        threshold: score a detection needs to be counted.
        skipped: problems found earlier (e.g. by :func:`find_inputs`), listed first.
        thumb_size: longer side of the thumbnails, pixels.
        read_image: file reader raising ``BadInputError`` for unreadable files.

    Returns:
        The receipts and the skipped files (``{"file", "reason"}``); ``receipts.csv`` and
        ``summary.json`` are written too.
    """
    out = Path(output_dir)
    receipts, skipped = [], list(skipped)
    start = time.perf_counter()
    with logging_redirect_tqdm():
        for f, stem in zip(tqdm(files, desc="checkout", unit="image"), _output_stems(files)):
            try:
                image = read_image(f.path)
            except BadInputError as e:
                skipped.append({"file": f.name, "reason": str(e).removeprefix(f"{f.path}: ")})
                logger.warning("skipped %s", e)
                continue
            try:
                outputs = predictor(image)
            except Exception as e:  # one bad image must not end a folder run; it is listed
                skipped.append({"file": f.name, "reason": f"model failed: {e}"})
                logger.warning("skipped %s: model failed: %s", f.path, e)
                continue
            receipt = make_receipt(outputs, catalog, threshold, f.name, *image.shape[:2])
            density = outputs.get("density")
            if isinstance(density, torch.Tensor):
                density = density.detach().to("cpu", torch.float32).numpy()
            layout = catalog.split_counts(len(density)) if density is not None else None
            if layout:  # one level's channels: each level alone sums to the total density
                density = density[next(iter(layout.values()))]
            annotated = draw_receipt(image, receipt, density)
            h, w = annotated.shape[:2]
            s = min(thumb_size / max(h, w), 1.0)
            thumb = cv2.resize(annotated, (max(int(w * s), 1), max(int(h * s), 1)),
                               interpolation=cv2.INTER_AREA)  # fmt: skip
            receipt["source"] = str(f.path)
            receipt["annotated"] = f"annotated/{stem}.jpg"
            receipt["thumbnail"] = f"thumbs/{stem}.jpg"
            receipt["receipt"] = f"receipts/{stem}.json"
            quality = [cv2.IMWRITE_JPEG_QUALITY, 90]
            atomic_write_image(out / receipt["annotated"], annotated, quality)
            atomic_write_image(out / receipt["thumbnail"], thumb, quality)
            atomic_write_json(out / receipt["receipt"], receipt, indent=2)
            receipts.append(receipt)
    run = CheckoutRun(out, receipts, skipped, time.perf_counter() - start, catalog)
    atomic_write_text(out / "receipts.csv", receipts_csv(receipts))
    atomic_write_json(out / "summary.json", {**run.summary(), "skipped_files": skipped}, indent=2)
    logger.info(
        "checked out %d images (%d items), skipped %d files, in %.1f s",
        len(receipts),
        run.summary()["items"],
        len(skipped),
        run.seconds,
    )
    return run
