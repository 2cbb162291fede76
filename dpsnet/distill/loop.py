"""The distillation loop: round 0 on synthesized data, then rounds of pseudo-label -> train -> eval.

Layout under ``cfg.OUTPUT_DIR``::

    distill_state.json        which stage every round reached (rewritten atomically)
    distill_report.{json,md,png}
    round_0/                  synthesis-only model (the baseline), its evaluation
    round_<r>/                pseudo_labels.json, images/ (painted copies), student checkpoints,
                              eval_<mode>/ (evaluation outputs)

A round goes through the stages start -> labelled -> audited -> trained -> done; the state file is
written after each, so a killed run resumes at the stage it reached, and inside training at the
last detectron2 checkpoint of that round (``resume_or_load(resume=True)``). Paths are fixed by the
round number, so every process knows them without communication; only rank 0 writes files.

The work of each stage sits in a ``Steps`` object (``Detectron2Steps`` by default), so the loop's
bookkeeping can be tested with fast stand-ins.
"""

import copy
import logging
import os
from pathlib import Path

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, inference_on_dataset
from detectron2.utils import comm

from dpsnet.data.catalogue import Catalogue
from dpsnet.distill import report
from dpsnet.distill.audit import audit_pseudo_label_files
from dpsnet.distill.guard import check_pool_disjoint
from dpsnet.distill.labeller import (
    count_layout_from_metadata,
    label_pool,
    pool_records,
    pseudo_label_json,
    register_pseudo_labels,
    summarize,
)
from dpsnet.distill.pseudo_labels import threshold_for_round
from dpsnet.distill.trainer import DistillTrainer
from dpsnet.engine import build_evaluator, build_mapper
from dpsnet.utils.io import atomic_write_json, load_json

logger = logging.getLogger(__name__)

__all__ = [
    "STATE_FILE",
    "Detectron2Steps",
    "RunMismatchError",
    "check_guard",
    "pseudo_dataset_name",
    "round_dir",
    "run_distillation",
    "set_count_guided",
]

STATE_FILE = "distill_state.json"
STAGES = ("start", "labelled", "audited", "trained", "done")
# Settings a resumed run must share with the run that wrote the state file.
_FINGERPRINT_KEYS = (
    "DISTILL.THRESHOLD_SCHEDULE",
    "DISTILL.INSTANCE_THRESHOLD",
    "DISTILL.UNCERTAIN_THRESHOLD",
    "DISTILL.STUDENT_INIT",
    "DISTILL.MIX_RATIO",
    "DISTILL.ITERS_PER_ROUND",
    "DISTILL.ROUND0_WEIGHTS",
    "DISTILL.POOL_DATASET",
    "DISTILL.EVAL_DATASET",
    "DATASETS.TRAIN",
    "SOLVER.MAX_ITER",
)
# Config keys that switch count-guided inference, in the order they are looked for.
_COUNT_GUIDED_KEYS = ("MODEL.DPSNET.COUNT_GUIDED.ENABLED",)


class RunMismatchError(RuntimeError):
    """OUTPUT_DIR holds a distillation run made with different settings."""


def round_dir(cfg, r: int) -> Path:
    return Path(cfg.OUTPUT_DIR) / f"round_{r}"


def pseudo_dataset_name(cfg, r: int) -> str:
    return f"{cfg.DISTILL.POOL_DATASET}_pseudo_r{r}"


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def count_guided_key(cfg) -> str | None:
    """The config key of count-guided inference, or None when the model has none."""
    for key in _COUNT_GUIDED_KEYS:
        try:
            value = _get(cfg, key)
        except KeyError:
            continue
        if isinstance(value, bool):
            return key
    return None


def set_count_guided(cfg, on: bool) -> bool:
    """Switch count-guided inference in a (mutable) config; False when there is no such key."""
    key = count_guided_key(cfg)
    if key is None:
        return False
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = bool(on)
    return True


def _fingerprint(cfg) -> dict:
    out = {}
    for key in _FINGERPRINT_KEYS:
        value = _get(cfg, key)
        out[key] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def _dataset_files(name: str) -> list[str]:
    return [r["file_name"] for r in DatasetCatalog.get(name)]


def check_guard(cfg) -> dict[str, int]:
    """The honesty guard on the config's pool and evaluation splits (see ``guard``)."""
    eval_names = [cfg.DISTILL.EVAL_DATASET, *cfg.DATASETS.TEST]
    eval_names = list(dict.fromkeys(n for n in eval_names if n))
    return check_pool_disjoint(
        cfg.DISTILL.POOL_DATASET,
        _dataset_files(cfg.DISTILL.POOL_DATASET),
        {n: _dataset_files(n) for n in eval_names},
        transductive=cfg.DISTILL.TRANSDUCTIVE,
    )


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


