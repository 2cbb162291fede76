"""The real work of each distillation stage, with detectron2 (``Detectron2Steps``).

The loop (``dpsnet.distill.loop``) only keeps the books; it calls ``train``, ``evaluate``,
``label`` and ``register`` of a steps object, so that tests can pass fast stand-ins.
"""

import copy
import logging
import os
from pathlib import Path

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.evaluation import inference_on_dataset
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from dpsnet.data.catalogue import Catalogue
from dpsnet.distill.class_sets import attach_class_probabilities
from dpsnet.distill.evaluation import CountGuidedComparison, set_count_guided
from dpsnet.distill.labeller import (
    count_layout_from_metadata,
    label_pool,
    pool_records,
    pseudo_label_json,
    register_pseudo_labels,
    summarize,
)
from dpsnet.distill.pseudo_labels import threshold_for_round
from dpsnet.distill.teacher import FlipTeacher
from dpsnet.distill.trainer import DistillTrainer
from dpsnet.engine import build_evaluator, build_mapper
from dpsnet.utils.io import atomic_write_json

logger = logging.getLogger(__name__)

__all__ = ["Detectron2Steps", "categories_from_metadata", "count_levels", "pseudo_dataset_name"]


def pseudo_dataset_name(cfg, r: int) -> str:
    return f"{cfg.DISTILL.POOL_DATASET}_pseudo_r{r}"


def count_levels(cfg) -> list[str]:
    """Counting-view levels to compare: DISTILL.COUNT_LEVELS, else the counting head's."""
    if cfg.DISTILL.COUNT_LEVELS:
        return list(cfg.DISTILL.COUNT_LEVELS)
    try:
        return list(cfg.MODEL.COUNTING_HEAD.LEVELS)
    except (KeyError, AttributeError):
        return []


def categories_from_metadata(meta) -> list[dict]:
    """COCO categories (dataset ids, names, supercategories) of the training datasets."""
    if meta.get("categories", None):
        return copy.deepcopy(list(meta.categories))
    return Catalogue.from_metadata(meta).to_categories()


