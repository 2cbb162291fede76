"""Config-driven rendering jobs behind ``tools/render.py``: statistics, training, rendering.

``render_from_config`` is the whole stage: resolve the source set and the target images, build
the renderer ``cfg.RENDER.METHOD`` names, render + check + write, measure how far the source and
the rendered set are from the target's look, and register the rendered set.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from dpsnet.synthesis.render.check import CheckParams
from dpsnet.synthesis.render.fast import FastRenderer, FastRenderParams
from dpsnet.synthesis.render.pipeline import (
    list_images,
    register_rendered,
    render_dataset,
    resolve_coco,
)
from dpsnet.synthesis.render.stats import SetStats, estimate_set_stats, set_distance
from dpsnet.utils.io import BadInputError, atomic_write_json, read_image

logger = logging.getLogger(__name__)

METHODS = ("fast", "cyclegan", "folder", "none")


class CopyRenderer:
    """Returns the image unchanged: the "synthesized only" baseline, and a check of the check."""

    name = "none"
    parallel_safe = True

    def render(self, image: np.ndarray, rng=None) -> np.ndarray:
        return image.copy()


class FolderRenderer:
    """Images rendered by something else, found under ``root`` by their source file name."""

    name = "folder"
    parallel_safe = True

    def __init__(self, root: str):
        if not os.path.isdir(root):
            raise BadInputError(f"{root}: folder of rendered images not found")
        self.root = root

    def render_record(self, image: np.ndarray, rng, record: dict) -> np.ndarray:
        return read_image(os.path.join(self.root, record["file_name"]))


def _stats(cfg, files, cache_name: str, desc: str) -> SetStats:
    return estimate_set_stats(
        files,
        work_size=cfg.RENDER.STATS.WORK_SIZE,
        max_images=cfg.RENDER.STATS.MAX_IMAGES,
        seed=cfg.RENDER.SEED,
        cache_file=Path(cfg.RENDER.OUTPUT_DIR) / "stats" / cache_name,
        num_workers=cfg.RENDER.NUM_WORKERS,
        desc=desc,
    )


def source_files(cfg) -> tuple[str, str, list[str]]:
    """(json_file, image_root, image paths) of ``cfg.RENDER.SOURCE``."""
    if not cfg.RENDER.SOURCE:
        raise BadInputError("RENDER.SOURCE is empty: name the labelled set to render")
    json_file, root = resolve_coco(cfg.RENDER.SOURCE, cfg.RENDER.SOURCE_IMAGE_ROOT or None)
    return json_file, root, list_images(json_file, root)


def target_files(cfg) -> list[str]:
    """Image paths of ``cfg.RENDER.TARGET``."""
    if not cfg.RENDER.TARGET:
        raise BadInputError("RENDER.TARGET is empty: name the unlabelled real images to imitate")
    return list_images(cfg.RENDER.TARGET)


def build_renderer(cfg, src_files: list[str] | None = None, tgt_files: list[str] | None = None):
    """The renderer ``cfg.RENDER.METHOD`` names (statistics measured or loaded from cache)."""
    method = cfg.RENDER.METHOD
    if method == "fast":
        tgt = _stats(cfg, tgt_files or target_files(cfg), "target.json", "target statistics")
        src = _stats(cfg, src_files or source_files(cfg)[2], "source.json", "source statistics")
        return FastRenderer(tgt, src, FastRenderParams.from_config(cfg))
    if method == "cyclegan":
        from dpsnet.synthesis.render.cyclegan_renderer import CycleGANRenderer

        return CycleGANRenderer.from_config(cfg)
    if method == "folder":
        return FolderRenderer(cfg.RENDER.FOLDER)
    if method == "none":
        return CopyRenderer()
    raise ValueError(f"RENDER.METHOD {method!r} is not one of {METHODS}")


def default_dataset_name(cfg) -> str:
    if cfg.RENDER.DATASET_NAME:
        return cfg.RENDER.DATASET_NAME
    src = cfg.RENDER.SOURCE
    stem = Path(src).stem if src.endswith(".json") or os.path.isfile(src) else src
    return f"{stem}_render_{cfg.RENDER.METHOD}"


def render_from_config(cfg, *, overwrite: bool = False, limit: int = 0, register: bool = True):
    """Render ``cfg.RENDER.SOURCE`` into ``cfg.RENDER.OUTPUT_DIR`` and register the result.

    Returns:
        The report of ``render_dataset`` plus ``dataset`` (the registered name) and ``look``
        (set statistics of source, rendered and target, and their distances to the target).
    """
    json_file, root, src_files = source_files(cfg)
    tgt_files = target_files(cfg) if cfg.RENDER.METHOD in ("fast", "cyclegan") else None
    renderer = build_renderer(cfg, src_files, tgt_files)
    out = Path(cfg.RENDER.OUTPUT_DIR)
    report = render_dataset(
        renderer,
        json_file,
        root,
        out,
        seed=cfg.RENDER.SEED,
        num_workers=cfg.RENDER.NUM_WORKERS,
        check=CheckParams.from_config(cfg) if cfg.RENDER.CHECK.ENABLED else None,
        overwrite=overwrite,
        limit=limit,
        desc=f"render ({cfg.RENDER.METHOD})",
    )
    if tgt_files is not None and report["kept"] > 0:
        rendered = list_images(report["instances"], str(out / "images"))
        report["look"] = measure_look(cfg, src_files, rendered, tgt_files)
    if register:
        name = default_dataset_name(cfg)
        source = cfg.RENDER.SOURCE if not cfg.RENDER.SOURCE.endswith(".json") else None
        register_rendered(name, report["instances"], str(out / "images"), source=source)
        report["dataset"] = name
    atomic_write_json(out / "render_report.json", report, indent=1)
    return report


def measure_look(cfg, src_files, rendered_files, tgt_files) -> dict:
    """Set statistics (medians) of source, rendered and target, and distances to the target."""
    tgt = _stats(cfg, tgt_files, "target.json", "target statistics")
    src = _stats(cfg, src_files, "source.json", "source statistics")
    ren = _stats(cfg, rendered_files, "rendered.json", "rendered statistics")
    return {
        "source": src.summary(),
        "rendered": ren.summary(),
        "target": tgt.summary(),
        "source_to_target": set_distance(src, tgt),
        "rendered_to_target": set_distance(ren, tgt),
    }


def compare_looks(cfg) -> dict:
    """Set statistics of ``RENDER.SOURCE`` and ``RENDER.TARGET`` and their distance."""
    src = _stats(cfg, source_files(cfg)[2], "source.json", "source statistics")
    tgt = _stats(cfg, target_files(cfg), "target.json", "target statistics")
    return {
        "source": src.summary(),
        "target": tgt.summary(),
        "source_to_target": set_distance(src, tgt),
    }


def train_from_config(cfg, *, resume: bool = True) -> str:
    """Train the CycleGAN renderer: synthesized ``RENDER.SOURCE`` -> real ``RENDER.TARGET``.

    Returns the path of ``model_final.pth``.
    """
    from dpsnet.synthesis.render.cyclegan_train import CycleGANTrainer

    _, _, src_files = source_files(cfg)
    trainer = CycleGANTrainer(cfg, src_files, target_files(cfg))
    return str(trainer.train(resume=resume))
