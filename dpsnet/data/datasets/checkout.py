"""Any COCO/RPC-format checkout data as a detectron2 dataset: loader, lazy metadata, registrar.

The one loader behind every dpsnet registrar (RPC, D2S, the mini world, your own data):
``load_checkout_json`` turns a COCO-style JSON (RPC's extra keys welcome: ``level``,
``point_xy``, ``__raw_Chinese_name_df``) into detectron2 records. Registration reads nothing:
records are loaded when ``DatasetCatalog.get`` is called, and category metadata (class names,
supercategories) the first time someone reads it from ``MetadataCatalog``.
"""

import json
import logging
import os
from collections import defaultdict

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.structures import BoxMode

from dpsnet.utils.io import BadInputError, load_json

logger = logging.getLogger(__name__)

#: The clutter levels RPC uses, in order; any other ``level`` value is an error. The one place
#: they are named: everything else (evaluation, synthesis, the mini world) imports this.
CLUTTER_LEVELS = ("easy", "medium", "hard")

#: Metadata keys derived from a JSON's ``categories`` (filled lazily by ``CheckoutMetadata``).
CATEGORY_KEYS = (
    "thing_classes",
    "thing_dataset_id_to_contiguous_id",
    "supercategory_names",
    "thing_supercategory_ids",
)

_FAST_SCAN_BYTES = 4 << 20  # JSONs larger than this get their categories by a targeted scan


def read_categories(json_file: str | os.PathLike) -> list:
    """The ``categories`` list of a COCO/RPC JSON, without parsing the whole of a large file.

    Returns:
        list[dict]: each with at least ``id`` and ``name``.

    Raises:
        BadInputError: the file is missing, malformed, or has no usable ``categories``.
    """
    path = os.fspath(json_file)
    if os.path.isfile(path) and os.path.getsize(path) > _FAST_SCAN_BYTES:
        with open(path, "rb") as f:
            raw = f.read()
        key = raw.find(b'"categories"')
        if key >= 0:
            start = raw.find(b"[", key)
            try:
                cats, _ = json.JSONDecoder().raw_decode(raw[start:].decode("utf-8", "replace"))
                _validate_categories(cats, path)
                return cats
            except (ValueError, BadInputError):
                pass  # e.g. the key appeared inside a string: fall back to a full parse
    data = load_json(path)
    if not isinstance(data, dict) or "categories" not in data:
        raise BadInputError(f"{path}: no top-level 'categories' list (not a COCO/RPC JSON?)")
    _validate_categories(data["categories"], path)
    return data["categories"]


def _validate_categories(cats, path: str) -> None:
    if not isinstance(cats, list) or not cats:
        raise BadInputError(f"{path}: 'categories' must be a non-empty list")
    for c in cats:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise BadInputError(f"{path}: category entry without 'id' and 'name': {c!r}")
    ids = [c["id"] for c in cats]
    if len(set(ids)) != len(ids):
        raise BadInputError(f"{path}: duplicate category ids in 'categories'")


def category_metadata(categories: list) -> dict:
    """Class metadata from a ``categories`` list (sorted by id; contiguous ids follow that order).

    Returns:
        dict with ``thing_classes`` (names), ``thing_dataset_id_to_contiguous_id``,
        ``supercategory_names`` (in order of first appearance) and ``thing_supercategory_ids``
        (contiguous class index -> index into ``supercategory_names``; a category without a
        supercategory gets its own name as supercategory).
    """
    cats = sorted(categories, key=lambda c: c["id"])
    supers, sc_ids = [], []
    for c in cats:
        sc = c.get("supercategory") or c["name"]
        if sc not in supers:
            supers.append(sc)
        sc_ids.append(supers.index(sc))
    return {
        "thing_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
        "supercategory_names": supers,
        "thing_supercategory_ids": sc_ids,
    }


class CheckoutMetadata(Metadata):
    """detectron2 ``Metadata`` whose category keys are read from a JSON on first access.

    ``categories_json`` (set at registration) names the file; nothing is read until one of
    ``CATEGORY_KEYS`` (or ``as_dict()``) is asked for. Picklable like ``Metadata``.
    """

    def __getattr__(self, key):
        d = self.__dict__
        if key in CATEGORY_KEYS and "categories_json" in d and not d.get("_categories_loaded"):
            self._load_categories()
            return d[key]
        return super().__getattr__(key)

    def _load_categories(self) -> None:
        d = self.__dict__
        d["_categories_loaded"] = True
        try:
            meta = category_metadata(read_categories(d["categories_json"]))
        except BaseException:
            d["_categories_loaded"] = False
            raise
        for k, v in meta.items():
            d.setdefault(k, v)  # values given at registration win

    def as_dict(self):
        if "categories_json" in self.__dict__ and not self.__dict__.get("_categories_loaded"):
            self._load_categories()
        return {k: v for k, v in super().as_dict().items() if not k.startswith("_")}


