"""A held-out slice of the synthesized scenes, to choose score thresholds without test labels.

When the labelled val split is the pool (or there is none), ``DISTILL.THRESHOLD_HOLDOUT`` > 0
takes that fraction of ``DATASETS.TRAIN[0]``'s images out of training (every arm, every round)
and registers them as ``<name>_holdout`` (the threshold dataset) and the rest as ``<name>_fit``.
The split is fixed by the images' file names and ``SEED``, so every process and every resumed
run makes the same one.
"""

import hashlib
import logging

from detectron2.data import DatasetCatalog, MetadataCatalog

logger = logging.getLogger(__name__)

__all__ = ["apply_holdout", "holdout_split"]


def holdout_split(records: list[dict], fraction: float, seed: int) -> tuple[list, list]:
    """(kept, held out) records: the ``fraction`` with the smallest seeded hash of file name.

    Raises:
        ValueError: the fraction is not in (0, 1), or leaves either side empty.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"DISTILL.THRESHOLD_HOLDOUT must be in (0, 1), got {fraction}")

    def key(r):
        return hashlib.sha1(f"{seed}:{r['file_name']}".encode()).hexdigest()

    order = sorted(range(len(records)), key=lambda i: key(records[i]))
    n = int(round(fraction * len(records)))
    if n == 0 or n == len(records):
        raise ValueError(
            f"DISTILL.THRESHOLD_HOLDOUT {fraction} of {len(records)} images leaves a side empty"
        )
    held = set(order[:n])
    kept = [r for i, r in enumerate(records) if i not in held]
    return kept, [records[i] for i in sorted(held)]


def _register(name: str, records: list[dict], source: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    meta = {k: v for k, v in MetadataCatalog.get(source).as_dict().items() if k != "name"}
    meta.setdefault("evaluator_type", "rpc")  # the scenes are labelled checkout images
    MetadataCatalog.get(name).set(**meta)


def apply_holdout(cfg):
    """The config with ``DATASETS.TRAIN[0]`` split (see module doc), or ``cfg`` unchanged.

    Only when ``DISTILL.THRESHOLD_HOLDOUT`` > 0 and ``DISTILL.THRESHOLD_DATASET`` is empty.
    """
    fraction = float(cfg.DISTILL.THRESHOLD_HOLDOUT)
    if fraction <= 0 or cfg.DISTILL.THRESHOLD_DATASET:
        return cfg
    source = cfg.DATASETS.TRAIN[0]
    kept, held = holdout_split(DatasetCatalog.get(source), fraction, max(int(cfg.SEED), 0))
    _register(f"{source}_fit", kept, source)
    _register(f"{source}_holdout", held, source)
    logger.info(
        "Threshold hold-out: %d of %d images of %s (%s_holdout) kept out of training",
        len(held),
        len(held) + len(kept),
        source,
        source,
    )
    c = cfg.clone()
    c.defrost()
    c.DATASETS.TRAIN = (f"{source}_fit", *cfg.DATASETS.TRAIN[1:])
    c.DISTILL.THRESHOLD_DATASET = f"{source}_holdout"
    c.freeze()
    return c
