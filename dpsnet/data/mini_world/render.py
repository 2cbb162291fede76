"""Drawing the mini world's images: exemplar shots on a turntable and checkout trays.

Every function takes its randomness from the ``rng`` it is given, so an image depends only on
its own seed. Sprites are premultiplied (colour already multiplied by alpha), float32, so
resizing and rotating them never leaves dark fringes.

The two looks differ on purpose (the domain gap of RPC): exemplars are bright, evenly lit, cool,
sharp, on a light grey turntable with a faint contact shadow; checkout images are warmer, unevenly
lit (a gradient plus a hot spot), slightly blurred and noisy, on a textured tray, with cast
shadows and items occluding one another.
"""

import cv2
import numpy as np

#: Clutter levels: (min, max) categories and (min, max) instances per checkout image. RPC's
#: scheme (3-4 categories / <=10 items easy, 5-7 / 10-15 medium, more / 15-20 hard) scaled to the
#: mini world, whose products cover a larger share of the tray than RPC's do.
LEVEL_ITEMS = {
    "easy": ((2, 4), (3, 6)),
    "medium": ((4, 6), (7, 10)),
    "hard": ((6, 8), (11, 14)),
}

#: Largest box IoU allowed between two items of a checkout image, and the least share of an
#: item that must stay visible once later items are put on top of it.
MAX_BOX_IOU = 0.4
MIN_VISIBLE = 0.5


def premultiply(bgr: np.ndarray, alpha: np.ndarray) -> tuple:
    """(uint8 HxWx3, float32 HxW) -> (premultiplied float32 HxWx3, float32 HxW)."""
    return bgr.astype(np.float32) * alpha[..., None], alpha.astype(np.float32)


def transform_sprite(sprite: tuple, sx: float, sy: float, angle_deg: float) -> tuple:
    """Scale a sprite by (sx, sy) along its own axes, then rotate it by ``angle_deg``.

    Returns:
        (premult, alpha) on the tight canvas that holds the rotated sprite.
    """
    pm, a = sprite
    h, w = a.shape
    nw, nh = max(2, int(round(w * sx))), max(2, int(round(h * sy)))
    interp = cv2.INTER_AREA if nw < w and nh < h else cv2.INTER_LINEAR
    pm = cv2.resize(pm, (nw, nh), interpolation=interp)
    a = cv2.resize(a, (nw, nh), interpolation=interp)
    rad = np.deg2rad(angle_deg)
    c, s = abs(np.cos(rad)), abs(np.sin(rad))
    cw, ch = int(np.ceil(nw * c + nh * s)) + 2, int(np.ceil(nw * s + nh * c)) + 2
    m = cv2.getRotationMatrix2D((nw / 2, nh / 2), angle_deg, 1.0)
    m[0, 2] += cw / 2 - nw / 2
    m[1, 2] += ch / 2 - nh / 2
    pm = cv2.warpAffine(pm, m, (cw, ch), flags=cv2.INTER_LINEAR, borderValue=0)
    a = cv2.warpAffine(a, m, (cw, ch), flags=cv2.INTER_LINEAR, borderValue=0)
    ys, xs = np.nonzero(a > 0.02)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return pm[y0:y1, x0:x1], a[y0:y1, x0:x1]


