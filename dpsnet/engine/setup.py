"""Building a frozen config from a YAML file and overrides, with one-line errors for bad input."""

import logging
import os
import re
from pathlib import Path

import torch
from detectron2.config import CfgNode, get_cfg

from dpsnet.config import add_dpsnet_config
from dpsnet.utils.io import BadInputError, set_max_image_pixels
from dpsnet.utils.weights import WeightsError, check_weights_file
from dpsnet.utils.weights import configure as configure_weights

logger = logging.getLogger(__name__)

# MODEL.WEIGHTS values that name a remote or catalog resource rather than a local file.
_REMOTE_PREFIXES = ("detectron2://", "catalog://", "http://", "https://", "s3://", "manifold://")


class ConfigError(ValueError):
    """A config file, key or referenced file is wrong; the message is one line naming it."""


def load_config(config_file: str | None, opts: list[str] | None = None) -> CfgNode:
    """Return a detectron2 config with dpsnet's keys, the YAML file and ``KEY VALUE`` overrides.

    Registers ``DATASETS.REGISTER`` and reads the categories a "supercategory" counting view
    needs, so that a model then builds from the config and metadata in memory.

    Raises:
        ConfigError: the file is missing or malformed, or names a key that does not exist.
    """
    cfg = get_cfg()
    add_dpsnet_config(cfg)
    if config_file:
        if not Path(config_file).is_file():
            raise ConfigError(f"config file not found: {config_file}")
        try:
            cfg.merge_from_file(config_file)
        except Exception as e:  # unknown keys, yaml errors, bad _BASE_ paths, type mismatches
            key = _unknown_key(e)
            if key:
                raise ConfigError(f"{config_file}: unknown config key '{key}'") from None
            raise ConfigError(f"{config_file}: {type(e).__name__}: {_one_line(e)}") from None
    if opts:
        if len(opts) % 2:
            raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd list: {opts}")
        try:
            cfg.merge_from_list(opts)
        except Exception as e:
            key = _unknown_key(e)
            if key:
                raise ConfigError(f"unknown config key '{key}' in command-line overrides") from None
            raise ConfigError(f"command-line overrides: {_one_line(e)}") from None
    try:
        set_max_image_pixels(cfg.INPUT.MAX_IMAGE_PIXELS)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    register_from_config(cfg)
    from dpsnet.data.agnostic import class_agnostic_config  # RECOGNITION.CLASS_AGNOSTIC
    from dpsnet.data.datasets import read_layout_categories

    cfg = class_agnostic_config(cfg)
    try:  # the tool reads the files; the model builds from metadata in memory
        read_layout_categories(cfg)
    except BadInputError as e:
        raise ConfigError(f"MODEL.COUNTING_HEAD.LEVELS 'supercategory': {e}") from None
    return cfg


def register_from_config(cfg: CfgNode) -> list[str]:
    """Register every dataset listed in ``DATASETS.REGISTER`` (idempotent); return their names.

    Raises:
        ConfigError: an entry is malformed or its JSON file / image folder does not exist.
    """
    from dpsnet.data.datasets import register_checkout_dataset

    names = []
    for entry in cfg.DATASETS.REGISTER:
        if isinstance(entry, str) or len(entry) not in (3, 4):
            raise ConfigError(
                "DATASETS.REGISTER entries are [name, json_file, image_root(, categories_json)],"
                f" got {entry!r}"
            )
        name, json_file, image_root = entry[:3]
        categories_json = entry[3] if len(entry) == 4 else None
        for path, what in ((json_file, "json file"), (categories_json, "categories json")):
            if path and not os.path.isfile(path):
                raise ConfigError(f"DATASETS.REGISTER '{name}': {what} not found: {path}")
        if not os.path.isdir(image_root):
            raise ConfigError(f"DATASETS.REGISTER '{name}': image folder not found: {image_root}")
        register_checkout_dataset(name, json_file, image_root, categories_json=categories_json)
        names.append(name)
    return names


def resolve_device(cfg: CfgNode) -> bool:
    """Fall back to CPU when the config asks for CUDA on a machine without it.

    Returns:
        True when the device was changed (the caller logs it once its logger is set up).
    """
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
        return True
    return False


def check_weights(cfg: CfgNode) -> None:
    """Check the config's weights files before any work starts; set this process's policy.

    A local MODEL.WEIGHTS that does not exist, is empty or is not a PyTorch checkpoint is an
    error, and so is a ``.pkl`` (pickle: loading it runs code) unless ``MODEL.TRUST_PICKLE``.
    The open-set pipeline's part files get the same pickle and corruption checks.

    Raises:
        ConfigError: one line naming the key, the file and the problem.
    """
    configure_weights(
        trust_pickle=cfg.MODEL.TRUST_PICKLE,
        trunk_only=cfg.MODEL.WEIGHTS if cfg.MODEL.WEIGHTS_TRUNK_ONLY else None,
    )
    weights = cfg.MODEL.WEIGHTS
    if weights and not weights.startswith(_REMOTE_PREFIXES) and not os.path.isfile(weights):
        raise ConfigError(f"MODEL.WEIGHTS file not found: {weights}")
    paths = {"MODEL.WEIGHTS": weights}
    if cfg.MODEL.META_ARCHITECTURE == "DPSNetOpenSet":
        paths["RECOGNITION.DETECTOR.WEIGHTS"] = cfg.RECOGNITION.DETECTOR.WEIGHTS
        paths["RECOGNITION.EMBEDDER.WEIGHTS"] = cfg.RECOGNITION.EMBEDDER.WEIGHTS
    for key, path in paths.items():
        if path:
            try:
                check_weights_file(path, key)
            except WeightsError as e:
                raise ConfigError(str(e)) from None


