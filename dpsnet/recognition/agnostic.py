"""Class-agnostic views of registered datasets: every category becomes one "object" class.

``register_agnostic_view("mini_rpc_train")`` registers ``mini_rpc_train_agnostic`` (lazily: the
source dataset is read only when the view is), and ``class_agnostic_config(cfg)`` rewrites
``DATASETS.TRAIN``/``TEST`` to those views when ``RECOGNITION.CLASS_AGNOSTIC`` is on, so the
switch works for any registered dataset, including ones registered after import.
"""

import copy
import logging

from detectron2.data import DatasetCatalog, MetadataCatalog

logger = logging.getLogger(__name__)

SUFFIX = "_agnostic"
OBJECT_CLASS = "object"


def make_class_agnostic(dataset_dicts: list[dict]) -> list[dict]:
    """Copies of detectron2 dataset dicts with every annotation's ``category_id`` set to 0."""
    out = []
    for record in dataset_dicts:
        record = dict(record)
        if "annotations" in record:
            record["annotations"] = [dict(a, category_id=0) for a in record["annotations"]]
        out.append(record)
    return out


def agnostic_name(name: str) -> str:
    return name if name.endswith(SUFFIX) else name + SUFFIX


def register_agnostic_view(name: str) -> str:
    """Register ``<name>_agnostic`` (idempotent) and return its name.

    ``name`` may already be a view's name (``X_agnostic``): the view of ``X`` is registered.

    The view's metadata copies the source's (image root, ``evaluator_type`` "coco" for
    detection AP) except the classes: one ``"object"`` class, dataset id 1 -> contiguous 0.
    """
    view = agnostic_name(name)
    if view in DatasetCatalog.list():
        return view
    # A saved config (config.yaml of a training run) already names the views: rebuild them.
    name = view[: -len(SUFFIX)]
    if name not in DatasetCatalog.list():
        raise KeyError(f"dataset {name!r} is not registered; cannot make a class-agnostic view")
    DatasetCatalog.register(view, lambda: make_class_agnostic(DatasetCatalog.get(name)))
    src = MetadataCatalog.get(name).as_dict()
    # json_file would make COCOEvaluator read the source's categories; without it the
    # evaluator converts the agnostic dicts itself.
    keep = {k: v for k, v in src.items() if k not in _CLASS_KEYS and k != "name"}
    keep["evaluator_type"] = "coco"
    MetadataCatalog.get(view).set(
        **copy.deepcopy(keep),
        thing_classes=[OBJECT_CLASS],
        thing_dataset_id_to_contiguous_id={1: 0},
        agnostic_source=name,
    )
    return view


_CLASS_KEYS = {
    "thing_classes",
    "thing_colors",
    "thing_dataset_id_to_contiguous_id",
    "json_file",
    "evaluator_type",
    "supercategories",
    "thing_supercategories",
    "supercategory_names",
    "thing_supercategory_ids",
    "categories_json",
    "keypoint_names",
    "keypoint_flip_map",
}


def class_agnostic_config(cfg):
    """``cfg`` itself, or (``RECOGNITION.CLASS_AGNOSTIC``) a clone reading agnostic views.

    The clone's ``DATASETS.TRAIN``/``TEST`` name the ``_agnostic`` views (registered here) and
    the heads predict one class.
    """
    if not cfg.RECOGNITION.CLASS_AGNOSTIC:
        return cfg
    cfg = cfg.clone()
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.DATASETS.TRAIN = tuple(register_agnostic_view(n) for n in cfg.DATASETS.TRAIN)
    cfg.DATASETS.TEST = tuple(register_agnostic_view(n) for n in cfg.DATASETS.TEST)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
    cfg.MODEL.RETINANET.NUM_CLASSES = 1
    if was_frozen:
        cfg.freeze()
    return cfg


def dataset_name_for(cfg, dataset_name: str) -> str:
    """The name to load for ``dataset_name`` under ``cfg`` (its agnostic view when asked)."""
    if cfg.RECOGNITION.CLASS_AGNOSTIC:
        return register_agnostic_view(dataset_name)
    return dataset_name
