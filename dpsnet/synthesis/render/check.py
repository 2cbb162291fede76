"""Label-preservation check: did rendering keep every labelled item where the labels say it is?

A renderer may erase an item, move it, or paint it over (users of the authors' CycleGAN reported
exactly this), and then the unchanged labels would teach the detector wrong counts. For each
labelled item we compare the *structure* of its visible region before and after rendering:
the gradient-magnitude maps of both images (after a small Gaussian blur) are correlated over the
item's visible mask, slightly dilated so that its outline counts. Structure survives colour
transfer, blur and noise; it does not survive erasing (the region becomes background) or moving
(the outline and print sit elsewhere). An image with any item below the threshold is dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
from pycocotools import mask as mask_util

logger = logging.getLogger(__name__)


@dataclass
class CheckParams:
    """Thresholds of the check (``cfg.RENDER.CHECK``)."""

    min_score: float = 0.5  # items whose structure correlation falls below this fail
    min_area: int = 64  # visible pixels (working scale) below which an item is not checked
    sigma: float = 1.0  # Gaussian blur before the gradients, working-scale pixels
    dilate: int = 2  # dilation of the visible mask so the outline counts, working-scale pixels
    work_size: int = 640  # longer side of the working scale (0 = native resolution)

    @classmethod
    def from_config(cls, cfg) -> CheckParams:
        c = cfg.RENDER.CHECK
        return cls(
            min_score=c.MIN_SCORE,
            min_area=c.MIN_AREA,
            sigma=c.SIGMA,
            dilate=c.DILATE,
            work_size=c.WORK_SIZE,
        )


@dataclass
class ItemResult:
    """The check of one labelled item."""

    ann_id: int | str | None
    score: float | None  # structure correlation; None when the item was too small to check
    ok: bool


@dataclass
class ImageResult:
    """The check of one rendered image: ok only when no checked item failed."""

    items: list[ItemResult] = field(default_factory=list)

    @property
    def failed(self) -> list[ItemResult]:
        return [r for r in self.items if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def num_checked(self) -> int:
        return sum(r.score is not None for r in self.items)


def annotation_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of an annotation's visible pixels.

    Uses the RLE (compressed or not) or polygon ``segmentation`` when there is one; otherwise
    the ``bbox`` [x, y, w, h].
    """
    seg = ann.get("segmentation")
    m = None
    if isinstance(seg, dict) and "counts" in seg:
        rle = seg
        if isinstance(seg["counts"], list):
            rle = mask_util.frPyObjects(seg, height, width)
        elif isinstance(seg["counts"], str):
            rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
        if tuple(rle["size"]) == (height, width):
            m = mask_util.decode(rle).astype(bool)
    elif isinstance(seg, list) and seg and isinstance(seg[0], list) and len(seg[0]) >= 6:
        rles = mask_util.frPyObjects(seg, height, width)
        m = mask_util.decode(mask_util.merge(rles)).astype(bool)
    if m is None or not m.any():
        m = np.zeros((height, width), bool)
        x, y, w, h = (float(v) for v in ann["bbox"])
        x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
        x1, y1 = min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h)))
        m[y0:y1, x0:x1] = True
    return m


def _structure(image: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) float32 gradient magnitude of the blurred grey image."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    gray = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), sigma)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return np.hypot(gx, gy)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if den <= 1e-9:
        # A structureless region: identical (both flat) counts as preserved, else not.
        return 1.0 if float(np.abs(a).max(initial=0) + np.abs(b).max(initial=0)) <= 1e-6 else 0.0
    return float((a * b).sum() / den)


def check_labels_preserved(
    before: np.ndarray,
    after: np.ndarray,
    annotations: list[dict],
    params: CheckParams | None = None,
) -> ImageResult:
    """Compare every labelled item of ``before`` with the same region of ``after``.

    Args:
        before: (H, W, 3) uint8 BGR image the labels belong to.
        after: (H, W, 3) uint8 BGR rendered image (same size).
        annotations: COCO annotations of the image (``bbox`` and optionally ``segmentation``).
        params: thresholds.

    Returns:
        Per-item scores; the image is ok when every checked item scored >= ``min_score``.
    """
    p = params or CheckParams()
    if before.shape[:2] != after.shape[:2]:
        raise ValueError(
            f"rendered image is {after.shape[1]}x{after.shape[0]}, its source "
            f"{before.shape[1]}x{before.shape[0]}: a renderer must keep the image size"
        )
    h, w = before.shape[:2]
    scale = 1.0
    if p.work_size > 0 and max(h, w) > p.work_size:
        scale = p.work_size / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if scale < 1.0:
        before = cv2.resize(before, size, interpolation=cv2.INTER_AREA)
        after = cv2.resize(after, size, interpolation=cv2.INTER_AREA)
    sb, sa = _structure(before, p.sigma), _structure(after, p.sigma)
    kernel = None
    if p.dilate > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * p.dilate + 1, 2 * p.dilate + 1))
    result = ImageResult()
    for ann in annotations:
        m = annotation_mask(ann, h, w)
        if scale < 1.0:
            m = cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        if int(m.sum()) < p.min_area:
            result.items.append(ItemResult(ann.get("id"), None, True))
            continue
        if kernel is not None:
            m = cv2.dilate(m.astype(np.uint8), kernel).astype(bool)
        score = _correlation(sb[m], sa[m])
        result.items.append(ItemResult(ann.get("id"), score, score >= p.min_score))
    return result
