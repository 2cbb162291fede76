"""The student's trainer: dpsnet's Trainer with a sampler that mixes synthesized and pseudo data.

detectron2 concatenates the datasets of ``DATASETS.TRAIN``, so a few hundred pseudo-labelled pool
images would be drowned by thousands of synthesized ones (or the reverse). ``DistillTrainer``
draws images so that synthesized:pseudo-labelled follows ``DISTILL.MIX_RATIO`` whatever the sizes.
A dataset is "pseudo" when its metadata has ``distill_pseudo=True`` (set by
``labeller.register_pseudo_labels``).
"""

import itertools
import logging
import os

import numpy as np
import torch
from detectron2.config import CfgNode as CN
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.data.detection_utils import check_metadata_consistency
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch.utils.data.sampler import Sampler

from dpsnet.data.augment import parse_albumentations
from dpsnet.distill.class_sets import add_class_sets, enable_class_sets
from dpsnet.distill.ignore import add_ignore_regions, enable_ignore_regions
from dpsnet.distill.pseudo_boxes import (
    PSEUDO_KEY,
    disable_pseudo_box_regression,
    mark_pseudo_instances,
)
from dpsnet.distill.teacher import EMAHook
from dpsnet.engine import Trainer, build_mapper
from dpsnet.engine.checkpoint import checkpoint_fields

logger = logging.getLogger(__name__)

__all__ = [
    "CurveCheckpointHook",
    "DistillTrainer",
    "StrongViewMapper",
    "WeightedTrainingSampler",
    "mixing_weights",
]


def mixing_weights(group_sizes: list[int], is_pseudo: list[bool], ratio) -> np.ndarray:
    """Per-image sampling weights so that synthesized:pseudo images follow ``ratio``.

    Args:
        group_sizes: number of images of each dataset.
        is_pseudo: whether each dataset is pseudo-labelled.
        ratio: (synthesized share, pseudo share); a share of 0 leaves that side out.

    Returns:
        [sum(group_sizes)] float64 weights summing to 1. Within a side, every image has the same
        weight (datasets of one side are pooled).
    """
    r_syn, r_ps = (float(v) for v in ratio)
    if r_syn < 0 or r_ps < 0 or r_syn + r_ps <= 0:
        raise ValueError(f"DISTILL.MIX_RATIO must be two non-negative shares, got {list(ratio)}")
    n_ps = sum(n for n, p in zip(group_sizes, is_pseudo, strict=True) if p)
    n_syn = sum(group_sizes) - n_ps
    # A side without images gives its share to the other one.
    if n_ps == 0:
        r_ps = 0.0
    if n_syn == 0:
        r_syn = 0.0
    if r_syn + r_ps <= 0:
        raise ValueError("no images to train on with this DISTILL.MIX_RATIO")
    parts = []
    for n, p in zip(group_sizes, is_pseudo, strict=True):
        share, total = (r_ps, n_ps) if p else (r_syn, n_syn)
        parts.append(np.full(n, share / total if total else 0.0))
    w = np.concatenate(parts)
    return w / w.sum()


class WeightedTrainingSampler(Sampler):
    """Infinite stream of indices drawn with replacement from fixed weights.

    Each process draws its own stream from ``seed + rank``, so processes see different images and
    the same seed gives the same streams.
    """

    def __init__(self, weights, seed: int | None = None, chunk: int = 4096):
        self._weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if seed is None:
            seed = comm.shared_random_seed()
        self._seed = int(seed) + comm.get_rank()
        self._chunk = chunk

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            yield from torch.multinomial(
                self._weights, self._chunk, replacement=True, generator=g
            ).tolist()


def _records(name: str, filter_empty: bool) -> list[dict]:
    """A dataset's records; unlike detectron2's loader, an empty dataset is allowed."""
    dicts = DatasetCatalog.get(name)
    if filter_empty and dicts:
        dicts = filter_images_with_only_crowd_annotations(dicts)
    return dicts


class CurveCheckpointHook(HookBase):
    """Save the model's weights every ``period`` iterations as ``curve_<iter>.pth``.

    The learning curve (``DISTILL.CURVE_EVAL_PERIOD``): the loop evaluates these files after the
    round, so that training is not slowed by evaluation and a resumed round keeps them.
    """

    def __init__(self, period: int, output_dir: str):
        self.period = int(period)
        self.output_dir = output_dir

    def after_step(self):
        it = self.trainer.iter + 1
        if it % self.period or it >= self.trainer.max_iter or not comm.is_main_process():
            return
        model = self.trainer.model
        state = getattr(model, "module", model).state_dict()
        path = os.path.join(self.output_dir, f"curve_{it:07d}.pth")
        state = {k: v.detach().cpu() for k, v in state.items()}
        ckpt = {"model": state}
        cfg = getattr(self.trainer, "cfg", None)
        if cfg is not None:  # as in every checkpoint dpsnet saves
            ckpt["dpsnet"] = checkpoint_fields(cfg)
        torch.save(ckpt, path + ".tmp")
        os.replace(path + ".tmp", path)


