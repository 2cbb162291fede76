"""Pixel work on sprites: scale/rotate a cut-out, paste it, cast its shadow, guard occlusion.

A sprite is a premultiplied BGRA uint8 image tight to its alpha (see ``items.make_cutout``);
scenes are uint8 BGR. OpenCV does the arithmetic (saturating uint8 with rounding), which keeps
a scene of 15-20 items at a few milliseconds of pixel work.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def occlusion_guard(owner: np.ndarray, solid: np.ndarray, vis: np.ndarray, need: np.ndarray):
    """``accept(x, y)``: pasting ``solid`` at (x, y) leaves every placed item that still has
    ``need`` visible pixels with at least that many (items already below it do not count)."""
    h, w = solid.shape
    alive = vis >= need

    def accept(x: int, y: int) -> bool:
        under = owner[y : y + h, x : x + w][solid]
        covered = np.bincount(under[under >= 0], minlength=len(vis))[: len(vis)]
        return bool((vis - covered >= need)[alive].all())

    return accept


def transform_sprite(cut, scale: float, angle: float, flip: bool, bounds) -> np.ndarray | None:
    """Scale, mirror and rotate a cut-out; shrink it further if it would not fit ``bounds``.

    Returns:
        premultiplied BGRA uint8 sprite tight to its alpha, or None when nothing is left.
    """
    fh, fw = cut.full_size
    tw, th = fw * scale, fh * scale
    rad = math.radians(angle)
    c, s = abs(math.cos(rad)), abs(math.sin(rad))
    bw, bh = bounds[2] - bounds[0] - 3, bounds[3] - bounds[1] - 3
    rw, rh = tw * c + th * s, tw * s + th * c
    if rw > bw or rh > bh:
        f = min(bw / rw, bh / rh)
        tw, th = tw * f, th * f
    tw, th = max(2, int(round(tw))), max(2, int(round(th)))
    src = cut.bgra
    sx, sy = tw / src.shape[1], th / src.shape[0]
    rotate = bool(angle % 360.0)
    cw, ch = int(math.ceil(tw * c + th * s)) + 2, int(math.ceil(tw * s + th * c)) + 2
    if rotate and min(sx, sy) >= 0.5:
        # scale, mirror and rotate in one warp (linear interpolation is fine down to 1/2)
        a, b = math.cos(rad), math.sin(rad)
        fx = -sx if flip else sx
        lin = np.array([[a * fx, b * sy], [-b * fx, a * sy]])
        centre_src = np.array([(src.shape[1] - 1) / 2, (src.shape[0] - 1) / 2])
        shift = np.array([(cw - 1) / 2, (ch - 1) / 2]) - lin @ centre_src
        mat = np.concatenate([lin, shift[:, None]], axis=1)
        sprite = cv2.warpAffine(src, mat, (cw, ch), flags=cv2.INTER_LINEAR)
    else:
        shrink = tw < src.shape[1] and th < src.shape[0]
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        sprite = cv2.resize(src, (tw, th), interpolation=interp)
        if flip:
            sprite = cv2.flip(sprite, 1)
        if rotate:
            mat = cv2.getRotationMatrix2D(((tw - 1) / 2, (th - 1) / 2), float(angle), 1.0)
            mat[0, 2] += (cw - tw) / 2
            mat[1, 2] += (ch - th) / 2
            sprite = cv2.warpAffine(sprite, mat, (cw, ch), flags=cv2.INTER_LINEAR)
    x, y, w, h = cv2.boundingRect(sprite[..., 3])
    if w == 0 or h == 0:
        return None
    return np.ascontiguousarray(sprite[y : y + h, x : x + w])


def paste_sprite(canvas: np.ndarray, sprite: np.ndarray, x: int, y: int) -> None:
    """Blend a premultiplied BGRA sprite over uint8 ``canvas`` at top-left ``(x, y)``."""
    h, w = sprite.shape[:2]
    region = canvas[y : y + h, x : x + w]
    b, g, r, a = cv2.split(sprite)
    inv = cv2.bitwise_not(a)
    under = cv2.multiply(region, cv2.merge([inv, inv, inv]), scale=1 / 255)
    region[...] = cv2.add(under, cv2.merge([b, g, r]))


def cast_shadow(
    canvas: np.ndarray, alpha: np.ndarray, x: int, y: int, sigma: float, strength: float
) -> None:
    """Darken ``canvas`` under a blurred copy of ``alpha`` whose top-left is at ``(x, y)``.

    The blur runs on a copy reduced by about sigma / 2 (a soft shadow has no fine detail), so
    its cost hardly grows with the item's size.
    """
    sigma = max(1.0, sigma)
    d = max(1, int(sigma // 2))
    h, w = alpha.shape
    small = alpha
    if d > 1:
        small = cv2.resize(alpha, (max(1, w // d), max(1, h // d)), interpolation=cv2.INTER_AREA)
    pad = int(math.ceil(2.5 * sigma / d)) + 1
    small = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    small = cv2.GaussianBlur(small.astype(np.float32), (0, 0), sigma / d)
    # light that gets through, 0..255 (255: no shadow)
    light = cv2.convertScaleAbs(small, alpha=-strength, beta=255.0)
    if d > 1:
        light = cv2.resize(light, (light.shape[1] * d, light.shape[0] * d))
    sx, sy = x - pad * d, y - pad * d
    H, W = canvas.shape[:2]
    x0, y0 = max(sx, 0), max(sy, 0)
    x1, y1 = min(sx + light.shape[1], W), min(sy + light.shape[0], H)
    if x1 <= x0 or y1 <= y0:
        return
    gate = light[y0 - sy : y1 - sy, x0 - sx : x1 - sx]
    region = canvas[y0:y1, x0:x1]
    region[...] = cv2.multiply(region, cv2.merge([gate, gate, gate]), scale=1 / 255)
