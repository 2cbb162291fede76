"""Class-agnostic views of registered datasets: every category becomes one "object" class.

``register_agnostic_view("mini_rpc_train")`` registers ``mini_rpc_train_agnostic`` (lazily: the
source dataset is read only when the view is), and ``class_agnostic_config(cfg)`` rewrites
``DATASETS.TRAIN``/``TEST`` to those views when ``RECOGNITION.CLASS_AGNOSTIC`` is on, so the
switch works for any registered dataset, including ones registered after import.
"""

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
    Nothing is read now, and the source need not be registered yet (RPC and D2S are registered
    only where their files are): like any dataset name, a missing source fails when the view is
    loaded, with a message naming it.

    The view's metadata: one ``"object"`` class (dataset id 1 -> contiguous 0),
    ``evaluator_type`` "coco" (detection AP; no ``json_file``, so COCOEvaluator converts the
    agnostic dicts itself) and ``agnostic_source``.
    """
    view = agnostic_name(name)
    if view in DatasetCatalog.list():
        return view
    # A saved config (config.yaml of a training run) already names the views: rebuild them.
    source = view[: -len(SUFFIX)]
    DatasetCatalog.register(view, lambda: make_class_agnostic(_load_source(source, view)))
    MetadataCatalog.get(view).set(
        thing_classes=[OBJECT_CLASS],
        thing_dataset_id_to_contiguous_id={1: 0},
        evaluator_type="coco",
        agnostic_source=source,
    )
    return view


def _load_source(source: str, view: str) -> list[dict]:
    if source not in DatasetCatalog.list():
        raise KeyError(
            f"dataset {source!r} (the source of the class-agnostic view {view!r}) is not registered"
        )
    return DatasetCatalog.get(source)


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
