"""What the classes a model predicts mean on a receipt: names, dataset ids, supercategories, and
which channels of the counting view belong to which level."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from dpsnet.data.catalogue import Catalogue, CountingLayout

__all__ = ["ProductCatalog"]

logger = logging.getLogger(__name__)


@dataclass
class ProductCatalog:
    """What each contiguous class id the model predicts means, from dataset metadata.

    Attributes:
        names: (K,) product name of each contiguous class.
        product_ids: (K,) dataset category id of each class (the inverse of metadata's
            ``thing_dataset_id_to_contiguous_id``; the class index itself without one).
        supercategories: (K,) supercategory name of each class ("" when unknown).
        supercategory_names: (S,) supercategories, in channel order of a per-supercategory count.
        supercategory_ids: (K,) index into ``supercategory_names`` of each class (-1: none).
        count_levels: the counting view's levels in channel order (``MODEL.COUNTING_HEAD.LEVELS``:
            "total" 1 channel, "supercategory" S, "category" K); None: guessed from the number
            of channels as the RPC evaluator does (K: category, S: supercategory, 1: total).
        source: the dataset the metadata came from ("" when none had ``thing_classes``).
    """

    names: list[str]
    product_ids: list[int]
    supercategories: list[str]
    supercategory_names: list[str] = field(default_factory=list)
    supercategory_ids: list[int] = field(default_factory=list)
    count_levels: tuple[str, ...] | None = None
    source: str = ""

    @classmethod
    def from_metadata(
        cls,
        metadata,
        num_classes: int | None = None,
        source: str = "",
        count_levels: Sequence[str] | None = None,
    ):
        """Build from a detectron2 ``Metadata`` (``thing_classes`` and, if present,
        ``thing_dataset_id_to_contiguous_id``, ``supercategory_names``,
        ``thing_supercategory_ids``); classes beyond the metadata are named ``class <i>``."""
        names = list(getattr(metadata, "thing_classes", None) or [])
        k = num_classes if num_classes is not None else len(names)
        if names and len(names) != k:
            logger.warning(
                "%s has %d thing_classes but the model predicts %d classes",
                source or "metadata",
                len(names),
                k,
            )
        catalogue = Catalogue.from_metadata(metadata, k)
        return cls.from_catalogue(catalogue, source if names else "", count_levels)

    @classmethod
    def from_catalogue(
        cls, catalogue: Catalogue, source: str = "", count_levels: Sequence[str] | None = None
    ) -> ProductCatalog:
        """Build from a :class:`~dpsnet.data.catalogue.Catalogue` (e.g. a checkpoint's)."""
        k = catalogue.num_classes
        super_ids = list(catalogue.class_to_super) or [-1] * k
        return cls(
            list(catalogue.names),
            list(catalogue.ids),
            catalogue.supercategories,
            list(catalogue.supercategory_names),
            super_ids,
            tuple(count_levels) if count_levels else None,
            source,
        )

    @classmethod
    def from_config(cls, cfg) -> ProductCatalog:
        """Metadata of ``DATASETS.TEST[0]``, else ``DATASETS.TRAIN[0]``, for the model's classes."""
        from detectron2.data import MetadataCatalog

        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
            num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
        head = cfg.MODEL.get("COUNTING_HEAD")
        levels = list(head.LEVELS) if head is not None and "LEVELS" in head else None
        for name in [*cfg.DATASETS.TEST[:1], *cfg.DATASETS.TRAIN[:1]]:
            meta = MetadataCatalog.get(name)
            if getattr(meta, "thing_classes", None):
                return cls.from_metadata(meta, num_classes, source=name, count_levels=levels)
        logger.warning("no dataset in DATASETS.TEST/TRAIN has thing_classes: products unnamed")
        return cls.from_metadata(None, num_classes, count_levels=levels)

    def split_counts(self, num_channels: int) -> dict[str, slice] | None:
        """The channels of each level of a counting view with ``num_channels`` channels.

        Returns:
            level -> slice of channels, or None when the channels fit no known layout.
        """
        # Only the channel counts matter here: a class without supercategory (-1) is put in the
        # first one so that the layout can be built.
        supers = (
            [max(int(s), 0) for s in self.supercategory_ids] if self.supercategory_names else []
        )
        catalogue = Catalogue(self.product_ids, self.names, supers, self.supercategory_names)
        layout = CountingLayout.infer(catalogue, num_channels, self.count_levels)
        return None if layout is None else layout.level_slices()
