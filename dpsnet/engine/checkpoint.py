"""Self-contained checkpoints: what a model needs besides its weights, saved beside them.

Every checkpoint the Trainer writes (``model_final.pth``, periodic ones, every distillation round)
carries under ``ckpt["dpsnet"]`` (see :mod:`dpsnet.utils.checkpoint_meta`) plain data only: the
product catalogue, the counting layout, the score threshold, the input sizes and the config it
was trained with. :func:`config_from_checkpoint` turns such a file back into a config whose
model names its products, with no config file and no registered dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os

from detectron2.config import CfgNode

from dpsnet.data.catalogue import Catalogue, CountingLayout
from dpsnet.utils.checkpoint_meta import read_meta
from dpsnet.utils.io import atomic_path

__all__ = [
    "CheckpointFields",
    "add_checkpoint_fields",
    "catalogue_from_config",
    "checkpoint_fields",
    "config_from_checkpoint",
]

logger = logging.getLogger(__name__)

#: Version of the fields' layout, so a later reader can tell what it has.
FORMAT = 1
#: ``threshold_source`` of a threshold that is only the config's default.
CONFIG_THRESHOLD = "config TEST.RPC.SCORE_THRESHOLD"


def catalogue_from_config(cfg) -> Catalogue | None:
    """The classes a config's model predicts, from ``DATASETS.TRAIN[0]`` (else ``TEST[0]``).

    Returns:
        The catalogue (padded with ``class <i>`` to the model's class count), or None when no
        dataset of the config has ``thing_classes``.
    """
    from detectron2.data import MetadataCatalog

    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        num_classes = cfg.MODEL.RETINANET.NUM_CLASSES
    for name in [*cfg.DATASETS.TRAIN[:1], *cfg.DATASETS.TEST[:1]]:
        meta = MetadataCatalog.get(name)
        if getattr(meta, "thing_classes", None):
            return Catalogue.from_metadata(meta, num_classes)
    return None


def checkpoint_fields(cfg, catalogue: Catalogue | None = None) -> dict:
    """dpsnet's plain-data fields of a model trained with ``cfg``.

    Args:
        cfg: the training config.
        catalogue: the model's classes (None: from the config's datasets).

    Returns:
        ``format``, ``catalogue`` (:meth:`Catalogue.to_dict`, or None), ``counting_layout``
        (:meth:`CountingLayout.to_dict`, or None for a model without a counting view),
        ``score_threshold`` and ``threshold_source``, ``input`` (format and sizes),
        ``meta_architecture``, ``num_classes`` and ``config`` (``cfg.dump()``).
    """
    if catalogue is None:
        catalogue = catalogue_from_config(cfg)
    layout = None
    head = cfg.MODEL.get("COUNTING_HEAD")
    if catalogue is not None and cfg.MODEL.META_ARCHITECTURE == "DPSNet" and head is not None:
        try:
            layout = CountingLayout.from_catalogue(catalogue, tuple(head.LEVELS)).to_dict()
        except ValueError as e:  # e.g. a supercategory level over classes without one
            logger.warning("checkpoint without counting layout: %s", e)
    inp = cfg.INPUT
    return {
        "format": FORMAT,
        "catalogue": None if catalogue is None else catalogue.to_dict(),
        "counting_layout": layout,
        "score_threshold": float(cfg.TEST.RPC.SCORE_THRESHOLD),
        "threshold_source": CONFIG_THRESHOLD,
        "input": {
            "format": inp.FORMAT,
            "min_size_train": [int(s) for s in inp.MIN_SIZE_TRAIN],
            "max_size_train": int(inp.MAX_SIZE_TRAIN),
            "min_size_test": int(inp.MIN_SIZE_TEST),
            "max_size_test": int(inp.MAX_SIZE_TEST),
        },
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "num_classes": int(cfg.MODEL.ROI_HEADS.NUM_CLASSES),
        "config": cfg.dump(),
    }


class CheckpointFields:
    """A detectron2 checkpointable whose state is dpsnet's fields of the training config.

    Added to a Checkpointer under the key ``"dpsnet"``, it puts the fields in every file the
    checkpointer saves. Loading does nothing: the fields describe the config being trained,
    which a resumed run already has.
    """

    def __init__(self, cfg):
        self._cfg = cfg
        self._fields: dict | None = None

    def state_dict(self) -> dict:
        if self._fields is None:  # the datasets' metadata is read once, at the first save
            self._fields = checkpoint_fields(self._cfg)
        return dict(self._fields)

    def load_state_dict(self, state: dict) -> None:
        pass


def add_checkpoint_fields(checkpointer, cfg) -> None:
    """Make ``checkpointer`` (a detectron2 ``Checkpointer``) save dpsnet's fields of ``cfg``,
    and write every file atomically (see :class:`AtomicWrites`)."""
    from dpsnet.utils.checkpoint_meta import META_KEY

    if META_KEY not in checkpointer.checkpointables:
        checkpointer.add_checkpointable(META_KEY, CheckpointFields(cfg))
    if not isinstance(checkpointer.path_manager, AtomicWrites):
        checkpointer.path_manager = AtomicWrites(checkpointer.path_manager)


class AtomicWrites:
    """A checkpointer's path manager whose local writes go to a temporary file, renamed on close.

    fvcore writes ``model_*.pth`` and then ``last_checkpoint`` in place: a job killed while
    writing ``last_checkpoint`` left it empty, and ``--resume`` could not find its checkpoint.
    Reads and everything else go to the wrapped path manager.
    """

    def __init__(self, path_manager):
        self._path_manager = path_manager

    def __getattr__(self, name):
        return getattr(self._path_manager, name)

    def open(self, path, mode: str = "r", **kwargs):
        if "w" not in mode or "://" in str(path):
            return self._path_manager.open(path, mode, **kwargs)
        return _replace_on_close(path, mode)


@contextlib.contextmanager
def _replace_on_close(path, mode: str):
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def _metadata_name(catalogue: Catalogue) -> str:
    digest = hashlib.sha1(repr(catalogue.to_dict()).encode()).hexdigest()[:12]
    return f"dpsnet_checkpoint_{digest}"


def register_catalogue(catalogue: Catalogue) -> str:
    """Metadata (no images) named after a catalogue, for models and receipts to read."""
    from detectron2.data import MetadataCatalog

    name = _metadata_name(catalogue)
    meta = MetadataCatalog.get(name)
    if not getattr(meta, "thing_classes", None):
        meta.set(**catalogue.metadata_fields(), source="checkpoint catalogue")
    return name


def config_from_checkpoint(
    weights: str | os.PathLike,
    config_file: str | None = None,
    opts: list[str] | None = None,
) -> tuple[CfgNode, dict]:
    """The config of a model to run from ``weights``, and the checkpoint's dpsnet fields.

    Without ``config_file`` the config is the one saved in the checkpoint, its datasets replaced
    by metadata built from the saved catalogue (nothing needs to be registered or on disk), and
    count-guided inference as chosen with the threshold (``count_guided_default``), if it was. With
    ``config_file`` that file wins, as for a checkpoint saved without dpsnet's fields; the saved
    catalogue then names the products only where the file's datasets do not.

    Args:
        weights: a ``.pth`` checkpoint.
        config_file: an explicit config (overrides the saved one).
        opts: ``KEY VALUE`` overrides applied last.

    Returns:
        (cfg with ``MODEL.WEIGHTS`` set, not frozen; the checkpoint's dpsnet fields or {}).

    Raises:
        ConfigError: no config file and the checkpoint has no saved config, or the saved config
            does not load.
    """
    from dpsnet.engine.setup import ConfigError, load_config

    weights = os.fspath(weights)
    try:
        meta = read_meta(weights) if str(weights).endswith(".pth") else {}
    except Exception as e:  # an unreadable file is reported by the loader with its reason
        logger.debug("no dpsnet fields read from %s: %s", weights, e)
        meta = {}
    opts = list(opts or [])
    catalogue = Catalogue.from_dict(meta["catalogue"]) if meta.get("catalogue") else None
    if config_file:
        cfg = load_config(config_file, opts + ["MODEL.WEIGHTS", weights])
        cfg.defrost()
        if catalogue is not None and catalogue_from_config(cfg) is None:
            cfg.DATASETS.TEST = (register_catalogue(catalogue),)
        return cfg, meta
    if not meta.get("config"):
        raise ConfigError(
            f"{weights}: the checkpoint carries no config (saved before dpsnet stored one); "
            "give --config-file"
        )
    cfg = load_config(None)
    try:
        saved = CfgNode.load_cfg(meta["config"])
        cfg.merge_from_other_cfg(saved)
    except Exception as e:
        raise ConfigError(f"{weights}: its saved config does not load: {e}") from None
    cfg.defrost()
    # The training datasets are not needed to run the model: its classes come from the catalogue.
    cfg.DATASETS.REGISTER = []
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = (register_catalogue(catalogue),) if catalogue is not None else ()
    cfg.MODEL.WEIGHTS = weights
    guided = meta.get("count_guided_default")
    if isinstance(guided, bool) and "DPSNET" in cfg.MODEL:  # chosen with the threshold
        cfg.MODEL.DPSNET.COUNT_GUIDED.ENABLED = guided
    if opts:
        try:
            cfg.merge_from_list(opts)
        except Exception as e:
            raise ConfigError(f"command-line overrides: {' '.join(str(e).split())}") from None
    return cfg, meta


def chosen_threshold(meta: dict, cfg) -> float:
    """The checkpoint's score threshold when one was chosen for it, else the config's."""
    if meta.get("score_threshold") is not None and meta.get("threshold_source") != CONFIG_THRESHOLD:
        return float(meta["score_threshold"])
    return float(cfg.TEST.RPC.SCORE_THRESHOLD)