class DistillTrainer(Trainer):
    """dpsnet's Trainer whose train loader mixes synthesized and pseudo-labelled datasets.

    With ``DISTILL.UNCERTAIN_MODE "ignore"`` its model and mapper honour ignore regions (see
    ``dpsnet.distill.ignore``); with ``DISTILL.PSEUDO_BOX_REGRESSION False`` pseudo boxes are
    left out of the box regression loss (``dpsnet.distill.pseudo_boxes``); ``DISTILL.EMA_DECAY``
    adds the mean-teacher hook and ``DISTILL.CURVE_EVAL_PERIOD`` the learning-curve checkpoints.
    """

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        if cfg.DISTILL.UNCERTAIN_MODE == "ignore":
            enable_ignore_regions(model)
        if cfg.DISTILL.CLASS_SET_RATIO > 0:
            enable_class_sets(model)
        if not cfg.DISTILL.PSEUDO_BOX_REGRESSION:
            disable_pseudo_box_regression(model)
        return model

    def build_hooks(self):
        hooks = super().build_hooks()
        extra = []
        cfg = self.cfg
        if float(cfg.DISTILL.EMA_DECAY) > 0:
            extra.append(EMAHook(float(cfg.DISTILL.EMA_DECAY), cfg.OUTPUT_DIR))
        if int(cfg.DISTILL.CURVE_EVAL_PERIOD) > 0:
            extra.append(CurveCheckpointHook(int(cfg.DISTILL.CURVE_EVAL_PERIOD), cfg.OUTPUT_DIR))
        # Before the writers (the last hook), after the checkpointer and the scheduler.
        return hooks[:-1] + extra + hooks[-1:] if hooks else extra

    @classmethod
    def build_train_loader(cls, cfg):
        names = list(cfg.DATASETS.TRAIN)
        is_pseudo = [bool(MetadataCatalog.get(n).get("distill_pseudo", False)) for n in names]
        if not any(is_pseudo):
            return super().build_train_loader(cfg)
        check_metadata_consistency("thing_classes", names)
        groups = [_records(n, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS) for n in names]
        sizes = [len(g) for g in groups]
        for name, size, pseudo in zip(names, sizes, is_pseudo, strict=True):
            if pseudo and size == 0:  # a weak teacher may accept nothing: not a reason to stop
                logger.warning("%s: no pseudo-labelled image; this round trains without it", name)
        weights = mixing_weights(sizes, is_pseudo, cfg.DISTILL.MIX_RATIO)
        logger.info(
            "Student data: %s images, synthesized:pseudo = %s",
            dict(zip(names, sizes, strict=True)),
            list(cfg.DISTILL.MIX_RATIO),
        )
        seed = cfg.SEED if cfg.SEED >= 0 else None
        mapper = _student_mapper(cfg)
        if cfg.DISTILL.PSEUDO_AUGMENT:
            mapper = StrongViewMapper(mapper, _student_mapper(_strong_view_config(cfg)))
        if not cfg.DISTILL.PSEUDO_BOX_REGRESSION:
            mapper = mark_pseudo_instances(mapper)
        if cfg.DISTILL.PSEUDO_AUGMENT or not cfg.DISTILL.PSEUDO_BOX_REGRESSION:
            groups = [
                [dict(r, **{PSEUDO_KEY: True}) for r in g] if pseudo else g
                for g, pseudo in zip(groups, is_pseudo, strict=True)
            ]
        return build_detection_train_loader(
            cfg,
            mapper=mapper,
            dataset=list(itertools.chain.from_iterable(groups)),
            sampler=WeightedTrainingSampler(weights, seed=seed),
        )


def _student_mapper(cfg: CN):
    mapper = build_mapper(cfg, True)
    if cfg.DISTILL.UNCERTAIN_MODE == "ignore":
        mapper = add_ignore_regions(mapper)
    if cfg.DISTILL.CLASS_SET_RATIO > 0:
        mapper = add_class_sets(mapper)
    return mapper


def _strong_view_config(cfg: CN) -> CN:
    """``cfg`` whose training augmentation adds DISTILL.PSEUDO_AUGMENT (checked and named)."""
    parse_albumentations(list(cfg.DISTILL.PSEUDO_AUGMENT), key="DISTILL.PSEUDO_AUGMENT")
    if cfg.MODEL.META_ARCHITECTURE != "DPSNet":
        raise ValueError(
            "DISTILL.PSEUDO_AUGMENT needs MODEL.META_ARCHITECTURE 'DPSNet' (its mapper applies "
            f"photometric transforms), not {cfg.MODEL.META_ARCHITECTURE!r}"
        )
    strong = cfg.clone()
    strong.defrost()
    strong.INPUT.ALBUMENTATIONS.TRANSFORMS = [
        *cfg.INPUT.ALBUMENTATIONS.TRANSFORMS,
        *cfg.DISTILL.PSEUDO_AUGMENT,
    ]
    strong.freeze()
    return strong


class StrongViewMapper:
    """Map pseudo-labelled records (``PSEUDO_KEY``) with ``strong``, every other with ``base``.

    The student sees the pool's images photometrically perturbed while its targets are what the
    teacher found on the plain images: consistency under perturbation is what it learns there
    beyond repeating the teacher (Unbiased Teacher's weak/strong views).
    """

    def __init__(self, base, strong):
        self.base, self.strong = base, strong

    def __call__(self, dataset_dict: dict):
        return (self.strong if dataset_dict.get(PSEUDO_KEY) else self.base)(dataset_dict)