def composite(canvas: np.ndarray, pm: np.ndarray, a: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend a premultiplied sprite onto ``canvas`` (float32 HxWx3) at top-left (x, y)."""
    h, w = a.shape
    region = canvas[y : y + h, x : x + w]
    region *= 1.0 - a[..., None]
    region += pm


def darken(canvas: np.ndarray, shadow: np.ndarray, x: int, y: int, strength: float) -> None:
    """Multiply ``canvas`` by (1 - strength * shadow) where the shadow lands (clipped)."""
    H, W = canvas.shape[:2]
    h, w = shadow.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return
    s = shadow[y0 - y : y1 - y, x0 - x : x1 - x]
    canvas[y0:y1, x0:x1] *= 1.0 - strength * s[..., None]


def soft_shadow(a: np.ndarray, sigma: float) -> tuple:
    """Blurred alpha padded so that the blur is not cut off: (shadow HxW, pad in pixels)."""
    pad = int(np.ceil(2.5 * sigma))
    padded = cv2.copyMakeBorder(a, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    return cv2.GaussianBlur(padded, (0, 0), sigma), pad


def _smooth_noise(shape: tuple, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise in [-1, 1] (bicubic upsampling of a coarse random grid)."""
    g = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    return cv2.resize(g, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def exemplar_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A light, cool grey photo box with a round turntable (float32 HxWx3, 0..255)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tone = rng.uniform(205, 232)
    bg = np.empty((size, size, 3), np.float32)
    bg[...] = tone - 18 * yy[..., None]
    r2 = ((xx - 0.5) / 0.48) ** 2 + ((yy - 0.56) / 0.42) ** 2
    disk = (r2 < 1).astype(np.float32)
    rim = ((r2 >= 0.93) & (r2 < 1)).astype(np.float32)
    bg += (8 * disk - 25 * rim)[..., None]
    bg *= np.array([1.03, 1.0, 0.97], np.float32)  # cool cast (BGR)
    return bg


def tray_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A textured checkout tray with a raised darker edge (float32 HxWx3, 0..255)."""
    palettes = [(95, 105, 120), (150, 170, 185), (70, 75, 78), (120, 140, 130), (165, 150, 135)]
    col = np.array(palettes[rng.integers(len(palettes))], np.float32) * rng.uniform(0.85, 1.15)
    # Texture: low-frequency blotches plus a fine grain, drawn at half size (cheap), one channel.
    half = max(8, size // 2)
    tex = 12 * _smooth_noise((half, half), 6, rng)
    tex += cv2.GaussianBlur(rng.standard_normal((half, half), dtype=np.float32), (0, 0), 0.8) * 10
    e = max(1, int(half * rng.uniform(0.02, 0.035)))
    shade = np.ones((half, half), np.float32)
    shade[:e], shade[-e:], shade[:, :e], shade[:, -e:] = 0.65, 0.65, 0.65, 0.65
    tex = cv2.resize(tex, (size, size), interpolation=cv2.INTER_LINEAR)
    shade = cv2.resize(shade, (size, size), interpolation=cv2.INTER_NEAREST)
    bg = (col[None, None, :] + tex[..., None]) * shade[..., None]
    return bg.astype(np.float32)


def render_exemplar(
    sprite: tuple,
    size: int,
    long_px: float,
    view: dict,
    rng,
    backgrounds: list | None = None,
    noise: np.ndarray | None = None,
) -> tuple:
    """One product on the turntable, seen from one camera.

    Args:
        sprite: premultiplied sprite (long axis horizontal).
        size: image side in pixels.
        long_px: the product's long side in this image before foreshortening.
        view: ``{"foreshortening": f, "axis": "x"|"y", "rotation_deg": a, "camera": c}``;
            f < 1 squeezes the product along one of its own axes (a tilted camera; very small f
            is a thin side view).
        rng: random generator of this image.
        backgrounds: optional bank of ``exemplar_background`` images to pick from.
        noise: optional ``noise_field`` (at least ``size`` wide) to crop sensor noise from.

    Returns:
        (image uint8 HxWx3, true mask bool HxW).
    """
    pm, a = sprite
    scale = long_px / a.shape[1]
    f = view["foreshortening"]
    sx, sy = (scale * f, scale) if view["axis"] == "x" else (scale, scale * f)
    pm, a = transform_sprite((pm, a), sx, sy, view["rotation_deg"])
    if backgrounds:
        canvas = backgrounds[int(rng.integers(len(backgrounds)))].copy()
    else:
        canvas = exemplar_background(size, rng)
    h, w = a.shape
    margin = max(2, size // 40)
    x = int(rng.integers(margin, max(margin + 1, size - w - margin + 1)))
    y = int(rng.integers(margin, max(margin + 1, size - h - margin + 1)))
    x, y = min(x, size - w), min(y, size - h)
    shadow, pad = soft_shadow(a, max(1.0, 0.04 * max(h, w)))
    darken(canvas, shadow, x + 1 - pad, y + max(2, h // 30) - pad, 0.2)
    composite(canvas, pm, a, x, y)
    cam = view["camera"]
    gain = 1.0 + 0.05 * np.cos(cam * 2.1) + np.array([0.02, 0.0, -0.02]) * np.sin(cam * 1.3)
    canvas *= gain.astype(np.float32)
    if noise is None:
        noise = noise_field(size, rng)
    ox, oy = rng.integers(0, noise.shape[0] - size + 1, size=2)
    canvas += 1.5 * noise[oy : oy + size, ox : ox + size, None]
    mask = np.zeros((size, size), bool)
    mask[y : y + h, x : x + w] = a > 0.5
    return cv2.convertScaleAbs(canvas), mask


def _box_iou(b: tuple, boxes: list) -> float:
    if not boxes:
        return 0.0
    bb = np.asarray(boxes, np.float32)
    ix = np.clip(np.minimum(b[2], bb[:, 2]) - np.maximum(b[0], bb[:, 0]), 0, None)
    iy = np.clip(np.minimum(b[3], bb[:, 3]) - np.maximum(b[1], bb[:, 1]), 0, None)
    inter = ix * iy
    area = (b[2] - b[0]) * (b[3] - b[1])
    union = area + (bb[:, 2] - bb[:, 0]) * (bb[:, 3] - bb[:, 1]) - inter
    return float((inter / union).max())


def pick_items(level: str, category_ids: list, rng, levels: dict = LEVEL_ITEMS) -> list:
    """Category id of every instance of one checkout image, following ``levels[level]``."""
    (c0, c1), (n0, n1) = levels[level]
    n_cat = int(rng.integers(min(c0, len(category_ids)), min(c1, len(category_ids)) + 1))
    n_inst = max(n_cat, int(rng.integers(n0, n1 + 1)))
    cats = list(rng.choice(category_ids, size=n_cat, replace=False))
    cats += list(rng.choice(cats, size=n_inst - n_cat, replace=True))
    return [int(c) for c in rng.permutation(cats)]


def noise_field(size: int, rng) -> np.ndarray:
    """A (2 * size, 2 * size) float32 field of unit Gaussian noise to crop sensor noise from."""
    return rng.standard_normal((2 * size, 2 * size), dtype=np.float32)


def _vary(bg: np.ndarray, rng) -> np.ndarray:
    """A cheap new background from a bank entry: flips and a transpose (always a copy).

    Items are drawn into the returned canvas in place, so it must never be the bank entry
    itself: ``np.ascontiguousarray`` returns its input unchanged when no flip applied (1 draw in
    8), and the items of that image then stayed in the bank as unannotated ghosts in every
    later image drawn on that tray by the same worker.
    """
    if rng.random() < 0.5:
        bg = bg[::-1]
    if rng.random() < 0.5:
        bg = bg[:, ::-1]
    if rng.random() < 0.5:
        bg = bg.transpose(1, 0, 2)
    return np.array(bg, order="C", copy=True)


def render_checkout(
    sprites: dict,
    specs: dict,
    size: int,
    item_cats: list,
    rng,
    trays: list | None = None,
    noise: np.ndarray | None = None,
) -> tuple:
    """A checkout tray seen from above with the given items (some may not fit and are dropped).

    Args:
        sprites: category id -> premultiplied sprite.
        specs: category id -> ProductSpec.
        size: image side.
        item_cats: category id of each item to place, in placement order (later on top).
        rng: random generator of this image.
        trays: optional bank of ``tray_background`` images to vary instead of drawing anew.
        noise: optional ``noise_field`` to crop the sensor noise from.

    Returns:
        (image uint8 HxWx3, items): one dict per placed item with ``category_id``,
        ``bbox`` [x, y, w, h] of its visible part, ``area`` (visible pixels), ``visible``
        (visible share), ``full_area``, and ``mask_crop`` = (x, y, bool crop of the visible mask).
    """
    tint = np.ones(3, np.float32)
    if trays:
        canvas = _vary(trays[int(rng.integers(len(trays)))], rng)
        tint = rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    else:
        canvas = tray_background(size, rng)
    owner = np.full((size, size), -1, np.int32)
    margin = int(size * 0.035)
    light = rng.uniform(0, 2 * np.pi)
    shadow_dir = np.array([np.cos(light), np.sin(light)])
    placed, boxes, full_areas, vis = [], [], [], []
    for cat in item_cats:
        pm0, a0 = sprites[cat]
        long_px = specs[cat].size_frac * size * rng.uniform(0.94, 1.06)
        s = long_px / a0.shape[1]
        squeeze = rng.uniform(0.9, 1.0)
        pm, a = transform_sprite((pm0, a0), s * squeeze, s, rng.uniform(0, 360))
        h, w = a.shape
        if w > size - 2 * margin or h > size - 2 * margin:
            continue
        m = a > 0.5
        area = int(m.sum())
        for _attempt in range(40):
            x = int(rng.integers(margin, size - margin - w + 1))
            y = int(rng.integers(margin, size - margin - h + 1))
            box = (x, y, x + w, y + h)
            if _box_iou(box, boxes) > MAX_BOX_IOU:
                continue
            under = owner[y : y + h, x : x + w][m]
            covered = np.bincount(under[under >= 0], minlength=len(placed))
            new_vis = np.asarray(vis, np.int64) - covered[: len(vis)]
            if len(vis) and (new_vis < MIN_VISIBLE * np.asarray(full_areas)).any():
                continue
            break
        else:
            continue
        k = len(placed)
        shadow, pad = soft_shadow(a, max(1.0, 0.06 * max(h, w)))
        off = shadow_dir * 0.08 * max(h, w)
        darken(canvas, shadow, x + int(off[0]) - pad, y + int(off[1]) - pad, 0.5)
        composite(canvas, pm, a, x, y)
        owner[y : y + h, x : x + w][m] = k
        vis = list(new_vis) + [area] if len(vis) else [area]
        placed.append((cat, x, y, w, h))
        boxes.append(box)
        full_areas.append(area)
    # Lighting of the checkout camera: a gradient, a hot spot, a warm cast, blur and noise.
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32) / 31 - 0.5
    hx, hy = rng.uniform(-0.4, 0.4, size=2)
    phi = rng.uniform(0, 2 * np.pi)
    gain = 1 + rng.uniform(0.15, 0.35) * (xx * np.cos(phi) + yy * np.sin(phi))
    gain += rng.uniform(0.1, 0.3) * np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / 0.05)
    gain *= rng.uniform(0.85, 1.05)
    cast = np.array([0.9, 1.0, 1.08], np.float32) * rng.uniform(0.95, 1.05, size=3) * tint
    gain = (gain[..., None] * cast).astype(np.float32)
    gain = cv2.resize(gain, (size, size), interpolation=cv2.INTER_LINEAR)
    canvas = cv2.multiply(canvas, gain)
    canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.5, 0.9))
    if noise is None:
        noise = noise_field(size, rng)
    ox, oy = rng.integers(0, noise.shape[0] - size + 1, size=2)
    canvas += 3.0 * noise[oy : oy + size, ox : ox + size, None]
    image = cv2.convertScaleAbs(canvas)
    items = []
    for k, (cat, x, y, w, h) in enumerate(placed):
        crop = owner[y : y + h, x : x + w] == k
        ys, xs = np.nonzero(crop)
        bx0, by0, bx1, by1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        items.append(
            {
                "category_id": int(cat),
                "bbox": [int(x + bx0), int(y + by0), int(bx1 - bx0), int(by1 - by0)],
                "area": int(crop.sum()),
                "visible": float(crop.sum() / full_areas[k]),
                "full_area": int(full_areas[k]),
                "mask_crop": (x, y, crop),
            }
        )
    return image, items
