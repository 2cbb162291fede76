"""Ground truth for RPC evaluation as arrays, with clear errors on bad input.

``RPCGroundTruth`` comes from an RPC/COCO annotation JSON (``from_json`` / ``from_dict``) or from
detectron2 dataset records (``from_records``); detections are looked up in it by dataset image
and category ids (``image_rows``, ``category_rows``: an unknown id is an error naming it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from dpsnet.data.catalogue import Catalogue
from dpsnet.utils.io import BadInputError, load_json

__all__ = ["RPCGroundTruth", "is_box", "short_repr"]


def short_repr(entry: Any, limit: int = 160) -> str:
    text = repr(entry)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_box(bbox: Any) -> bool:
    return (
        isinstance(bbox, (list, tuple))
        and len(bbox) == 4
        and all(isinstance(v, Real) and not isinstance(v, bool) for v in bbox)
    )


@dataclass
class RPCGroundTruth:
    """The images, categories and boxes of an annotation set, as arrays.

    Attributes:
        image_ids: (N,) int64 image ids, in file order.
        file_names: N file names.
        levels: N clutter levels ("easy", "medium", "hard"; "" when an image has none).
        category_ids: (K,) int64 category ids, sorted; "category index" means a row of this.
        category_names: K names.
        supercategories: K supercategory names ("" when absent).
        ann_image: (M,) int64 image index of each box.
        ann_category: (M,) int64 category index of each box.
        ann_bbox: (M, 4) float64 boxes, XYWH absolute.
        ann_area: (M,) float64 areas (the file's ``area`` where given, else w * h).
        ann_iscrowd: (M,) bool.
        source: what the ground truth was read from, for messages.
    """

    image_ids: np.ndarray
    file_names: list[str]
    levels: list[str]
    category_ids: np.ndarray
    category_names: list[str]
    supercategories: list[str]
    ann_image: np.ndarray
    ann_category: np.ndarray
    ann_bbox: np.ndarray
    ann_area: np.ndarray
    ann_iscrowd: np.ndarray
    source: str = "<ground truth>"

    @property
    def num_images(self) -> int:
        return int(self.image_ids.size)

    @property
    def num_categories(self) -> int:
        return int(self.category_ids.size)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> RPCGroundTruth:
        """Read an RPC/COCO annotation file (``__raw_Chinese_name_df`` and the like are ignored)."""
        return cls.from_dict(load_json(path), source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "<annotations>") -> RPCGroundTruth:
        """Build from a loaded RPC/COCO annotation dict.

        Raises:
            BadInputError: missing sections, duplicate ids, or boxes naming an unknown image or
                category; the message names ``source`` and the first offending entry.
        """
        if not isinstance(data, dict):
            raise BadInputError(
                f"{source}: expected a COCO/RPC annotation object, got {type(data).__name__}"
            )
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise BadInputError(f"{source}: missing or malformed '{key}' list")
        try:
            cats = sorted(data["categories"], key=lambda c: c["id"])
            category_ids = np.array([c["id"] for c in cats], dtype=np.int64)
            names = [str(c.get("name", c["id"])) for c in cats]
            supers = [str(c.get("supercategory", "")) for c in cats]
        except (KeyError, TypeError) as e:
            raise BadInputError(f"{source}: a category lacks an integer 'id' ({e})") from None
        images = data["images"]
        try:
            image_ids = np.array([img["id"] for img in images], dtype=np.int64)
        except (KeyError, TypeError, ValueError):
            bad = next(
                i for i, img in enumerate(images) if not isinstance(img, dict) or "id" not in img
            )
            raise BadInputError(
                f"{source}: images[{bad}] has no 'id': {short_repr(images[bad])}"
            ) from None
        anns = data["annotations"]
        for j, a in enumerate(anns):
            if not isinstance(a, dict) or any(
                k not in a for k in ("image_id", "category_id", "bbox")
            ):
                raise BadInputError(
                    f"{source}: annotations[{j}] needs image_id, category_id and bbox: "
                    + short_repr(a)
                )
        gt = cls(
            image_ids=image_ids,
            file_names=[str(img.get("file_name", "")) for img in images],
            levels=[str(img.get("level") or "") for img in images],
            category_ids=category_ids,
            category_names=names,
            supercategories=supers,
            ann_image=np.zeros(0, np.int64),
            ann_category=np.zeros(0, np.int64),
            ann_bbox=np.zeros((0, 4)),
            ann_area=np.zeros(0),
            ann_iscrowd=np.zeros(0, bool),
            source=source,
        )
        gt._check_unique_ids()
        where = f"{source} annotations"
        ann_image = gt.image_rows([a["image_id"] for a in anns], what=where)
        ann_category = gt.category_rows([a["category_id"] for a in anns], what=where)
        try:
            bbox = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(len(anns), 4)
        except (TypeError, ValueError):
            bad = next(j for j, a in enumerate(anns) if not is_box(a["bbox"]))
            raise BadInputError(
                f"{source}: annotations[{bad}] has a malformed bbox: {short_repr(anns[bad])}"
            ) from None
        area = np.array([a.get("area", -1.0) for a in anns], dtype=np.float64)
        area = np.where(area >= 0, area, bbox[:, 2] * bbox[:, 3])
        gt.ann_image, gt.ann_category, gt.ann_bbox, gt.ann_area = (
            ann_image,
            ann_category,
            bbox,
            area,
        )
        gt.ann_iscrowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        return gt

    @classmethod
    def from_records(
        cls, records: Sequence[dict], metadata: Any, source: str = "<dataset records>"
    ) -> RPCGroundTruth:
        """Build from detectron2 dataset records (contiguous ``category_id``, any ``bbox_mode``).

        Categories come from ``metadata.thing_classes``; their ids from the inverse of
        ``metadata.thing_dataset_id_to_contiguous_id`` when present (else the class index, as
        :class:`~dpsnet.data.catalogue.Catalogue` has it); supercategories
        from ``metadata.thing_supercategory_ids`` and ``supercategory_names`` when present.
        Each record's optional ``level`` is kept.
        """
        from detectron2.structures import BoxMode

        catalogue = Catalogue.from_metadata(metadata)
        classes = list(catalogue.names)
        contiguous_to_id = dict(enumerate(catalogue.ids))
        order = sorted(range(len(classes)), key=lambda c: contiguous_to_id[c])
        supers = [catalogue.supercategories[c] for c in order]
        contiguous_to_row = np.empty(len(classes), np.int64)
        contiguous_to_row[order] = np.arange(len(classes))
        ann_image, ann_cat, boxes, modes, crowd = [], [], [], [], []
        for row, rec in enumerate(records):
            for a in rec.get("annotations", []):
                ann_image.append(row)
                ann_cat.append(a["category_id"])
                boxes.append(list(a["bbox"]))
                modes.append(int(a.get("bbox_mode", BoxMode.XYWH_ABS)))
                crowd.append(bool(a.get("iscrowd", 0)))
        bbox = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        modes = np.array(modes, dtype=np.int64)
        for mode in set(modes.tolist()) - {int(BoxMode.XYWH_ABS)}:
            rows = modes == mode  # float64 arrays: a list would go through float32 tensors
            bbox[rows] = BoxMode.convert(bbox[rows], BoxMode(mode), BoxMode.XYWH_ABS)
        return cls(
            image_ids=np.array([r["image_id"] for r in records], dtype=np.int64),
            file_names=[str(r.get("file_name", "")) for r in records],
            levels=[str(r.get("level") or "") for r in records],
            category_ids=np.array([contiguous_to_id[c] for c in order], dtype=np.int64),
            category_names=[str(classes[c]) for c in order],
            supercategories=supers,
            ann_image=np.array(ann_image, dtype=np.int64),
            ann_category=contiguous_to_row[np.array(ann_cat, dtype=np.int64)],
            ann_bbox=bbox,
            ann_area=bbox[:, 2] * bbox[:, 3],
            ann_iscrowd=np.array(crowd, dtype=bool),
            source=source,
        )

    def _check_unique_ids(self) -> None:
        for what, ids in (("image", self.image_ids), ("category", self.category_ids)):
            uniq, counts = np.unique(ids, return_counts=True)
            if (counts > 1).any():
                raise BadInputError(
                    f"{self.source}: duplicate {what} id {int(uniq[counts > 1][0])}"
                )

    def image_rows(self, image_ids: Sequence, what: str = "results") -> np.ndarray:
        """Rows of ``image_ids`` in ``self.image_ids``; an unknown id raises naming the first.

        ``what`` names the list the ids come from (a file path) in the error message.
        """
        return _lookup(self.image_ids, image_ids, what, "image_id", self.source)

    def category_rows(self, category_ids: Sequence, what: str = "results") -> np.ndarray:
        """Category indices of ``category_ids``; an unknown id raises naming the first."""
        return _lookup(self.category_ids, category_ids, what, "category_id", self.source)

    def subset(self, rows: np.ndarray) -> RPCGroundTruth:
        """The ground truth of the images at ``rows`` (in that order), boxes re-indexed."""
        rows = np.asarray(rows, dtype=np.int64)
        new_row = np.full(self.num_images, -1, np.int64)
        new_row[rows] = np.arange(rows.size)
        keep = new_row[self.ann_image] >= 0
        return RPCGroundTruth(
            image_ids=self.image_ids[rows],
            file_names=[self.file_names[r] for r in rows],
            levels=[self.levels[r] for r in rows],
            category_ids=self.category_ids,
            category_names=self.category_names,
            supercategories=self.supercategories,
            ann_image=new_row[self.ann_image[keep]],
            ann_category=self.ann_category[keep],
            ann_bbox=self.ann_bbox[keep],
            ann_area=self.ann_area[keep],
            ann_iscrowd=self.ann_iscrowd[keep],
            source=self.source,
        )

    def counts(self) -> np.ndarray:
        """(N, K) int64 true counts per image and category (every box, as rpctool counts)."""
        flat = np.bincount(
            self.ann_image * self.num_categories + self.ann_category,
            minlength=self.num_images * self.num_categories,
        )
        return flat.reshape(self.num_images, self.num_categories)


def _lookup(
    known: np.ndarray, ids: Sequence, where: str, key: str, known_source: str
) -> np.ndarray:
    """Map ids to rows of ``known`` (unique ids); raise naming the first bad or unknown one."""
    types = {type(v) for v in ids}
    if bool in types or not all(issubclass(t, Integral) for t in types):
        bad = next(
            j for j, v in enumerate(ids) if not isinstance(v, Integral) or isinstance(v, bool)
        )
        raise BadInputError(f"{where}: entry {bad} has a non-integer {key} {ids[bad]!r}")
    try:
        arr = np.array(ids, dtype=np.int64).reshape(-1)
    except OverflowError:
        bad = next(j for j, v in enumerate(ids) if abs(v) >= 2**63)
        raise BadInputError(f"{where}: entry {bad} has an out-of-range {key} {ids[bad]}") from None
    if known.size:
        order = np.argsort(known, kind="stable")
        pos = np.searchsorted(known[order], arr).clip(0, known.size - 1)
        found = known[order][pos] == arr
    else:
        order, pos, found = (
            np.zeros(0, np.int64),
            np.zeros(arr.size, np.int64),
            np.zeros(arr.size, bool),
        )
    if not found.all():
        bad = np.flatnonzero(~found)
        raise BadInputError(
            f"{where}: entry {int(bad[0])} names {key} {int(arr[bad[0]])}, which is not in "
            f"{known_source} ({bad.size} entries name unknown {key}s)"
        )
    return order[pos].astype(np.int64)
