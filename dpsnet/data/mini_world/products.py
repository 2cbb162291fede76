"""The mini world's product catalogue: specs (shape, colours, print) and their rendered sprites.

A product is drawn once, top-down, as a BGR sprite with an alpha mask; exemplars and checkout
images are both made from that sprite, so a product looks the same in both (only pose, scale,
lighting and background change). Look-alike pairs share every design choice except a detail
(the colour and text of a small badge, or a bottle's cap), as real product lines do.
"""

import colorsys
from dataclasses import dataclass, replace

import cv2
import numpy as np

#: Supercategories in the order products are dealt to them (round robin).
SUPERCATEGORIES = ("box", "can", "bottle", "bag", "tube")

_PATTERNS = ("hstripes", "dots", "diag", "checker", "waves", "vstripes", "gradient", "band")
_LOGOS = ("circle", "triangle", "diamond", "star", "square")
_SYLLABLES = ("ka", "zo", "mi", "ru", "te", "lo", "vi", "na", "pe", "su", "do", "ki", "ba", "fu")
_DETAIL_WORDS = ("ORIG", "LITE", "ZERO", "MAX", "MINT", "BBQ", "MILD", "HOT")


@dataclass(frozen=True)
class ProductSpec:
    """Everything that decides how one product looks.

    Attributes:
        category_id: the product's RPC-style category id (1-based).
        name: category name, e.g. ``"box_kazo"``; look-alikes get a suffix (``"box_kazo_lite"``).
        supercategory: one of ``SUPERCATEGORIES``.
        size_frac: the product's long side in a checkout image, as a fraction of the image side.
        aspect: short side / long side of the top-down silhouette.
        base, accent, ink, logo_color, badge_color: BGR colours (0..255).
        pattern, logo: print pattern and logo shape names.
        brand: printed brand text; badge_text: the small badge's text (the look-alike detail).
        lookalike_of: category id of the product this one copies except for the badge, or None.
    """

    category_id: int
    name: str
    supercategory: str
    size_frac: float
    aspect: float
    base: tuple
    accent: tuple
    ink: tuple
    logo_color: tuple
    badge_color: tuple
    pattern: str
    logo: str
    brand: str
    badge_text: str
    lookalike_of: int | None = None


def _hsv(h: float, s: float, v: float) -> tuple:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (int(b * 255), int(g * 255), int(r * 255))


