"""One exemplar's mask: the settings a mask depends on, and the work on one exemplar (coarse mask,
refinement, quality score, files written) that runs in worker processes for ``masks.py``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from dpsnet.synthesis.coarse import CoarseParams, box_extent, clean_mask, coarse_mask, mask_quality
from dpsnet.synthesis.refine import (
    MattingParams,
    NetParams,
    matting_snap,
)
from dpsnet.utils.io import BadInputError, atomic_write_image, read_image

REFINE_METHODS = ("matting", "net", "none")


@dataclass(frozen=True)
class MaskSettings:
    """Every setting a mask depends on (``cfg.SYNTHESIS.MASKS``, ``cfg.SYNTHESIS.SEED``)."""

    coarse: CoarseParams = CoarseParams()
    refine: str = "matting"  # one of REFINE_METHODS
    matting: MattingParams = MattingParams()
    net: NetParams = NetParams()
    net_min_quality: float = 0.9  # coarse quality of the masks that train the net
    seed: int = 0

    def __post_init__(self):
        if self.refine not in REFINE_METHODS:
            raise ValueError(f"unknown refinement {self.refine!r} (one of {REFINE_METHODS})")

    @classmethod
    def from_config(cls, cfg) -> MaskSettings:
        m, r, n = cfg.SYNTHESIS.MASKS, cfg.SYNTHESIS.MASKS.REFINE, cfg.SYNTHESIS.MASKS.REFINE.NET
        coarse = CoarseParams(
            method=m.METHOD,
            context=m.CONTEXT,
            iterations=m.GRABCUT_ITERATIONS,
            max_side=m.MAX_SIDE,
            edge_threshold=m.EDGE_THRESHOLD,
        )
        matting = MattingParams(
            band=r.BAND, radius=r.RADIUS, min_contrast=r.MIN_CONTRAST, iterations=r.ITERATIONS
        )
        net = NetParams(
            input_size=n.INPUT_SIZE,
            width=n.WIDTH,
            iterations=n.ITERATIONS,
            batch_size=n.BATCH_SIZE,
            lr=n.LR,
            max_train=n.MAX_TRAIN,
            context=m.CONTEXT,
            seed=cfg.SYNTHESIS.SEED,
        )
        return cls(coarse, r.METHOD, matting, net, n.MIN_QUALITY, cfg.SYNTHESIS.SEED)

    def coarse_dict(self) -> dict:
        return {"coarse": asdict(self.coarse), "seed": self.seed}

    def refine_dict(self) -> dict:
        d = {"refine": self.refine}
        if self.refine != "none":
            d["matting"] = asdict(self.matting)
        if self.refine == "net":
            d["net"] = asdict(self.net)
            d["net_min_quality"] = self.net_min_quality
        return d


# Per-exemplar work (runs in worker processes).

_STATE: dict = {}


def init_worker(settings: MaskSettings, out: str) -> None:
    cv2.setNumThreads(1)
    _STATE.update(settings=settings, out=Path(out))


def _drop(rec: dict, reason: str, note: str) -> dict:
    rec.update(drop_reason=reason, note=note, quality=0.0, area=0)
    return rec


def _coarse_step(rec: dict):
    """Coarse mask and its quality; writes ``coarse/<id>.png``.

    Returns:
        (record, image, mask, component share); image is None when the exemplar was dropped.
    """
    settings, out = _STATE["settings"], _STATE["out"]
    try:
        image = read_image(rec["file_name"])
    except BadInputError as e:
        return _drop(rec, "unreadable", str(e)), None, None, 0.0
    extent = box_extent(rec["bbox"], *image.shape[:2])
    rec["extent"] = list(extent)
    if extent[2] <= extent[0] or extent[3] <= extent[1]:
        note = f"box {rec['bbox']} lies outside the {image.shape[1]}x{image.shape[0]} image"
        return _drop(rec, "empty", note), None, None, 0.0
    seed = (settings.seed * 1000003 + int(rec["image_id"])) % (2**31)
    mask, share = coarse_mask(image, rec["bbox"], settings.coarse, seed=seed)
    q = mask_quality(image, rec["bbox"], mask, share, settings.coarse.edge_threshold)
    rec.update(coarse_quality=q["quality"], coarse_area=int(mask.sum()))
    if not mask.any():
        return (
            _drop(rec, "empty", "the coarse mask is empty (no product found in the box)"),
            None,
            None,
            0.0,
        )
    atomic_write_image(out / rec["coarse_mask"], mask.astype(np.uint8) * 255)
    return rec, image, mask, share


def coarse_job(rec: dict) -> dict:
    return _coarse_step(rec)[0]


def _finish(rec: dict, image: np.ndarray, mask: np.ndarray, share: float) -> dict:
    """Refine (matting snap) a mask, score it and write ``masks/<id>.png``."""
    settings, out = _STATE["settings"], _STATE["out"]
    if settings.refine != "none":
        mask = matting_snap(image, rec["bbox"], mask, settings.matting)
        mask, piece = clean_mask(mask)
        share *= piece
    if not mask.any():
        return _drop(rec, "empty", "the refined mask is empty")
    q = mask_quality(image, rec["bbox"], mask, share, settings.coarse.edge_threshold)
    atomic_write_image(out / rec["mask"], mask.astype(np.uint8) * 255)
    rec.update(quality=q["quality"], area=int(mask.sum()), drop_reason="", note="")
    return rec


def mask_job(rec: dict) -> dict:
    """Coarse mask, refinement without the net, quality: the whole job of one exemplar."""
    rec, image, mask, share = _coarse_step(rec)
    return rec if image is None else _finish(rec, image, mask, share)


def net_finish_job(args) -> dict:
    """Threshold the net's probability over the box, clean it, then ``_finish``."""
    rec, prob = args
    image = read_image(rec["file_name"])
    mask, share = clean_mask(prob > 0.5)
    return _finish(rec, image, mask, share)
