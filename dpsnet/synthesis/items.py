"""The items the composer pastes: exemplars read from a masks index, checked, cut out, cached.

``tools/extract_masks.py`` writes ``OUT/index.json`` (see the team's synthesis interface): one
entry per exemplar with its image, box extent ``[x0, y0, x1, y1]``, a box-sized 0/255 mask
``OUT/masks/<image_id>.png`` and ``kept`` (pose pruning and quality). This module reads that
index and never looks at how the masks were made.

A cut-out is the exemplar's pixels inside its mask, tight to the mask, stored premultiplied
(colour already multiplied by alpha, zero outside) as uint8 BGRA: resizing and rotating a
premultiplied sprite leaves no dark fringe. When the composer never needs more than half (a
quarter, an eighth) of an exemplar's resolution, the photo is decoded at that reduced size
(JPEG's DCT scaling), which is several times cheaper on large exemplars.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dpsnet.utils.io import BadInputError, image_size, load_json, read_image, try_read_image

logger = logging.getLogger(__name__)

_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
_REDUCED[8] = cv2.IMREAD_REDUCED_COLOR_8


@dataclass(frozen=True)
class Item:
    """One usable exemplar of the masks index.

    Attributes:
        image_id: the exemplar's image id in its dataset.
        category_id: its dataset category id.
        file_name: absolute path of the exemplar photo.
        extent: ``(x0, y0, x1, y1)`` integer box extent the mask covers.
        mask_path: absolute path of the box-sized 0/255 mask.
        image_size: ``(height, width)`` of the photo (0, 0 until ``check_item`` has run).
        mask_crc: CRC-32 of the mask's pixels (0 until ``check_item`` has run), so that
            re-extracted masks change the output's fingerprint.
    """

    image_id: int
    category_id: int
    file_name: str
    extent: tuple[int, int, int, int]
    mask_path: str
    image_size: tuple[int, int] = (0, 0)
    mask_crc: int = 0


def load_index(path: str | os.PathLike) -> tuple[list[Item], list[dict], dict]:
    """Read a masks index; keep its items with ``kept`` true.

    Returns:
        (items sorted by image id, the exemplar dataset's categories, the index's other keys).

    Raises:
        BadInputError: the file is missing, malformed, has no categories, or an item lacks a
            field; the message names the file.
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise BadInputError(f"{path}: no 'items' list (not a masks index of extract_masks.py?)")
    categories = data.get("categories")
    if not categories and data.get("json_file"):
        from dpsnet.data.datasets import read_categories

        categories = read_categories(data["json_file"])
    if not categories:
        raise BadInputError(f"{path}: no 'categories' (and no readable 'json_file')")
    items = []
    for k, it in enumerate(data["items"]):
        try:
            if not it.get("kept", False):
                continue
            mask = Path(it["mask"])
            items.append(
                Item(
                    image_id=int(it["image_id"]),
                    category_id=int(it["category_id"]),
                    file_name=str(it["file_name"]),
                    extent=tuple(int(v) for v in it["extent"]),
                    mask_path=str(mask if mask.is_absolute() else path.parent.resolve() / mask),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BadInputError(
                f"{path}: item {k} is malformed ({type(e).__name__}: {e})"
            ) from None
    items.sort(key=lambda i: i.image_id)
    meta = {k: v for k, v in data.items() if k not in ("items", "categories")}
    return items, categories, meta


def read_mask(item: Item) -> np.ndarray:
    """The item's box-sized mask as bool (h, w).

    Raises:
        BadInputError: unreadable mask, or its size is not that of the item's extent.
    """
    m = try_read_image(item.mask_path, cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise BadInputError(f"{item.mask_path}: mask missing or unreadable")
    x0, y0, x1, y1 = item.extent
    if m.shape != (y1 - y0, x1 - x0):
        raise BadInputError(
            f"{item.mask_path}: mask is {m.shape[1]}x{m.shape[0]}, the box extent is "
            f"{x1 - x0}x{y1 - y0}"
        )
    return m > 127


def check_item(item: Item) -> tuple[Item | None, str]:
    """Check that an item can be pasted: a non-empty mask, a readable photo holding its extent.

    Returns:
        (the item with its photo's size filled in, "") or (None, why it is unusable).
    """
    try:
        mask = read_mask(item)
    except BadInputError as e:
        return None, str(e)
    if not mask.any():
        return None, f"{item.mask_path}: mask is empty"
    # The smallest decode is enough to tell a corrupt file and costs little on large photos.
    try:  # the header's size first (INPUT.MAX_IMAGE_PIXELS), then the smallest decode
        w, h = image_size(item.file_name)
        read_image(item.file_name, cv2.IMREAD_REDUCED_COLOR_8)
    except BadInputError as e:
        return None, str(e)
    x0, y0, x1, y1 = item.extent
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h or x1 <= x0 or y1 <= y0:
        return None, f"{item.file_name}: extent {list(item.extent)} lies outside the {w}x{h} image"
    crc = zlib.crc32(np.packbits(mask).tobytes())  # of the pixels: PNG bytes vary by encoder
    return Item(**{**item.__dict__, "image_size": (h, w), "mask_crc": crc}), ""


def check_items(items: list[Item], pool=None) -> tuple[list[Item], list[dict]]:
    """Check every item (in ``pool`` when given); log a warning naming each unusable one.

    Returns:
        (usable items in the input order, ``[{"image_id", "file_name", "reason"}]`` skipped).
    """
    results = pool.map(check_item, items, chunksize=16) if pool else map(check_item, items)
    good, skipped = [], []
    for item, (checked, reason) in zip(items, results, strict=True):
        if checked is None:
            logger.warning("Skipping exemplar %d (%s): %s", item.image_id, item.file_name, reason)
            skipped.append(
                {"image_id": item.image_id, "file_name": item.file_name, "reason": reason}
            )
        else:
            good.append(checked)
    return good, skipped


@dataclass(frozen=True)
class Cutout:
    """A premultiplied BGRA sprite (uint8, tight to its mask) and its size at full resolution."""

    bgra: np.ndarray
    full_size: tuple[int, int]  # (height, width) of the sprite in the photo's own pixels


def make_cutout(item: Item, max_scale: float = 1.0) -> Cutout:
    """Cut ``item`` out of its photo.

    Args:
        item: a checked item.
        max_scale: the largest scale the composer will draw it at; the photo is decoded at
            1/2, 1/4 or 1/8 of its size when that still leaves at least that resolution.

    Raises:
        BadInputError: the photo or mask cannot be read, or the mask is empty.
    """
    factor = 1
    while factor < 8 and max_scale * factor * 2 <= 1.0:
        factor *= 2
    image = try_read_image(item.file_name, _REDUCED[factor])
    if image is None:
        raise BadInputError(f"{item.file_name}: image missing, corrupt or not an image")
    mask = read_mask(item)
    ys, xs = np.nonzero(mask)
    if not len(ys):
        raise BadInputError(f"{item.mask_path}: mask is empty")
    x0, y0 = item.extent[:2]
    # tight box of the mask, in the photo's full-resolution pixels
    tx0, ty0, tx1, ty1 = x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1
    mask = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    if factor > 1:
        rx0, ry0 = tx0 // factor, ty0 // factor
        rx1 = min(image.shape[1], -(-tx1 // factor))
        ry1 = min(image.shape[0], -(-ty1 // factor))
        crop = image[ry0:ry1, rx0:rx1]
        alpha = cv2.resize(
            mask.astype(np.uint8) * 255,
            (crop.shape[1], crop.shape[0]),
            interpolation=cv2.INTER_AREA,
        )
    else:
        crop = image[ty0:ty1, tx0:tx1]
        alpha = mask.astype(np.uint8) * 255
    bgra = np.empty((*alpha.shape, 4), np.uint8)
    # premultiply (alpha is 0/255 at full resolution, soft at reduced ones)
    bgra[..., :3] = cv2.multiply(crop, cv2.merge([alpha, alpha, alpha]), scale=1 / 255)
    bgra[..., 3] = alpha
    return Cutout(bgra, (int(ty1 - ty0), int(tx1 - tx0)))


class CutoutCache:
    """Least-recently-used cache of cut-outs (one per worker process).

    Args:
        capacity: cut-outs kept.
        max_scale: callable ``item -> largest scale it will be drawn at``.
    """

    def __init__(self, capacity: int, max_scale):
        self.capacity = max(1, int(capacity))
        self.max_scale = max_scale
        self._cache: OrderedDict[int, Cutout] = OrderedDict()

    def get(self, item: Item) -> Cutout:
        key = item.image_id
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        cut = make_cutout(item, self.max_scale(item))
        self._cache[key] = cut
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return cut


def index_from_full_masks(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    masks_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
) -> Path:
    """Write a masks index (extract_masks.py's format) from known full-image masks.

    For data whose true masks exist (the mini world's ``train2019_true_masks/<stem>.png``):
    tests and benchmarks of the composer need no mask extraction. Every exemplar is kept.

    Returns:
        path of the written ``index.json``.
    """
    from dpsnet.utils.io import atomic_write_image, atomic_write_json

    data = load_json(json_file)
    out_dir, image_root, masks_dir = Path(out_dir), Path(image_root), Path(masks_dir)
    boxes = {a["image_id"]: a for a in data.get("annotations", [])}
    items = []
    for im in data["images"]:
        ann = boxes.get(im["id"])
        if ann is None:
            continue
        full = try_read_image(
            str(masks_dir / (Path(im["file_name"]).stem + ".png")), cv2.IMREAD_GRAYSCALE
        )
        if full is None:
            raise BadInputError(f"{masks_dir}: no readable mask for {im['file_name']}")
        x, y, w, h = (float(v) for v in ann["bbox"])
        x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
        x1, y1 = min(im["width"], int(np.ceil(x + w))), min(im["height"], int(np.ceil(y + h)))
        box = np.where(full[y0:y1, x0:x1] > 127, 255, 0).astype(np.uint8)
        rel = f"masks/{im['id']}.png"
        atomic_write_image(out_dir / rel, box)
        area = int(np.count_nonzero(box))
        items.append(
            {
                "image_id": im["id"],
                "file_name": str((image_root / im["file_name"]).resolve()),
                "category_id": ann["category_id"],
                "bbox": ann["bbox"],
                "extent": [x0, y0, x1, y1],
                "mask": rel,
                "quality": 1.0,
                "coarse_quality": 1.0,
                "area": area,
                "area_ratio": 1.0,
                "kept": area > 0,
                "drop_reason": "" if area else "empty",
            }
        )
    path = out_dir / "index.json"
    atomic_write_json(
        path,
        {
            "version": 1,
            "dataset": str(json_file),
            "json_file": str(json_file),
            "image_root": str(image_root),
            "items": items,
            "categories": data["categories"],
        },
    )
    return path


def mini_world_index(world, out_dir: str | os.PathLike) -> Path:
    """A masks index of a mini world's exemplars (``dpsnet.data.mini_world.MiniWorld``) from their
    true masks, its planted bad poses dropped as pose pruning would drop them: the composer's
    input for tests and benchmarks, without the masks stage.

    Returns:
        path of the written ``index.json``.
    """
    from dpsnet.utils.io import atomic_write_json

    paths = world.paths
    index = index_from_full_masks(
        paths["train_json"], paths["train_images"], paths["true_masks"], out_dir
    )
    bad = set(load_json(paths["planted_bad_poses"])["bad_image_ids"])
    data = load_json(index)
    for it in data["items"]:
        if it["image_id"] in bad:
            it["kept"], it["drop_reason"] = False, "pose"
    atomic_write_json(index, data)
    return index