def make_catalogue(num_products: int, lookalike_pairs: int, rng: np.random.Generator) -> list:
    """Design ``num_products`` distinct products, ``lookalike_pairs`` of them look-alike copies.

    Returns:
        list[ProductSpec] ordered by category id (1..num_products).
    """
    if num_products < 2:
        raise ValueError(f"the mini world needs at least 2 products, got {num_products}")
    lookalike_pairs = max(0, min(lookalike_pairs, num_products // 2))
    n_unique = num_products - lookalike_pairs
    golden = 0.618033988749895
    hue0 = rng.random()
    brands = set()
    specs = []
    for i in range(n_unique):
        sc = SUPERCATEGORIES[i % len(SUPERCATEGORIES)]
        hue = hue0 + i * golden
        while True:
            brand = "".join(rng.choice(_SYLLABLES, size=2)).upper()
            if brand not in brands:
                brands.add(brand)
                break
        aspect = {
            "box": rng.uniform(0.55, 0.75),
            "can": 1.0,
            "bottle": rng.uniform(0.30, 0.38),
            "bag": rng.uniform(0.62, 0.8),
            "tube": rng.uniform(0.26, 0.32),
        }[sc]
        lo, hi = {"can": (0.13, 0.19), "tube": (0.2, 0.26), "bottle": (0.23, 0.28)}.get(
            sc, (0.15, 0.27)
        )
        specs.append(
            ProductSpec(
                category_id=0,
                name=f"{sc}_{brand.lower()}",
                supercategory=sc,
                size_frac=float(rng.uniform(lo, hi)),
                aspect=float(aspect),
                base=_hsv(hue, rng.uniform(0.55, 0.9), rng.uniform(0.6, 0.95)),
                accent=_hsv(
                    hue + rng.uniform(0.3, 0.7), rng.uniform(0.4, 0.9), rng.uniform(0.5, 1)
                ),
                ink=(255, 255, 255) if rng.random() < 0.5 else (25, 25, 25),
                logo_color=_hsv(hue + 0.5, 0.9, 0.9),
                badge_color=_hsv(hue + 0.25, 0.9, 0.95),
                pattern=_PATTERNS[(i * 3 + i // len(_PATTERNS)) % len(_PATTERNS)],
                logo=_LOGOS[i % len(_LOGOS)],
                brand=brand,
                badge_text=_DETAIL_WORDS[0],
            )
        )
    # Look-alikes copy an original of the first supercategories (one per supercategory first).
    for j in range(lookalike_pairs):
        src = specs[j % n_unique]
        word = _DETAIL_WORDS[1 + j % (len(_DETAIL_WORDS) - 1)]
        twin = replace(
            src,
            name=f"{src.name}_{word.lower()}",
            badge_color=_hsv(
                colorsys.rgb_to_hsv(*[c / 255 for c in src.badge_color[::-1]])[0] + 0.45, 0.95, 0.9
            ),
            badge_text=word,
            lookalike_of=j % n_unique + 1,
        )
        specs.append(twin)
    # Interleave so that category ids do not sort look-alikes last; ids follow the final order.
    order = sorted(
        range(len(specs)), key=lambda k: (SUPERCATEGORIES.index(specs[k].supercategory), k)
    )
    specs = [specs[k] for k in order]
    id_of_old = {k: new + 1 for new, k in enumerate(order)}
    out = []
    for new, s in enumerate(specs):
        look = None if s.lookalike_of is None else id_of_old[s.lookalike_of - 1]
        out.append(replace(s, category_id=new + 1, lookalike_of=look))
    return out


def _silhouette(shape: str, w: int, h: int) -> np.ndarray:
    """Anti-aliased alpha (float32, HxW in [0, 1]) of a product's top-down outline."""
    s = 4  # draw at 4x with integer coordinates, then area-downsample: smooth edges
    W, H = w * s, h * s
    m = np.zeros((H, W), np.uint8)
    if shape == "can":
        cv2.circle(m, (W // 2, H // 2), min(W, H) // 2 - s, 255, -1)
    elif shape == "box":
        cv2.rectangle(m, (s, s), (W - s, H - s), 255, -1)
    elif shape == "bottle":
        body, r = int(W * 0.7), H // 3
        cv2.rectangle(m, (r, 0), (body, H - 1), 255, -1)
        cv2.rectangle(m, (0, r), (body, H - 1 - r), 255, -1)
        for cy in (r, H - 1 - r):
            cv2.circle(m, (r, cy), r, 255, -1)
        neck = [
            (body, 0),
            (int(W * 0.8), int(H * 0.3)),
            (int(W * 0.8), int(H * 0.7)),
            (body, H - 1),
        ]
        cv2.fillPoly(m, [np.array(neck, np.int32)], 255)
        cv2.rectangle(m, (int(W * 0.8), int(H * 0.3)), (W - 1, int(H * 0.7)), 255, -1)
    elif shape == "bag":
        teeth = 7
        ys = np.linspace(0, H - 1, 2 * teeth + 1)
        left = [(int(s * 2 + (k % 2) * W * 0.04), int(y)) for k, y in enumerate(ys)]
        right = [(int(W - 1 - s * 2 - (k % 2) * W * 0.04), int(y)) for k, y in enumerate(ys)][::-1]
        cv2.fillPoly(m, [np.array(left + right, np.int32)], 255)
    elif shape == "tube":
        teeth = 5
        ys = np.linspace(0, H - 1, 2 * teeth + 1)
        crimp = [(int((k % 2) * W * 0.03), int(y)) for k, y in enumerate(ys)]
        body = [(int(W * 0.85), int(H * 0.82)), (int(W * 0.85), int(H * 0.18))]
        cv2.fillPoly(m, [np.array(crimp + body, np.int32)], 255)
        cv2.rectangle(m, (int(W * 0.84), int(H * 0.28)), (W - 1, int(H * 0.72)), 255, -1)
    else:
        raise ValueError(f"unknown product shape {shape!r}")
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _pattern(kind: str, w: int, h: int, period: float) -> np.ndarray:
    """A {0,1}-ish float mask (HxW) of where the accent colour is printed."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    p = period
    if kind == "hstripes":
        return ((y // (p * 0.5)) % 2).astype(np.float32)
    if kind == "vstripes":
        return ((x // (p * 0.6)) % 2).astype(np.float32)
    if kind == "diag":
        return (((x + y) // (p * 0.6)) % 2).astype(np.float32)
    if kind == "checker":
        return ((x // p + y // p) % 2).astype(np.float32)
    if kind == "dots":
        dx, dy = x % p - p / 2, y % p - p / 2
        return (dx * dx + dy * dy < (p * 0.3) ** 2).astype(np.float32)
    if kind == "waves":
        return ((np.sin(x / p * 2 * np.pi) * p * 0.35 + y) % p < p * 0.45).astype(np.float32)
    if kind == "gradient":
        return x / max(w - 1, 1)
    if kind == "band":
        return ((y > h * 0.2) & (y < h * 0.35) | (y > h * 0.65) & (y < h * 0.8)).astype(np.float32)
    raise ValueError(f"unknown pattern {kind!r}")


def _logo(img: np.ndarray, kind: str, center: tuple, r: int, color: tuple) -> None:
    cx, cy = center
    if kind == "circle":
        cv2.circle(img, center, r, color, -1, cv2.LINE_AA)
        return
    if kind == "square":
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), color, -1, cv2.LINE_AA)
        return
    n, inner = {"triangle": (3, None), "diamond": (4, None), "star": (5, 0.45)}[kind]
    pts = []
    for k in range(n * (2 if inner else 1)):
        a = -np.pi / 2 + k * np.pi / (n if inner else n / 2)
        rr = r if not inner or k % 2 == 0 else r * inner
        pts.append((int(cx + rr * np.cos(a)), int(cy + rr * np.sin(a))))
    cv2.fillPoly(img, [np.array(pts, np.int32)], color, cv2.LINE_AA)


def _text(img: np.ndarray, text: str, box: tuple, color: tuple) -> None:
    """Write ``text`` as large as fits in ``box`` = (x0, y0, x1, y1), centred."""
    x0, y0, x1, y1 = box
    font = cv2.FONT_HERSHEY_DUPLEX
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = min((x1 - x0) / tw, (y1 - y0) / th) * 0.9
    thick = max(1, int(round(scale * 2.2)))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    org = (int((x0 + x1 - tw) / 2), int((y0 + y1 + th) / 2))
    cv2.putText(img, text, org, font, scale, color, thick, cv2.LINE_AA)


def render_product(spec: ProductSpec, long_side: int) -> tuple:
    """Draw a product top-down: its long axis horizontal.

    Args:
        spec: the product.
        long_side: sprite width in pixels.

    Returns:
        (bgr, alpha): uint8 array (H, W, 3) and float32 alpha (H, W) in [0, 1], with
        W = long_side and H = round(long_side * spec.aspect).
    """
    w = int(long_side)
    h = max(8, int(round(long_side * spec.aspect)))
    alpha = _silhouette(spec.supercategory, w, h)
    base = np.array(spec.base, np.float32)
    accent = np.array(spec.accent, np.float32)
    pat = _pattern(spec.pattern, w, h, period=max(6.0, min(w, h) / 3.5))[..., None]
    img = base * (1 - pat * 0.85) + accent * (pat * 0.85)
    img = np.ascontiguousarray(img.astype(np.uint8))
    sc = spec.supercategory
    # Printed label area: where the brand text goes (shape-dependent).
    if sc == "can":
        c = (w // 2, h // 2)
        cv2.circle(img, c, int(w * 0.47), spec.accent, max(2, w // 14), cv2.LINE_AA)
        cv2.circle(img, c, int(w * 0.5), (190, 190, 195), max(2, w // 24), cv2.LINE_AA)
        label = (int(w * 0.18), int(h * 0.38), int(w * 0.82), int(h * 0.62))
        logo_c, logo_r = (w // 2, int(h * 0.24)), int(h * 0.1)
        badge_c, badge_r = (w // 2, int(h * 0.77)), int(h * 0.11)
    elif sc == "bottle":
        label = (int(w * 0.12), int(h * 0.22), int(w * 0.62), int(h * 0.78))
        logo_c, logo_r = (int(w * 0.06), h // 2), int(h * 0.14)
        badge_c, badge_r = None, None  # the cap is the bottle's detail
        cv2.rectangle(img, (int(w * 0.88), 0), (w - 1, h - 1), spec.badge_color, -1)
    elif sc == "tube":
        label = (int(w * 0.1), int(h * 0.25), int(w * 0.62), int(h * 0.75))
        logo_c, logo_r = (int(w * 0.7), h // 2), int(h * 0.16)
        badge_c, badge_r = None, None
        cv2.rectangle(img, (int(w * 0.85), 0), (w - 1, h - 1), spec.badge_color, -1)
    else:  # box, bag
        label = (int(w * 0.08), int(h * 0.34), int(w * 0.7), int(h * 0.66))
        logo_c, logo_r = (int(w * 0.84), int(h * 0.27)), int(h * 0.17)
        badge_c, badge_r = (int(w * 0.84), int(h * 0.72)), int(h * 0.19)
    x0, y0, x1, y1 = label
    band = tuple(int(v) for v in np.clip(base * 0.35 + 255 * 0.65, 0, 255))
    if spec.ink == (255, 255, 255):
        band = tuple(int(v) for v in base * 0.35)
    cv2.rectangle(img, (x0, y0), (x1, y1), band, -1)
    _text(img, spec.brand, (x0 + 2, y0 + 2, x1 - 2, y1 - 2), spec.ink)
    _logo(img, spec.logo, logo_c, max(3, logo_r), spec.logo_color)
    if badge_c is not None:
        cv2.circle(img, badge_c, badge_r, spec.badge_color, -1, cv2.LINE_AA)
        _text(
            img,
            spec.badge_text[:1],
            (
                badge_c[0] - badge_r,
                badge_c[1] - badge_r,
                badge_c[0] + badge_r,
                badge_c[1] + badge_r,
            ),
            (20, 20, 20),
        )
    # Shape-dependent shading gives the flat print some volume.
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    if sc == "can":
        shade = 1.0 - 0.25 * np.clip(xx * xx + yy * yy, 0, 1)
    elif sc in ("bottle", "tube"):
        shade = 0.78 + 0.3 * np.cos(yy * np.pi / 2) + 0.0 * xx
    elif sc == "bag":
        shade = 0.9 + 0.1 * np.sin(xx * 7.0 + yy * 2.0)
    else:
        edge = np.minimum(np.minimum(1 - np.abs(xx), 1 - np.abs(yy)) * min(w, h) / 6, 1)
        shade = 0.8 + 0.2 * edge
    img = np.clip(img.astype(np.float32) * shade[..., None], 0, 255).astype(np.uint8)
    img[alpha <= 0] = 0
    return img, alpha