def round_config(cfg, r: int, teacher_weights: str | None):
    """The training config of round ``r`` (0: synthesized only; else the student's)."""
    c = cfg.clone()
    c.defrost()
    c.OUTPUT_DIR = str(round_dir(cfg, r))
    # The loop evaluates itself; an empty test set keeps the trainer's final EvalHook a no-op.
    c.DATASETS.TEST = ()
    c.TEST.EVAL_PERIOD = 0
    if cfg.SEED >= 0:
        c.SEED = cfg.SEED + r
    if r > 0:
        c.DATASETS.TRAIN = (*cfg.DATASETS.TRAIN, pseudo_dataset_name(cfg, r))
        iters = int(cfg.DISTILL.ITERS_PER_ROUND)
        scale = iters / max(int(cfg.SOLVER.MAX_ITER), 1)
        c.SOLVER.MAX_ITER = iters
        c.SOLVER.STEPS = tuple(
            s2 for s2 in (int(s * scale) for s in cfg.SOLVER.STEPS) if 0 < s2 < iters
        )
        c.SOLVER.WARMUP_ITERS = min(int(cfg.SOLVER.WARMUP_ITERS), max(iters // 10, 1))
        # At least one checkpoint inside the round, so that a killed round resumes mid-way.
        if c.SOLVER.CHECKPOINT_PERIOD >= iters:
            c.SOLVER.CHECKPOINT_PERIOD = max(iters // 2, 1)
        init = cfg.DISTILL.STUDENT_INIT
        if init == "teacher":
            c.MODEL.WEIGHTS = teacher_weights
        elif init != "scratch":
            raise ValueError(f"DISTILL.STUDENT_INIT must be 'teacher' or 'scratch', got {init!r}")
    c.freeze()
    return c


class CountGuidedComparison(DatasetEvaluator):
    """RPC evaluation of one inference pass, with count-guided selection off and on.

    Modes: "count_guided_off" (detections as the detector gives them, fixed threshold
    ``TEST.RPC.SCORE_THRESHOLD``); "count_guided_on" (count-guided selection, then every kept
    detection counts: the receipt is what the selection decided, so the evaluator's threshold is
    lowered to ``COUNT_GUIDED.MIN_SCORE``); "count_guided_on_fixed" (count-guided selection, then
    the fixed threshold as well: what evaluating a model with count-guided inference enabled
    through the plain evaluator reports).
    """

    def __init__(self, cfg, dataset_name: str, out_dir: Path, guided: dict):
        self._guided = guided
        fixed = float(cfg.TEST.RPC.SCORE_THRESHOLD)
        low = min(fixed, float(guided["min_score"]))
        self._evaluators = {}
        for mode, threshold in (
            ("count_guided_off", fixed),
            ("count_guided_on", low),
            ("count_guided_on_fixed", fixed),
        ):
            c = cfg.clone()
            c.defrost()
            c.TEST.RPC.SCORE_THRESHOLD = threshold
            c.freeze()
            self._evaluators[mode] = build_evaluator(c, dataset_name, str(out_dir / f"eval_{mode}"))

    def reset(self):
        for e in self._evaluators.values():
            e.reset()

    def _select(self, out: dict) -> dict:
        from dpsnet.modeling.postprocess import select_by_count

        g = self._guided
        counts = out["counts"][g["offset"] : g["offset"] + g["num_groups"]]
        inst = select_by_count(
            out["instances"],
            counts.to(out["instances"].scores.device),
            g["class_to_group"],
            min_score=g["min_score"],
            keep_score=g["keep_score"],
        )
        return {**out, "instances": inst}

    def process(self, inputs, outputs):
        self._evaluators["count_guided_off"].process(inputs, outputs)
        guided = [self._select(o) for o in outputs]
        self._evaluators["count_guided_on"].process(inputs, guided)
        self._evaluators["count_guided_on_fixed"].process(inputs, guided)

    def evaluate(self):
        return {mode: e.evaluate() for mode, e in self._evaluators.items()}


class Detectron2Steps:
    """The real work of each stage, with dpsnet's (distillation) trainer."""

    def train(self, cfg) -> str:
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
        }
        results = label_pool(
            model,
            pool_records(cfg.DISTILL.POOL_DATASET),
            build_mapper(c, False),
            layout_fn=lambda n: count_layout_from_metadata(meta, n, count_levels(cfg)),
            params=params,
            image_dir=out_json.parent / "images",
            contiguous_to_dataset=dict(enumerate(Catalogue.from_metadata(meta).ids)),
        )
        stats = None
        if comm.is_main_process():
            stats = summarize(results)
            info = {
                "description": f"pseudo-labels of {cfg.DISTILL.POOL_DATASET}, round {r}",
                "round": r,
                "threshold": threshold,
                "teacher_weights": str(teacher_weights),
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


def _groundtruth_path(cfg) -> str | None:
    """The pool's hidden ground truth for the audit: the config's, the metadata's
    ``groundtruth_json``, or ``pool_groundtruth.json`` in the pool's ``dataset_root``."""
    path = cfg.DISTILL.POOL_GROUNDTRUTH
    if not path:
        meta = MetadataCatalog.get(cfg.DISTILL.POOL_DATASET)
        path = meta.get("groundtruth_json", "")
        if not path and meta.get("dataset_root", ""):
            path = os.path.join(meta.dataset_root, "pool_groundtruth.json")
    return path if path and os.path.isfile(path) else None


def _load_state(cfg) -> dict:
    path = Path(cfg.OUTPUT_DIR) / STATE_FILE
    fingerprint = _fingerprint(cfg)
    if not path.is_file():
        return {"fingerprint": fingerprint, "rounds": {}}
    state = load_json(path)
    changed = [
        f"{k}: {state['fingerprint'].get(k)!r} -> {v!r}"
        for k, v in fingerprint.items()
        if state["fingerprint"].get(k) != v
    ]
    if changed:
        raise RunMismatchError(
            f"{path} was written by a run with other settings ({'; '.join(changed)}); "
            "use another OUTPUT_DIR or delete it"
        )
    return state


def run_distillation(cfg, steps=None, *, guard: bool = True) -> dict:
    """Run (or resume) every round; returns the state (complete on rank 0).

    Args:
        cfg: a frozen config with dpsnet's keys.
        steps: the stage implementations (default ``Detectron2Steps``).
        guard: run the honesty guard first (the tool runs it before spawning processes).
    """
    steps = steps or Detectron2Steps()
    if guard:
        check_guard(cfg)
    state = _load_state(cfg)
    main = comm.is_main_process()
    out = Path(cfg.OUTPUT_DIR)

    def save(plot: bool = False):
        if main:
            atomic_write_json(out / STATE_FILE, state, indent=1)
            report.write_report(out, state, plot=plot)

    save()
    gt_path = _groundtruth_path(cfg)
    for r in range(int(cfg.DISTILL.NUM_ROUNDS) + 1):
        rs = state["rounds"].setdefault(str(r), {"stage": "start"})
        if rs["stage"] == "done":
            continue
        rdir = round_dir(cfg, r)
        pseudo_json = rdir / "pseudo_labels.json"
        teacher = state["rounds"][str(r - 1)]["weights"] if r > 0 else None
        logger.info("Distillation round %d: at stage %r", r, rs["stage"])
        if r == 0:
            rs["stage"] = "audited"  # nothing to label in round 0
        if rs["stage"] == "start":
            rs["threshold"] = threshold_for_round(cfg.DISTILL.THRESHOLD_SCHEDULE, r)
            rs["teacher"] = teacher
            rs["pseudo_json"] = str(pseudo_json)
            rs["statistics"] = steps.label(cfg, teacher, r, pseudo_json)
            rs["stage"] = "labelled"
            save()
        if rs["stage"] == "labelled":
            # After selection, from the written file: the audit cannot feed selection.
            if main and gt_path is not None:
                rs["audit"] = audit_pseudo_label_files(pseudo_json, gt_path)
                rs["audit"]["groundtruth"] = gt_path
            rs["stage"] = "audited"
            save()
        if rs["stage"] == "audited":
            if r == 0 and cfg.DISTILL.ROUND0_WEIGHTS:
                rs["weights"] = cfg.DISTILL.ROUND0_WEIGHTS
            else:
                if r > 0:
                    steps.register(cfg, r, pseudo_json)
                rs["weights"] = steps.train(round_config(cfg, r, teacher))
            rs["stage"] = "trained"
            save()
        if rs["stage"] == "trained":
            rs["metrics"] = steps.evaluate(cfg, rs["weights"], rdir)
            rs["stage"] = "done"
            save(plot=True)
        comm.synchronize()
    return state
