"""What a model's classes are and how its counting view lays them out: one place for each.

:class:`Catalogue` is the product catalogue (dataset category id, name and supercategory of every
contiguous class the detector predicts). It is built from detectron2 metadata, from a COCO/RPC
JSON's ``categories`` or from the plain-data dict a self-contained checkpoint stores, so a model
can name its products without its training dataset being registered.

:class:`CountingLayout` is what the counting view's channels mean: the levels "total" (one
channel), "supercategory" (one per supercategory) and "category" (one per class), laid out one
after another, and which channel each class feeds. The density targets, the pseudo-labeller's
agreement test, the RPC evaluator and the receipts all use it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LEVELS", "Catalogue", "CountingLayout"]

#: The counting view's levels, coarsest first (also their channel order in every config here).
LEVELS = ("total", "supercategory", "category")

#: Layouts tried, in order, when only the number of channels is known (the RPC evaluator's rule).
SINGLE_LEVELS = (("category",), ("supercategory",), ("total",))


@dataclass(frozen=True)
class Catalogue:
    """The products of a model, indexed by contiguous class id (0..K-1).

    Attributes:
        ids: (K,) dataset category id of each class (the class index itself when the source has
            no id map, e.g. metadata without ``thing_dataset_id_to_contiguous_id``).
        names: (K,) product names.
        class_to_super: (K,) index into ``supercategory_names`` of each class (-1: unknown); empty
            when the source has no supercategories.
        supercategory_names: (S,) supercategories, in the channel order of a per-supercategory
            count (may be empty while ``class_to_super`` is not: then S = max + 1).
    """

    ids: tuple[int, ...]
    names: tuple[str, ...]
    class_to_super: tuple[int, ...] = ()
    supercategory_names: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "ids", tuple(int(i) for i in self.ids))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "class_to_super", tuple(int(s) for s in self.class_to_super))
        object.__setattr__(
            self, "supercategory_names", tuple(str(s) for s in self.supercategory_names)
        )
        if len(self.ids) != len(self.names):
            raise ValueError(f"catalogue: {len(self.ids)} ids but {len(self.names)} names")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("catalogue: duplicate category ids")
        if self.class_to_super and len(self.class_to_super) != len(self.names):
            raise ValueError(
                f"catalogue: {len(self.class_to_super)} supercategory indices for "
                f"{len(self.names)} classes"
            )

    # --- constructors -------------------------------------------------------------------------

    @classmethod
    def from_categories(cls, categories: Sequence[dict]) -> Catalogue:
        """From a COCO ``categories`` list, in the order dpsnet's registrar gives them (by id)."""
        from dpsnet.data.datasets.checkout import category_metadata

        meta = category_metadata(list(categories))
        id_map = meta["thing_dataset_id_to_contiguous_id"]
        ids = sorted(id_map, key=id_map.get)
        return cls(
            ids, meta["thing_classes"], meta["thing_supercategory_ids"], meta["supercategory_names"]
        )

    @classmethod
    def from_json(cls, json_file: str | os.PathLike) -> Catalogue:
        """From a COCO/RPC JSON's ``categories`` (a large file is scanned, not parsed whole)."""
        from dpsnet.data.datasets.checkout import read_categories

        return cls.from_categories(read_categories(json_file))

    @classmethod
    def from_metadata(cls, metadata, num_classes: int | None = None) -> Catalogue:
        """From detectron2 metadata (``thing_classes`` and, if present,
        ``thing_dataset_id_to_contiguous_id``, ``supercategory_names``,
        ``thing_supercategory_ids``).

        Args:
            metadata: a ``Metadata`` (or None: unnamed classes).
            num_classes: K, the classes the model predicts (default: the metadata's); classes
                beyond the metadata are named ``class <i>``.
        """
        names = list(getattr(metadata, "thing_classes", None) or [])
        k = len(names) if num_classes is None else int(num_classes)
        names = [names[i] if i < len(names) else f"class {i}" for i in range(k)]
        ids = list(range(k))
        id_map = getattr(metadata, "thing_dataset_id_to_contiguous_id", None) or {}
        for dataset_id, contiguous in id_map.items():
            if 0 <= contiguous < k:
                ids[contiguous] = int(dataset_id)
        if len(set(ids)) != k:  # an id map that covers only some classes: keep the index
            ids = list(range(k))
        super_ids = getattr(metadata, "thing_supercategory_ids", None)
        supers = list(getattr(metadata, "supercategory_names", None) or [])
        class_to_super: list[int] = []
        if super_ids is not None:
            raw = np.asarray(list(super_ids), dtype=np.int64)
            if not supers and raw.size:  # ids without names: dense ranks in sorted order
                raw = np.unique(raw, return_inverse=True)[1].astype(np.int64)
            class_to_super = [int(raw[i]) if i < raw.size else -1 for i in range(k)]
        return cls(ids, names, class_to_super, supers)

    @classmethod
    def from_dict(cls, data: dict) -> Catalogue:
        """Inverse of :meth:`to_dict` (what a checkpoint stores)."""
        return cls(
            data["ids"],
            data["names"],
            data.get("class_to_super") or (),
            data.get("supercategory_names") or (),
        )

    def to_dict(self) -> dict:
        """Plain data (lists of ints and strings) for a checkpoint or a JSON file."""
        return {
            "ids": list(self.ids),
            "names": list(self.names),
            "class_to_super": list(self.class_to_super),
            "supercategory_names": list(self.supercategory_names),
        }

    # --- views --------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def num_supercategories(self) -> int:
        if self.supercategory_names:
            return len(self.supercategory_names)
        return max(self.class_to_super, default=-1) + 1

    @property
    def supercategories(self) -> list[str]:
        """(K,) supercategory name of each class ("" when unknown)."""
        names = self.supercategory_names
        return [
            names[s] if 0 <= s < len(names) else ""
            for s in (self.class_to_super or [-1] * self.num_classes)
        ]

    def id_to_contiguous(self) -> dict[int, int]:
        """Dataset category id -> contiguous class id (detectron2's
        ``thing_dataset_id_to_contiguous_id``)."""
        return {cid: i for i, cid in enumerate(self.ids)}

    def to_categories(self) -> list[dict]:
        """COCO ``categories`` (``supercategory`` where known), in contiguous order."""
        cats = []
        for cid, name, sc in zip(self.ids, self.names, self.supercategories):
            cat = {"id": cid, "name": name}
            if sc:
                cat["supercategory"] = sc
            cats.append(cat)
        return cats

    def metadata_fields(self) -> dict:
        """The detectron2 metadata fields dpsnet's registrar sets for these classes."""
        out = {
            "thing_classes": list(self.names),
            "thing_dataset_id_to_contiguous_id": self.id_to_contiguous(),
        }
        if self.class_to_super:
            out["thing_supercategory_ids"] = list(self.class_to_super)
            out["supercategory_names"] = list(self.supercategory_names)
        return out


