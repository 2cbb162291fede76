"""Building a frozen config from a YAML file and overrides, with one-line errors for bad input."""

import logging
import os
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
        except KeyError as e:
            raise ConfigError(f"{config_file}: unknown config key {_key_of(e)}") from None
        except Exception as e:  # yaml errors, bad _BASE_ paths, type mismatches
            raise ConfigError(f"{config_file}: {type(e).__name__}: {_one_line(e)}") from None
    if opts:
        if len(opts) % 2:
            raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd list: {opts}")
        try:
            cfg.merge_from_list(opts)
        except KeyError as e:
            raise ConfigError(
                f"unknown config key {_key_of(e)} in command-line overrides"
            ) from None
        except Exception as e:
            raise ConfigError(f"command-line overrides: {_one_line(e)}") from None
    return cfg


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


def _key_of(error: KeyError) -> str:
    text = str(error.args[0]) if error.args else str(error)
    # yacs says "Non-existent config key: MODEL.FOO"
    return repr(text.split(":", 1)[1].strip()) if ":" in text else repr(text)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