def layout_dataset(cfg) -> str | None:
    """The dataset whose metadata lays out a config's counting view (its supercategories):
    ``DATASETS.TRAIN[0]``, else ``DATASETS.TEST[0]``; None when the config names neither."""
    return next(iter([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]), None)


def read_layout_categories(cfg) -> None:
    """Read, now, the categories JSON a config's counting view needs (its supercategories).

    The tools call it before they build a model (``dpsnet.engine``: ``load_config`` and the
    Trainer), so that the model's ``from_config`` finds the metadata in memory and reads no
    file. Nothing is read when ``MODEL.COUNTING_HEAD.LEVELS`` has no "supercategory", when the
    dataset is not registered lazily, or when its file is absent (building then says so).

    Raises:
        BadInputError: the categories JSON exists but is not usable (one line naming it).
    """
    name = layout_dataset(cfg)
    if "supercategory" not in cfg.MODEL.COUNTING_HEAD.LEVELS or name not in MetadataCatalog.list():
        return
    meta = MetadataCatalog.get(name)
    path = meta.__dict__.get("categories_json")
    if isinstance(meta, CheckoutMetadata) and path and os.path.isfile(path):
        meta.get("thing_supercategory_ids", None)  # the first access reads the file


def require_categories_in_memory(name: str | None) -> None:
    """Raise unless dataset ``name``'s category metadata is in memory; reads no file.

    Raises:
        BadInputError: the lazily registered dataset's categories JSON does not exist.
        ValueError: it exists but was not read (the tool calls :func:`read_layout_categories`).
    """
    meta = MetadataCatalog.get(name) if name and name in MetadataCatalog.list() else None
    d = meta.__dict__ if isinstance(meta, CheckoutMetadata) else {}
    path = d.get("categories_json")
    if not path or "thing_supercategory_ids" in d:
        return
    if not os.path.isfile(path):
        raise BadInputError(f"dataset {name!r}: categories file not found: {path}")
    raise ValueError(
        f"dataset {name!r}: its categories ({path}) are not read yet; a model builds from "
        "metadata in memory: call read_layout_categories(cfg) from dpsnet.data.datasets (as "
        "dpsnet.engine.load_config does) before building it"
    )