@dataclass(frozen=True)
class CountingLayout:
    """What the counting view's channels mean: levels laid out one after another.

    "total" is one channel, "supercategory" one per supercategory, "category" one per contiguous
    class. With ``levels=("total", "category")`` and K classes there are 1 + K channels; class k
    lands in channel 0 and channel 1 + k.

    Attributes:
        levels: non-empty subset of :data:`LEVELS`, in channel order.
        num_classes: K, the number of contiguous classes.
        class_to_super: K supercategory indices (0..S-1), one per class; needed only when
            "supercategory" is among ``levels``.
        num_supers: S (None: ``max(class_to_super) + 1``; give it when the last supercategories
            have no class).
    """

    levels: tuple[str, ...]
    num_classes: int
    class_to_super: tuple[int, ...] | None = None
    num_supers: int | None = field(default=None)

    def __post_init__(self):
        object.__setattr__(self, "levels", tuple(self.levels))
        object.__setattr__(self, "num_classes", int(self.num_classes))
        if not self.levels or any(lv not in LEVELS for lv in self.levels):
            raise ValueError(f"count levels must be a non-empty subset of {LEVELS}: {self.levels}")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"count levels repeat: {self.levels}")
        if self.class_to_super is not None:
            object.__setattr__(self, "class_to_super", tuple(int(s) for s in self.class_to_super))
        if "supercategory" in self.levels:
            if self.class_to_super is None or len(self.class_to_super) != self.num_classes:
                raise ValueError(
                    "a 'supercategory' count level needs class_to_super: one supercategory "
                    f"index per class ({self.num_classes}); got "
                    f"{None if self.class_to_super is None else len(self.class_to_super)}"
                )
            if self.class_to_super and min(self.class_to_super) < 0:
                raise ValueError("supercategory indices must be >= 0")

    @classmethod
    def from_catalogue(cls, catalogue: Catalogue, levels: Sequence[str]) -> CountingLayout:
        """The layout of ``levels`` over a catalogue's classes and supercategories."""
        supers = catalogue.class_to_super or None
        num_supers = catalogue.num_supercategories or None
        if "supercategory" not in levels:  # a class without supercategory is fine then
            supers, num_supers = None, None
        return cls(tuple(levels), catalogue.num_classes, supers, num_supers)

    @classmethod
    def infer(
        cls,
        catalogue: Catalogue,
        num_channels: int,
        levels: Sequence[str] | None = None,
        candidates: Sequence[Sequence[str]] = SINGLE_LEVELS,
        unique: bool = False,
    ) -> CountingLayout | None:
        """The layout of a counting view with ``num_channels`` channels.

        Args:
            catalogue: the model's classes.
            num_channels: C, the channels the counting view predicts.
            levels: explicit levels; when given, the only candidate.
            candidates: level tuples to try, in order of preference.
            unique: require exactly one candidate to fit (else None), instead of taking the first.

        Returns:
            The layout, or None when no candidate (or, with ``unique``, not exactly one) fits C.
        """
        sizes = {
            "total": 1,
            "supercategory": catalogue.num_supercategories,
            "category": catalogue.num_classes,
        }
        tries = [tuple(levels)] if levels else [tuple(c) for c in candidates]
        fits = [
            c
            for c in tries
            if all(lv in sizes and sizes[lv] for lv in c)
            and sum(sizes[lv] for lv in c) == int(num_channels)
        ]
        if not fits or (unique and len(fits) != 1):
            return None
        return cls.from_catalogue(catalogue, fits[0])

    @classmethod
    def from_config(cls, cfg, dataset_name: str | None = None) -> CountingLayout:
        """The layout of ``cfg.MODEL.COUNTING_HEAD.LEVELS``, supercategories from dataset metadata.

        Args:
            cfg: a config with dpsnet's keys.
            dataset_name: dataset whose metadata gives ``thing_supercategory_ids``; None:
                ``layout_dataset(cfg)``: ``DATASETS.TRAIN[0]`` (else ``DATASETS.TEST[0]``).

        Raises:
            ValueError: a "supercategory" level without that metadata, or a layout that
                disagrees with an explicit ``MODEL.COUNTING_HEAD.NUM_CHANNELS``.
        """
        from detectron2.data import MetadataCatalog

        levels = tuple(cfg.MODEL.COUNTING_HEAD.LEVELS)
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        class_to_super = None
        if "supercategory" in levels:
            from dpsnet.data.datasets.checkout import layout_dataset

            dataset_name = layout_dataset(cfg) if dataset_name is None else dataset_name
            meta = MetadataCatalog.get(dataset_name) if dataset_name else None
            class_to_super = meta.get("thing_supercategory_ids", None) if meta else None
            if class_to_super is None:
                raise ValueError(
                    "MODEL.COUNTING_HEAD.LEVELS has 'supercategory', but dataset "
                    f"{dataset_name!r} has no 'thing_supercategory_ids' metadata"
                )
            if len(class_to_super) != num_classes:
                raise ValueError(
                    f"dataset {dataset_name!r} has {len(class_to_super)} classes in "
                    f"thing_supercategory_ids, MODEL.ROI_HEADS.NUM_CLASSES is {num_classes}"
                )
        layout = cls(levels, num_classes, class_to_super)
        explicit = cfg.MODEL.COUNTING_HEAD.NUM_CHANNELS
        if explicit and explicit != layout.num_channels:
            raise ValueError(
                f"MODEL.COUNTING_HEAD.NUM_CHANNELS is {explicit}, but LEVELS {list(levels)} give "
                f"{layout.num_channels} channels"
            )
        return layout

    def to_dict(self) -> dict:
        """Plain data for a checkpoint."""
        return {
            "levels": list(self.levels),
            "num_classes": self.num_classes,
            "class_to_super": None if self.class_to_super is None else list(self.class_to_super),
            "num_channels": self.num_channels,
            "slices": {lv: [s.start, s.stop] for lv, s in self.level_slices().items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> CountingLayout:
        sizes = data.get("slices", {}).get("supercategory")
        num_supers = sizes[1] - sizes[0] if sizes else None
        return cls(data["levels"], data["num_classes"], data.get("class_to_super"), num_supers)

    # --- channels -----------------------------------------------------------------------------

    @property
    def num_supercategories(self) -> int:
        if self.num_supers is not None:
            return int(self.num_supers)
        return max(self.class_to_super) + 1 if self.class_to_super else 0

    def level_size(self, level: str) -> int:
        return {
            "total": 1,
            "supercategory": self.num_supercategories,
            "category": self.num_classes,
        }[level]

    def level_offset(self, level: str) -> int:
        """Index of the first channel of ``level``."""
        offset = 0
        for lv in self.levels:
            if lv == level:
                return offset
            offset += self.level_size(lv)
        raise KeyError(f"count level {level!r} is not among {self.levels}")

    def level_slices(self) -> dict[str, slice]:
        """level -> its slice of channels."""
        return {
            lv: slice(self.level_offset(lv), self.level_offset(lv) + self.level_size(lv))
            for lv in self.levels
        }

    @property
    def finest_level(self) -> str:
        return max(self.levels, key=LEVELS.index)

    @property
    def num_channels(self) -> int:
        return sum(self.level_size(lv) for lv in self.levels)

    def group_of_class(self, level: str) -> np.ndarray:
        """(K,) int64: the group (index within ``level``) of each class."""
        if level == "total":
            return np.zeros(self.num_classes, np.int64)
        if level == "supercategory":
            return np.asarray(self.class_to_super, np.int64)
        if level == "category":
            return np.arange(self.num_classes, dtype=np.int64)
        raise KeyError(f"unknown count level {level!r}; expected one of {LEVELS}")

    def channel_table(self) -> np.ndarray:
        """(K, L) int64: the channel of each class at each of the L levels."""
        cols = [self.level_offset(lv) + self.group_of_class(lv) for lv in self.levels]
        return np.stack(cols, axis=1)

    def count_vector(self, classes) -> np.ndarray:
        """Count detections of contiguous ``classes`` the way the counting view counts objects.

        Returns:
            (C,) int64 counts, C = :attr:`num_channels`.
        """
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        if classes.size and (classes.min() < 0 or classes.max() >= self.num_classes):
            raise ValueError(f"class index out of range 0..{self.num_classes - 1}: {classes}")
        parts = []
        for level in self.levels:
            groups = self.group_of_class(level)[classes]
            parts.append(np.bincount(groups, minlength=self.level_size(level)))
        return np.concatenate(parts).astype(np.int64)
