"""How a checked-out image looks: boxes, names, scores, totals and the counting view's density
map drawn over it."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

__all__ = ["density_panel", "draw_receipt"]


def _colour(index: int) -> tuple[int, int, int]:
    """A distinct, saturated BGR colour per class (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.85, 0.95)
    return int(255 * b), int(255 * g), int(255 * r)


def density_panel(image: np.ndarray, density: np.ndarray) -> np.ndarray:
    """The counting view's density map as a heat map over a grey copy of ``image``.

    Args:
        image: (H, W, 3) BGR uint8.
        density: (C, h, w) or (h, w) density over the network's input (all channels summed);
            stretched to (H, W), so it lines up with the image to within one density cell.

    Returns:
        (H, W, 3) BGR uint8; red where the map is densest (scaled to its own maximum).
    """
    d = np.asarray(density, np.float32)
    d = np.clip(d.sum(axis=0) if d.ndim == 3 else d, 0.0, None)
    peak = float(d.max()) if d.size else 0.0
    heat = (255.0 * d / peak if peak > 0 else np.zeros_like(d)).astype(np.uint8)
    h, w = image.shape[:2]
    heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(grey, 0.35, cv2.applyColorMap(heat, cv2.COLORMAP_JET), 0.65, 0)


def draw_receipt(image: np.ndarray, receipt: dict, density: np.ndarray | None = None) -> np.ndarray:
    """Draw a receipt's detections (box, name, score) and its totals on a copy of ``image``.

    Args:
        image: (H, W, 3) BGR uint8.
        receipt: from :func:`dpsnet.checkout.receipt.make_receipt`.
        density: optional (C, h, w) density map of the counting view, drawn to the right.

    Returns:
        (H + banner, W, 3) BGR uint8 (or (H + banner, 2 W + gap, 3) with a density map): the
        image with a banner on top giving the item total and, when present, the counting view's.
    """
    h, w = image.shape[:2]
    scale = max(min(h, w) / 500.0, 0.5)
    thick = max(int(round(2 * scale)), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    out = image.copy()
    for det in receipt["detections"]:
        x, y, bw, bh = det["bbox"]
        p1, p2 = (int(x), int(y)), (int(x + bw), int(y + bh))
        colour = _colour(det["class"])
        cv2.rectangle(out, p1, p2, colour, thick)
        label = f"{det['name']} {det['score']:.2f}"
        (tw, th), base = cv2.getTextSize(label, font, 0.45 * scale, 1)
        ty = max(p1[1], th + base)
        cv2.rectangle(out, (p1[0], ty - th - base), (p1[0] + tw, ty), colour, -1)
        cv2.putText(out, label, (p1[0], ty - base), font, 0.45 * scale, (0, 0, 0), 1, cv2.LINE_AA)
    if density is not None:
        gap = np.full((h, max(int(8 * scale), 2), 3), 255, np.uint8)
        out = np.concatenate([out, gap, density_panel(image, density)], axis=1)
    text = f"{receipt['total']} items (score >= {receipt['score_threshold']:g})"
    if receipt["view_total"] is not None:
        text += f" | counting view: {receipt['view_total']:.1f}"
    (tw, th), base = cv2.getTextSize(text, font, 0.6 * scale, thick)
    banner = np.full((th + base + int(12 * scale), out.shape[1], 3), 32, np.uint8)
    cv2.putText(banner, text, (int(6 * scale), th + int(6 * scale)), font, 0.6 * scale,
                (255, 255, 255), thick, cv2.LINE_AA)  # fmt: skip
    return np.concatenate([banner, out], axis=0)