class Detectron2Steps:
    """The real work of each stage, with dpsnet's (distillation) trainer."""

    def train(self, cfg) -> str:
        # Every stage from its own seed (SEED + round): its data order and augmentations then
        # do not depend on what ran before it in this process (detectron2's default sampler
        # draws its seed from the global RNG), so a resumed chain trains what an unbroken one
        # does, and the control of a round does not depend on its distilled twin.
        if cfg.SEED >= 0:
            seed_all_rng(cfg.SEED + comm.get_rank())
        trainer = DistillTrainer(cfg)
        trainer.resume_or_load(resume=True)
        trainer.train()
        return os.path.join(cfg.OUTPUT_DIR, "model_final.pth")

    def _load(self, cfg, weights: str):
        model = DistillTrainer.build_model(cfg)
        DetectionCheckpointer(model).load(weights)
        model.eval()
        return model

    def evaluate(self, cfg, weights: str, out_dir: Path) -> dict:
        """Evaluation results per inference mode on ``DISTILL.EVAL_DATASET`` (rank 0).

        With ``DISTILL.COMPARE_COUNT_GUIDED`` (and a model that has count-guided inference),
        one inference pass feeds three evaluators (see ``CountGuidedComparison``); otherwise the
        model is evaluated as configured, under "default".
        """
        name = cfg.DISTILL.EVAL_DATASET
        if not name:  # no labelled evaluation set (run_pipeline.py without --eval): no figures
            return {}
        c = cfg.clone()
        c.defrost()
        c.OUTPUT_DIR = str(out_dir)
        compare = cfg.DISTILL.COMPARE_COUNT_GUIDED and set_count_guided(c, True)
        c.freeze()
        try:
            model = self._load(c, weights)
        except ValueError as e:  # e.g. the guiding level is not predicted by the head
            logger.warning("Count-guided inference unavailable (%s): evaluating as configured", e)
            compare, c = False, cfg
            model = self._load(c, weights)
        loader = DistillTrainer.build_test_loader(c, name)
        if not compare or getattr(model, "count_guided", None) is None:
            evaluator = build_evaluator(c, name, str(out_dir / "eval_default"))
            return {"default": inference_on_dataset(model, loader, evaluator)}
        guided, model.count_guided = model.count_guided, None  # infer once, without it
        evaluator = CountGuidedComparison(c, name, out_dir, guided)
        return inference_on_dataset(model, loader, evaluator)

    def label(self, cfg, teacher_weights: str, r: int, out_json: Path) -> dict | None:
        """Pseudo-label the pool with the teacher; rank 0 writes ``out_json``, returns stats."""
        c = cfg.clone()
        c.defrost()
        # Count-guided inference reshapes detections with the counts: the two views would no
        # longer be independent, and their agreement would mean nothing.
        set_count_guided(c, False)
        if int(cfg.DISTILL.TEACHER_MIN_SIZE) > 0:
            c.INPUT.MIN_SIZE_TEST = int(cfg.DISTILL.TEACHER_MIN_SIZE)
        c.freeze()
        model = self._load(c, teacher_weights)
        meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
        color = list(cfg.DISTILL.PAINT_COLOR) or list(cfg.MODEL.PIXEL_MEAN)
        if cfg.INPUT.FORMAT == "RGB":  # painted copies are written by OpenCV, in BGR
            color = color[::-1]
        threshold = threshold_for_round(cfg.DISTILL.THRESHOLD_SCHEDULE, r)
        params = {
            "threshold": threshold,
            "instance_threshold": cfg.DISTILL.INSTANCE_THRESHOLD,
            "uncertain_threshold": cfg.DISTILL.UNCERTAIN_THRESHOLD,
            "paint_color_bgr": color,
            "accept_rule": cfg.DISTILL.ACCEPT_RULE,
            "uncertain_mode": cfg.DISTILL.UNCERTAIN_MODE,
            "ambiguous_score": cfg.DISTILL.AMBIGUOUS_SCORE,
            "class_set_ratio": cfg.DISTILL.CLASS_SET_RATIO,
            "class_set_pair_share": cfg.DISTILL.CLASS_SET_PAIR_SHARE,
        }
        if cfg.DISTILL.CLASS_SET_RATIO > 0:  # the teacher's detections carry their probabilities
            attach_class_probabilities(model)
        # The teacher's flip is DISTILL.TEACHER_FLIP alone, whatever MODEL.DPSNET.TEST_FLIP says
        # for evaluation and deployment.
        if hasattr(model, "test_flip"):
            model.test_flip = bool(cfg.DISTILL.TEACHER_FLIP)
        elif cfg.DISTILL.TEACHER_FLIP:
            model = FlipTeacher(model)
        to_id = dict(enumerate(Catalogue.from_metadata(meta).ids))  # contiguous -> dataset id
        results = label_pool(
            model,
            pool_records(cfg.DISTILL.POOL_DATASET),
            build_mapper(c, False),
            layout_fn=lambda n: count_layout_from_metadata(meta, n, count_levels(cfg)),
            params=params,
            image_dir=out_json.parent / "images",
            contiguous_to_dataset=to_id,
        )
        stats = None
        if comm.is_main_process():
            stats = summarize(results)
            pairs = params.get("class_set_pairs")
            stats["confusable_pairs"] = (
                [[to_id[int(a)], to_id[int(b)]] for a, b in zip(*pairs.nonzero()) if a < b]
                if pairs is not None
                else []
            )
            info = {
                "description": f"pseudo-labels of {cfg.DISTILL.POOL_DATASET}, round {r}",
                "round": r,
                "threshold": threshold,
                "teacher_weights": str(teacher_weights),
                "teacher_flip": bool(cfg.DISTILL.TEACHER_FLIP),
                "teacher_min_size": int(c.INPUT.MIN_SIZE_TEST),
                "accept_rule": cfg.DISTILL.ACCEPT_RULE,
                "uncertain_mode": cfg.DISTILL.UNCERTAIN_MODE,
                "statistics": stats,
            }
            data = pseudo_label_json(results, categories_from_metadata(meta), info)
            atomic_write_json(out_json, data)
        comm.synchronize()
        return stats

    def register(self, cfg, r: int, json_file: Path) -> str:
        name = pseudo_dataset_name(cfg, r)
        register_pseudo_labels(name, str(json_file), MetadataCatalog.get(cfg.DATASETS.TRAIN[0]))
        return name
