"""Training entry points: the Trainer, config setup and multi-process launch."""

from dpsnet.engine.launch import launch
from dpsnet.engine.setup import (
    ConfigError,
    check_weights,
    load_config,
    register_from_config,
    resolve_device,
)
from dpsnet.engine.trainer import Trainer, build_evaluator, build_mapper, load_external_parts

__all__ = [
    "ConfigError",
    "Trainer",
    "build_evaluator",
    "build_mapper",
    "check_weights",
    "launch",
    "load_config",
    "load_external_parts",
    "register_from_config",
    "resolve_device",
]