def _valid_segmentation(segm):
    """The segmentation if it is a usable polygon list or RLE, else None (RPC writes [[]])."""
    if isinstance(segm, dict):
        return segm if "counts" in segm and "size" in segm else None
    if isinstance(segm, list):
        polys = [p for p in segm if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
        return polys or None
    return None


def load_checkout_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    id_map: dict | None = None,
    level: str | None = None,
    with_masks: bool = True,
    filter_empty: bool = False,
) -> list:
    """Load a COCO/RPC JSON into detectron2 records.

    Args:
        json_file: the annotation file.
        image_root: folder that image ``file_name``s are relative to.
        id_map: dataset category id -> contiguous id; default: from this file's categories
            (sorted by id).
        level: keep only images of this level (``"easy"``, ``"medium"``, ``"hard"``).
        with_masks: keep valid ``segmentation`` (polygons or RLE) on annotations.
        filter_empty: drop images without annotations.

    Returns:
        list[dict]: records with ``file_name``, ``height``, ``width``, ``image_id``, ``level``
        (None when absent) and ``annotations`` (each ``bbox`` [x, y, w, h] with
        ``bbox_mode=BoxMode.XYWH_ABS``, contiguous ``category_id``, ``iscrowd`` and, with
        masks, ``segmentation``). Boxes of zero size are dropped with a warning.

    Raises:
        BadInputError: missing/malformed file, an annotation naming an unknown image or
            category, or an unknown level; the message names the file.
    """
    json_file = os.fspath(json_file)
    if level is not None and level not in CLUTTER_LEVELS:
        raise ValueError(f"level must be one of {CLUTTER_LEVELS}, got {level!r}")
    data = load_json(json_file)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise BadInputError(f"{json_file}: no top-level 'images' list (not a COCO/RPC JSON?)")
    if id_map is None:
        if not data.get("categories"):
            raise BadInputError(f"{json_file}: no 'categories' (and no id_map given)")
        _validate_categories(data["categories"], json_file)
        id_map = category_metadata(data["categories"])["thing_dataset_id_to_contiguous_id"]
    anns_by_image = defaultdict(list)
    for a in data.get("annotations") or ():
        anns_by_image[a.get("image_id")].append(a)
    image_root = os.fspath(image_root)
    join = os.path.join
    xywh = BoxMode.XYWH_ABS
    records, image_ids, n_degenerate = [], set(), 0
    for img in data["images"]:
        img_id = img.get("id")
        if img_id in image_ids:
            raise BadInputError(f"{json_file}: duplicate image id {img_id}")
        image_ids.add(img_id)
        img_level = img.get("level")
        if img_level is not None and img_level not in CLUTTER_LEVELS:
            raise BadInputError(
                f"{json_file}: image {img_id} has level {img_level!r},"
                f" expected one of {CLUTTER_LEVELS}"
            )
        if level is not None and img_level != level:
            continue
        objs = []
        for a in anns_by_image.get(img_id, ()):
            x, y, w, h = a["bbox"]
            if w <= 0 or h <= 0:
                n_degenerate += 1
                continue
            try:
                cat = id_map[a["category_id"]]
            except KeyError:
                raise BadInputError(
                    f"{json_file}: annotation {a.get('id')} has unknown category_id "
                    f"{a.get('category_id')!r}"
                ) from None
            obj = {
                "bbox": [x, y, w, h],
                "bbox_mode": xywh,
                "category_id": cat,
                "iscrowd": a.get("iscrowd", 0),
            }
            if a.get("category_set"):  # set-valued pseudo-labels (DISTILL.CLASS_SET_RATIO)
                try:
                    obj["category_set"] = sorted(id_map[c] for c in a["category_set"])
                except (KeyError, TypeError):
                    raise BadInputError(
                        f"{json_file}: annotation {a.get('id')} has a category_set with an "
                        f"unknown category id: {a['category_set']!r}"
                    ) from None
            if with_masks:
                segm = a.get("segmentation")
                if segm:  # RPC writes [] or [[]]: no mask
                    segm = _valid_segmentation(segm)
                    if segm is not None:
                        obj["segmentation"] = segm
            objs.append(obj)
        if filter_empty and not objs:
            continue
        records.append(
            {
                "file_name": join(image_root, img["file_name"]),
                "height": img["height"],
                "width": img["width"],
                "image_id": img_id,
                "level": img_level,
                "annotations": objs,
            }
        )
    orphans = set(anns_by_image) - image_ids
    if orphans:
        raise BadInputError(
            f"{json_file}: annotations refer to unknown image id(s) {sorted(orphans, key=str)[:5]}"
        )
    if n_degenerate:
        logger.warning("%s: dropped %d boxes of zero size", json_file, n_degenerate)
    logger.info("Loaded %d images from %s", len(records), json_file)
    return records


def unregister_dataset(name: str) -> None:
    """Remove ``name`` from both catalogs (no error when it is not registered)."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def register_checkout_dataset(
    name: str,
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    metadata: dict | None = None,
    level: str | None = None,
    categories_json: str | os.PathLike | None = None,
    evaluator_type: str | None = "rpc",
    with_masks: bool = True,
    filter_empty: bool = False,
) -> None:
    """Register COCO/RPC-format checkout data under ``name``; reads nothing now.

    Re-registering a name replaces the earlier registration (idempotent, no error).

    Args:
        name: dataset name for ``DatasetCatalog`` / ``MetadataCatalog``.
        json_file: COCO/RPC annotation file (images may carry ``level``).
        image_root: folder of the images.
        metadata: extra metadata (wins over what is derived from the JSON).
        level: register only the images of this level.
        categories_json: file whose ``categories`` define the classes (default ``json_file``);
            give the training JSON here so that several sets share one class order.
        evaluator_type: ``"rpc"`` for labelled checkout sets, ``"coco"`` for exemplars/D2S,
            None for unlabelled data.
        with_masks, filter_empty: passed to ``load_checkout_json``.

    Metadata keys: ``thing_classes``, ``thing_dataset_id_to_contiguous_id``,
    ``supercategory_names``, ``thing_supercategory_ids`` (lazy, from ``categories_json``),
    ``json_file``, ``image_root``, ``categories_json``, ``evaluator_type``, ``level``.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    categories_json = os.fspath(categories_json) if categories_json else json_file
    unregister_dataset(name)

    def _load():
        meta = MetadataCatalog.get(name)
        return load_checkout_json(
            json_file,
            image_root,
            id_map=meta.thing_dataset_id_to_contiguous_id,
            level=level,
            with_masks=with_masks,
            filter_empty=filter_empty,
        )

    DatasetCatalog.register(name, _load)
    meta = CheckoutMetadata(name=name)
    meta.__dict__.update(
        json_file=json_file,
        image_root=image_root,
        categories_json=categories_json,
        evaluator_type=evaluator_type,
        level=level,
    )
    meta.__dict__.update(metadata or {})
    MetadataCatalog[name] = meta