def check_datasets(
    cfg: CfgNode,
    keys: tuple[str, ...] = ("TRAIN", "TEST"),
    extra: dict | None = None,
    *,
    classes: bool = True,
    names_only: bool = False,
) -> None:
    """Every dataset the config names is registered and its files exist; the classes fit.

    Checks only what registration recorded (no annotation file is parsed, except a
    ``categories`` list to count classes), so it costs milliseconds.

    Args:
        cfg: the config.
        keys: the ``DATASETS`` lists to check.
        extra: more datasets to check, config key -> name (e.g. ``DISTILL.POOL_DATASET``).
        classes: also check that the model has a class for each category of DATASETS.TRAIN.
        names_only: a name with metadata but no records (a checkpoint's catalogue) is fine:
            the caller reads only product names (the demo).

    Raises:
        ConfigError: one line naming the key, the dataset and what to do.
    """
    named = [(f"DATASETS.{k}", n) for k in keys for n in cfg.DATASETS.get(k, ())]
    named += [(k, n) for k, n in (extra or {}).items() if n]
    for key, name in named:
        check_dataset(name, key, names_only=names_only)
    if classes:
        _check_class_count(cfg)


def check_dataset(name: str, key: str = "dataset", *, names_only: bool = False) -> None:
    """One dataset name is registered and, where registration recorded files, they exist.

    ``names_only`` accepts a name that has class metadata but no records.

    Raises:
        ConfigError: one line naming ``key``, the dataset and what to do.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    registered = name in DatasetCatalog.list()
    if not registered and names_only and name in MetadataCatalog.list():
        registered = MetadataCatalog.get(name).get("thing_classes", None) is not None
    if not registered:
        ours = sorted(n for n in DatasetCatalog.list() if n.startswith(_OUR_PREFIXES))
        hint = ", ".join(ours[:8]) + (f", ... ({len(ours)} in all)" if len(ours) > 8 else "")
        raise ConfigError(
            f"{key}: dataset {name!r} is not registered (register your own with "
            f"DATASETS.REGISTER [[name, json_file, image_root]]; known: {hint})"
        )
    meta = MetadataCatalog.get(name)
    json_file = meta.get("json_file", None)
    if json_file and not os.path.isfile(json_file):
        raise ConfigError(
            f"{key}: dataset {name!r} is not built: {json_file} not found{_build_hint(meta)}"
        )
    image_root = meta.get("image_root", None)
    if image_root and not os.path.isdir(image_root):
        raise ConfigError(
            f"{key}: dataset {name!r}: image folder {image_root} not found{_build_hint(meta)}"
        )


# Names dpsnet registers at import (detectron2's COCO/LVIS/... names are left out of hints).
_OUR_PREFIXES = ("mini_", "rpc_", "d2s_")


def _build_hint(meta) -> str:
    if meta.get("mini_world_root", None):
        return "; run `python datasets/make_mini_world.py` first"
    return "; see datasets/README.md for where the files go ($DPSNET_DATASETS)"


def _check_class_count(cfg: CfgNode) -> None:
    from detectron2.data import MetadataCatalog

    from dpsnet.data.datasets.checkout import read_categories

    if cfg.MODEL.META_ARCHITECTURE == "DPSNetOpenSet":
        return  # class-agnostic detector; its products live in the gallery
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    for name in cfg.DATASETS.TRAIN:
        meta = MetadataCatalog.get(name)
        categories_json = meta.get("categories_json", None) or meta.get("json_file", None)
        if not categories_json or not os.path.isfile(categories_json):
            continue
        try:
            n = len(read_categories(categories_json))
        except BadInputError as e:
            raise ConfigError(f"DATASETS.TRAIN {name!r}: {e}") from None
        if n > num_classes:
            raise ConfigError(
                f"the model has {num_classes} classes (MODEL.ROI_HEADS.NUM_CLASSES) but "
                f"DATASETS.TRAIN {name!r} has {n} categories; set NUM_CLASSES to {n}"
            )


def check_solver(cfg: CfgNode) -> None:
    """The training schedule's numbers are usable (a zero batch would fail deep in a worker).

    Raises:
        ConfigError: one line naming the key and the value.
    """
    s = cfg.SOLVER
    for key, value, low in (
        ("SOLVER.IMS_PER_BATCH", s.IMS_PER_BATCH, 1),
        ("SOLVER.MAX_ITER", s.MAX_ITER, 1),
        ("SOLVER.CHECKPOINT_PERIOD", s.CHECKPOINT_PERIOD, 1),
        ("DATALOADER.NUM_WORKERS", cfg.DATALOADER.NUM_WORKERS, 0),
    ):
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}")
    if not s.BASE_LR > 0:
        raise ConfigError(f"SOLVER.BASE_LR must be > 0, got {s.BASE_LR!r}")


def _unknown_key(error: Exception) -> str | None:
    # yacs raises KeyError("Non-existent config key: X") from files and
    # AssertionError("Non-existent key: X") from override lists.
    match = re.search(r"Non-existent (?:config )?key: ([\w.]+)", str(error))
    return match.group(1) if match else None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
