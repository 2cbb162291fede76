"""A checkout run over a folder: predict each file, write its annotated image and receipt.

:func:`run_checkout` runs a predictor over a list of files (see
:func:`dpsnet.checkout.inputs.find_inputs`) and writes, atomically, per image
``annotated/<name>.jpg``, ``thumbs/<name>.jpg`` and ``receipts/<name>.json``, then
``receipts.csv`` and ``summary.json`` for the folder. Unreadable files are skipped and listed with
their reason. :mod:`dpsnet.checkout.report` turns the result into ``report.html``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dpsnet.checkout.catalog import ProductCatalog
from dpsnet.checkout.drawing import draw_receipt
from dpsnet.checkout.inputs import InputFile, output_stems
from dpsnet.checkout.receipt import make_receipt, receipts_csv, round_value
from dpsnet.utils.io import BadInputError, atomic_write_image, atomic_write_json, atomic_write_text
from dpsnet.utils.io import read_image as _read_image

__all__ = ["CheckoutRun", "run_checkout"]

logger = logging.getLogger(__name__)


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
                    p["view_count"] = round_value((p["view_count"] or 0.0) + item["view_count"])
        viewed = [r for r in self.receipts if r["view_total"] is not None]
        agree = sum(round(r["view_total"]) == r["total"] for r in viewed)
        return {
            "images": len(self.receipts),
            "skipped": len(self.skipped),
            "items": sum(r["total"] for r in self.receipts),
            "view_items": round_value(sum(r["view_total"] for r in viewed)) if viewed else None,
            "view_agreement": f"{agree}/{len(viewed)}" if viewed else None,
            "seconds": round_value(self.seconds, 2),
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
        for f, stem in zip(tqdm(files, desc="checkout", unit="image"), output_stems(files)):
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
    atomic_write_text(out / "receipts.csv", receipts_csv(receipts, skipped))
    atomic_write_json(out / "summary.json", {**run.summary(), "skipped_files": skipped}, indent=2)
    logger.info(
        "checked out %d images (%d items), skipped %d files, in %.1f s",
        len(receipts),
        run.summary()["items"],
        len(skipped),
        run.seconds,
    )
    return run
