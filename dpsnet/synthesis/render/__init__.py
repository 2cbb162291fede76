"""Rendering: move synthesized checkout scenes toward the look of real checkout images.

Two renderers (``FastRenderer``: colour/histogram/blur/noise/vignetting statistics matching;
``CycleGANRenderer``: a learned unpaired translation) and one label-preservation check that every
rendered image must pass before its original labels are kept (``check_labels_preserved``).
Entry point: ``tools/render.py``; config: ``cfg.RENDER``.
"""

from dpsnet.synthesis.render.check import CheckParams, check_labels_preserved
from dpsnet.synthesis.render.fast import FastRenderer, FastRenderParams
from dpsnet.synthesis.render.jobs import (
    CopyRenderer,
    FolderRenderer,
    build_renderer,
    render_from_config,
    train_from_config,
)
from dpsnet.synthesis.render.pipeline import register_rendered, render_dataset
from dpsnet.synthesis.render.stats import SetStats, estimate_set_stats, set_distance

__all__ = [
    "CheckParams",
    "CopyRenderer",
    "FastRenderParams",
    "FastRenderer",
    "FolderRenderer",
    "SetStats",
    "build_renderer",
    "check_labels_preserved",
    "estimate_set_stats",
    "register_rendered",
    "render_dataset",
    "render_from_config",
    "set_distance",
    "train_from_config",
]
