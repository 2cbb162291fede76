"""Building a frozen config from a YAML file and overrides, with one-line errors for bad input."""

import logging
import os
import re
from pathlib import Path

import torch
from detectron2.config import CfgNode, get_cfg

from dpsnet.config import add_dpsnet_config

logger = logging.getLogger(__name__)

# MODEL.WEIGHTS values that name a remote or catalog resource rather than a local file.
_REMOTE_PREFIXES = ("detectron2://", "catalog://", "http://", "https://", "s3://", "manifold://")


class ConfigError(ValueError):
    """A config file, key or referenced file is wrong; the message is one line naming it."""


def load_config(config_file: str | None, opts: list[str] | None = None) -> CfgNode:
    """Return a detectron2 config with dpsnet's keys, the YAML file and ``KEY VALUE`` overrides.

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
    register_from_config(cfg)
    from dpsnet.data.agnostic import class_agnostic_config  # RECOGNITION.CLASS_AGNOSTIC

    return class_agnostic_config(cfg)


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
    """A local MODEL.WEIGHTS path that does not exist is an error before any work starts."""
    weights = cfg.MODEL.WEIGHTS
    if weights and not weights.startswith(_REMOTE_PREFIXES) and not os.path.isfile(weights):
        raise ConfigError(f"MODEL.WEIGHTS file not found: {weights}")


def _unknown_key(error: Exception) -> str | None:
    # yacs raises KeyError("Non-existent config key: X") from files and
    # AssertionError("Non-existent key: X") from override lists.
    match = re.search(r"Non-existent (?:config )?key: ([\w.]+)", str(error))
    return match.group(1) if match else None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
