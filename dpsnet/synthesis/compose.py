"""Checkout scenes composed from segmented exemplars (the paper's synthesis, plus shadows).

One scene is a pure function of ``(seed, index)``, the parameters and the items: its level
comes from the index (``placement.level_of_index``); categories and instance counts follow the
level's ranges (RPC's scheme); each instance is an exemplar of its category, scaled and rotated
at random, put where its box overlaps placed boxes by at most ``max_iou`` (relaxed step by step
when nothing fits) and, while the limit is below 1, where it hides no earlier item beyond
``max_occluded``. Items cast soft shadows on what lies beneath. An owner map records which item
each pixel shows, so labels describe the *visible* part of every instance: its tight box, its
area, its mask (COCO RLE) and its centre point; instances hidden beyond ``max_occluded`` lose
their label. The finished scene gets sensor noise and photometric albumentations.

Three generators are derived from ``(seed, index)``, one each for the plan (what goes in), the
layout (where) and the look (background, light, noise, photometric), so that turning shadows off
or changing the photometric list leaves the layout and the labels unchanged.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import cv2
import numpy as np

from dpsnet.data.datasets.checkout import CLUTTER_LEVELS
from dpsnet.synthesis.backgrounds import Backgrounds
from dpsnet.synthesis.items import CutoutCache, Item
from dpsnet.synthesis.placement import (
    find_position,
    level_of_index,
    sample_instances,
)
from dpsnet.synthesis.rle import crop_to_rle
from dpsnet.synthesis.sprites import cast_shadow, occlusion_guard, paste_sprite, transform_sprite

logger = logging.getLogger(__name__)

_PLAN, _LAYOUT, _LOOK = 1, 2, 3  # generator streams of a scene

#: Stages timed per scene (``Scene.timings``), in pipeline order.
STAGES = ("plan", "background", "cutout", "transform", "place", "shadow", "paste", "labels")
STAGES += ("finish",)


def _pair(v, key: str, lo=None) -> tuple[float, float]:
    if len(v) != 2 or float(v[0]) > float(v[1]) or (lo is not None and float(v[0]) < lo):
        raise ValueError(f"SYNTHESIS.COMPOSE.{key} must be [min, max] with min <= max, got {v}")
    return float(v[0]), float(v[1])


@dataclass(frozen=True)
class ComposeParams:
    """Scene parameters (``cfg.SYNTHESIS.COMPOSE``; see dpsnet/config/synthesis.py for each key)."""

    image_size: tuple[int, int] = (800, 800)
    level_mix: tuple[float, ...] = (1.0, 1.0, 1.0)
    categories: tuple = ((3, 4), (5, 7), (8, 10))
    instances: tuple = ((3, 10), (10, 15), (15, 20))
    scale_range: tuple[float, float] = (0.4, 0.7)
    scale_unit: str = "image"
    rotation_range: tuple[float, float] = (0.0, 360.0)
    flip_prob: float = 0.0
    max_iou: float = 0.5
    iou_relax_step: float = 0.1
    placement_attempts: int = 30
    margin: float = 0.02
    max_occluded: float = 0.5
    guard_occlusion: bool = True
    min_visible_pixels: int = 16
    shadow: bool = True
    shadow_strength: tuple[float, float] = (0.3, 0.55)
    shadow_blur: float = 0.06
    shadow_offset: float = 0.08
    background_dir: str = ""
    num_generated_backgrounds: int = 16
    photometric: tuple[str, ...] = ()
    noise_std: float = 2.0
    cache_items: int = 1000

    def __post_init__(self):
        h, w = self.image_size
        if h < 16 or w < 16:
            raise ValueError(f"SYNTHESIS.COMPOSE.IMAGE_SIZE too small: {self.image_size}")
        if len(self.level_mix) != 3 or len(self.categories) != 3 or len(self.instances) != 3:
            raise ValueError(
                "SYNTHESIS.COMPOSE.LEVEL_MIX, CATEGORIES and INSTANCES need one entry per level "
                f"({', '.join(CLUTTER_LEVELS)})"
            )
        for name, c, n in zip(CLUTTER_LEVELS, self.categories, self.instances, strict=True):
            _pair(c, "CATEGORIES", 1)
            _pair(n, "INSTANCES", 1)
            if c[0] > n[1]:
                raise ValueError(
                    f"SYNTHESIS.COMPOSE: level {name} asks for at least {c[0]} categories but at "
                    f"most {n[1]} instances"
                )
        _pair(self.scale_range, "SCALE_RANGE", 1e-3)
        _pair(self.rotation_range, "ROTATION_RANGE")
        _pair(self.shadow_strength, "SHADOW.STRENGTH", 0.0)
        if self.scale_unit not in ("image", "pixel"):
            raise ValueError(
                f"SYNTHESIS.COMPOSE.SCALE_UNIT must be image or pixel, not {self.scale_unit!r}"
            )
        if not 0 <= self.max_occluded <= 1 or not 0 <= self.max_iou <= 1:
            raise ValueError("SYNTHESIS.COMPOSE.MAX_OCCLUDED and MAX_IOU must lie in [0, 1]")
        if self.iou_relax_step <= 0:
            raise ValueError("SYNTHESIS.COMPOSE.IOU_RELAX_STEP must be positive")
        if not 0 <= self.margin < 0.5:
            raise ValueError("SYNTHESIS.COMPOSE.MARGIN must lie in [0, 0.5)")

    @classmethod
    def from_config(cls, cfg) -> ComposeParams:
        c = cfg.SYNTHESIS.COMPOSE
        return cls(
            image_size=tuple(int(v) for v in c.IMAGE_SIZE),
            level_mix=tuple(float(v) for v in c.LEVEL_MIX),
            categories=tuple(tuple(int(x) for x in v) for v in c.CATEGORIES),
            instances=tuple(tuple(int(x) for x in v) for v in c.INSTANCES),
            scale_range=tuple(float(v) for v in c.SCALE_RANGE),
            scale_unit=c.SCALE_UNIT,
            rotation_range=tuple(float(v) for v in c.ROTATION_RANGE),
            flip_prob=float(c.FLIP_PROB),
            max_iou=float(c.MAX_IOU),
            iou_relax_step=float(c.IOU_RELAX_STEP),
            placement_attempts=int(c.PLACEMENT_ATTEMPTS),
            margin=float(c.MARGIN),
            max_occluded=float(c.MAX_OCCLUDED),
            guard_occlusion=bool(c.GUARD_OCCLUSION),
            min_visible_pixels=int(c.MIN_VISIBLE_PIXELS),
            shadow=bool(c.SHADOW.ENABLED),
            shadow_strength=tuple(float(v) for v in c.SHADOW.STRENGTH),
            shadow_blur=float(c.SHADOW.BLUR),
            shadow_offset=float(c.SHADOW.OFFSET),
            background_dir=c.BACKGROUND_DIR,
            num_generated_backgrounds=int(c.NUM_GENERATED_BACKGROUNDS),
            photometric=tuple(c.PHOTOMETRIC),
            noise_std=float(c.NOISE_STD),
            cache_items=int(c.CACHE_ITEMS),
        )


@dataclass
class Scene:
    """One composed scene.

    Attributes:
        image: BGR uint8 (H, W, 3).
        level: "easy", "medium" or "hard".
        annotations: one dict per labelled instance: ``category_id``, ``bbox`` [x, y, w, h] and
            ``area`` of the visible part, ``segmentation`` (COCO RLE of the visible part),
            ``point_xy`` (centre of the visible box), ``exemplar_id`` (image id of the item).
        planned: instances drawn for the scene; placed: instances pasted; dropped: pasted ones
            whose label was dropped (hidden beyond ``max_occluded`` or too small).
        relaxed: placements that needed an IoU limit above ``max_iou``.
        bad_items: image ids of exemplars that failed to load here (replaced by another).
        instances: every pasted instance in paste order: ``category_id``, ``exemplar_id``,
            ``sprite_box`` [x, y, w, h] of the whole sprite, ``visible`` (share of its pixels
            left visible), ``labelled``.
        owner: (H, W) int16 index of the pasted instance each pixel shows (-1: background).
        timings: CPU seconds of this thread per stage (``STAGES``); CPU, not wall time, so
            that other work on a shared machine does not inflate them.
    """

    image: np.ndarray
    level: str
    annotations: list
    planned: int
    placed: int
    dropped: int
    relaxed: int
    bad_items: list = field(default_factory=list)
    instances: list = field(default_factory=list)
    owner: np.ndarray | None = None
    timings: dict = field(default_factory=dict)


class SceneComposer:
    """Composes scenes from checked items; build one per process.

    Args:
        items: checked items (``items.check_items``), any order.
        params: scene parameters.
        seed: ``SYNTHESIS.SEED``.
    """

    def __init__(self, items: list[Item], params: ComposeParams, seed: int = 0):
        self.params, self.seed = params, int(seed)
        if not items:
            raise ValueError("no usable exemplar to compose scenes from")
        by_cat = defaultdict(list)
        for it in sorted(items, key=lambda i: i.image_id):
            by_cat[it.category_id].append(it)
        self.items_by_cat = dict(sorted(by_cat.items()))
        self.category_ids = list(self.items_by_cat)
        self.cache = CutoutCache(params.cache_items, self.max_scale)
        self.backgrounds = Backgrounds(
            params.image_size, self.seed, params.background_dir, params.num_generated_backgrounds
        )
        self.photometric = None
        if params.photometric:
            from dpsnet.data.augment import parse_albumentations

            self.photometric = parse_albumentations(
                list(params.photometric), key="SYNTHESIS.COMPOSE.PHOTOMETRIC"
            )
        h, w = params.image_size
        bank = np.random.default_rng([self.seed, 0x5EED, 7])
        noise = bank.standard_normal((h + 64, w + 64, 3), dtype=np.float32) * params.noise_std
        self.noise = np.round(noise).astype(np.int16)  # added to the uint8 scene by cv2.add
        self._bad: set[int] = set()

    def unit(self, item: Item) -> float:
        """Pixels of the scene per pixel of the item's photo at scale 1."""
        if self.params.scale_unit == "pixel":
            return 1.0
        h, w = self.params.image_size
        ph, pw = item.image_size
        if not ph or not pw:
            raise ValueError(f"item {item.image_id} has no image size: run check_items first")
        return math.sqrt(h * w / (ph * pw))

    def max_scale(self, item: Item) -> float:
        return self.params.scale_range[1] * self.unit(item)

    def _cutout(self, cat: int, pick: int, bad: list):
        """Cut-out of item ``pick`` of ``cat``, or of the next one that loads."""
        items = self.items_by_cat[cat]
        for k in range(len(items)):
            item = items[(pick + k) % len(items)]
            if item.image_id in self._bad:
                continue
            try:
                return item, self.cache.get(item)
            except Exception as e:  # noqa: BLE001  (any unreadable file: skip it, name it)
                self._bad.add(item.image_id)
                bad.append(item.image_id)
                logger.warning("Skipping exemplar %d (%s): %s", item.image_id, item.file_name, e)
        return None, None

    def compose(self, index: int, keep_owner: bool = False) -> Scene:
        """Compose scene ``index`` (deterministic in ``(seed, index)``)."""
        p = self.params
        t = dict.fromkeys(STAGES, 0.0)
        t0 = time.thread_time()
        H, W = p.image_size
        rng_plan, rng_layout, rng_look = (
            np.random.default_rng([self.seed, index, s]) for s in (_PLAN, _LAYOUT, _LOOK)
        )
        li = level_of_index(index, p.level_mix)
        cats = sample_instances(rng_plan, self.category_ids, p.categories[li], p.instances[li])
        n = len(cats)
        picks = rng_plan.integers(0, 1 << 30, size=n)
        scales = rng_plan.uniform(*p.scale_range, size=n)
        angles = rng_plan.uniform(*p.rotation_range, size=n)
        flips = rng_plan.random(n) < p.flip_prob
        t1 = time.thread_time()
        t["plan"] = t1 - t0

        canvas = self.backgrounds.draw(rng_look)
        light = rng_look.uniform(0, 2 * np.pi)
        strength = rng_look.uniform(*p.shadow_strength)
        t2 = time.thread_time()
        t["background"] = t2 - t1

        owner = np.full((H, W), -1, np.int16)
        m = int(round(p.margin * min(H, W)))
        bounds = (m, m, W - m, H - m)
        boxes = np.zeros((0, 4), np.int64)
        placed, vis, full = [], [], []
        bad, relaxed = [], 0
        keep = 1.0 - p.max_occluded
        for k in range(n):
            ta = time.thread_time()
            item, cut = self._cutout(cats[k], int(picks[k] % len(self.items_by_cat[cats[k]])), bad)
            tb = time.thread_time()
            t["cutout"] += tb - ta
            if item is None:
                continue
            sprite = transform_sprite(cut, scales[k] * self.unit(item), angles[k], flips[k], bounds)
            tc = time.thread_time()
            t["transform"] += tc - tb
            if sprite is None:
                continue
            alpha = sprite[..., 3]
            solid = alpha > 127
            area = int(np.count_nonzero(solid))
            if area == 0:
                continue
            sh, sw = solid.shape

            guard = None
            if p.guard_occlusion and vis:
                guard = occlusion_guard(owner, solid, np.asarray(vis), keep * np.asarray(full))
            pos = find_position(
                sw,
                sh,
                bounds,
                boxes,
                rng_layout,
                max_iou_limit=p.max_iou,
                relax_step=p.iou_relax_step,
                attempts=p.placement_attempts,
                accept=guard,
            )
            x, y = pos.x, pos.y
            relaxed += pos.iou_limit > p.max_iou
            td = time.thread_time()
            t["place"] += td - tc
            if p.shadow and strength > 0:
                size = max(sh, sw)
                off = p.shadow_offset * size
                dx, dy = int(round(off * np.cos(light))), int(round(off * np.sin(light)))
                cast_shadow(canvas, alpha, x + dx, y + dy, p.shadow_blur * size, strength)
            te = time.thread_time()
            t["shadow"] += te - td
            paste_sprite(canvas, sprite, x, y)
            region = owner[y : y + sh, x : x + sw]
            if vis:
                under = region[solid]
                covered = np.bincount(under[under >= 0], minlength=len(vis))
                vis = [int(v - c) for v, c in zip(vis, covered[: len(vis)], strict=True)]
            region[solid] = len(placed)
            vis.append(area)
            full.append(area)
            placed.append((item, x, y, sw, sh))
            boxes = np.concatenate([boxes, [[x, y, x + sw, y + sh]]])
            t["paste"] += time.thread_time() - te

        tf = time.thread_time()
        annotations, dropped = [], 0
        instances = []
        for k, (item, x, y, sw, sh) in enumerate(placed):
            labelled = vis[k] >= keep * full[k] and vis[k] >= max(1, p.min_visible_pixels)
            instances.append(
                {
                    "category_id": item.category_id,
                    "exemplar_id": item.image_id,
                    "sprite_box": [x, y, sw, sh],
                    "visible": vis[k] / full[k],
                    "labelled": bool(labelled),
                }
            )
            if not labelled:
                dropped += 1
                continue
            crop = owner[y : y + sh, x : x + sw] == k
            bx, by, bw, bh = cv2.boundingRect(crop.view(np.uint8))
            annotations.append(
                {
                    "category_id": item.category_id,
                    "bbox": [x + bx, y + by, bw, bh],
                    "area": int(vis[k]),
                    "segmentation": crop_to_rle(crop, x, y, H, W),
                    "point_xy": [x + bx + bw / 2, y + by + bh / 2],
                    "exemplar_id": item.image_id,
                }
            )
        tg = time.thread_time()
        t["labels"] = tg - tf
        image = self._finish(canvas, rng_look)
        t["finish"] = time.thread_time() - tg
        return Scene(
            image=image,
            level=CLUTTER_LEVELS[li],
            annotations=annotations,
            planned=n,
            placed=len(placed),
            dropped=dropped,
            relaxed=int(relaxed),
            bad_items=bad,
            instances=instances,
            owner=owner if keep_owner else None,
            timings=t,
        )

    def _finish(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self.params
        H, W = p.image_size
        if p.noise_std > 0:
            oy, ox = (int(v) for v in rng.integers(0, 65, size=2))
            image = cv2.add(image, self.noise[oy : oy + H, ox : ox + W], dtype=cv2.CV_8U)
        seed = int(rng.integers(0, 2**31 - 1))
        if self.photometric is not None:
            self.photometric.set_random_seed(seed)
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            image = cv2.cvtColor(self.photometric(image=rgb)["image"], cv2.COLOR_RGB2BGR)
        return image
