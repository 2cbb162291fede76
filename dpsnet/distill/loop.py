"""The distillation loop: round 0 on synthesized data, then rounds of pseudo-label -> train -> eval.

Layout under ``cfg.OUTPUT_DIR``::

    distill_state.json        which stage every round reached (rewritten atomically)
    distill_report.{json,md,png}, distill_curve.png
    round_0/                  synthesis-only model (the baseline), its evaluation
    round_<r>/                pseudo_labels.json, images/ (painted copies), student checkpoints,
                              threshold/ (evaluation on DISTILL.THRESHOLD_DATASET),
                              eval_<mode>/ (evaluation outputs), curve_<iter>/ (learning curve)
    round_<r>/control/        the same-budget control: round r-1's control (round 0 for r = 1)
                              trained DISTILL.ITERS_PER_ROUND more iterations on DATASETS.TRAIN
                              only, with the student's schedule and seed; evaluated alike

A round goes through the stages start -> labelled -> audited -> trained -> thresholded -> done,
then its control (``DISTILL.CONTROL``) through start -> trained -> thresholded -> done; the state
file is written after each, so a killed run resumes at the stage it reached, and inside training
at the last detectron2 checkpoint (``resume_or_load(resume=True)``). Paths are fixed by the round
number, so every process knows them without communication; only rank 0 writes files.

"thresholded": with ``DISTILL.THRESHOLD_DATASET`` (or a held-out slice of the synthesized
scenes, ``DISTILL.THRESHOLD_HOLDOUT``, see ``holdout``) the model is evaluated there, the threshold
maximising cAcc is stored in the checkpoint (``dpsnet.utils.checkpoint_meta``) and the evaluation
split is then evaluated at that threshold; without it, at ``TEST.RPC.SCORE_THRESHOLD``.

The work of each stage sits in a ``Steps`` object (``Detectron2Steps`` by default), so the loop's
bookkeeping can be tested with fast stand-ins.
"""

import logging
import os
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from dpsnet.distill import report
from dpsnet.distill.arm import Arm
from dpsnet.distill.audit import audit_pseudo_label_files
from dpsnet.distill.evaluation import (
    CountGuidedComparison,
    check_threshold_dataset,
    gain_intervals,
    set_count_guided,
)
from dpsnet.distill.guard import check_pool_disjoint
from dpsnet.distill.holdout import apply_holdout
from dpsnet.distill.pseudo_labels import threshold_for_round
from dpsnet.distill.steps import Detectron2Steps, count_levels, pseudo_dataset_name
from dpsnet.distill.teacher import EMA_FILE
from dpsnet.utils.io import atomic_write_json, load_json

logger = logging.getLogger(__name__)

__all__ = [
    "STATE_FILE",
    "CountGuidedComparison",
    "Detectron2Steps",
    "RunMismatchError",
    "check_guard",
    "control_config",
    "count_levels",
    "pseudo_dataset_name",
    "round_config",
    "round_dir",
    "round_weights",
    "run_distillation",
    "set_count_guided",
]

STATE_FILE = "distill_state.json"
STAGES = ("start", "labelled", "audited", "trained", "thresholded", "done")
# Settings a resumed run must share with the run that wrote the state file (a key missing from
# an older state file is not compared).
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
    "DISTILL.UNCERTAIN_MODE",
    "DISTILL.ACCEPT_RULE",
    "DISTILL.STUDENT_LR_FACTOR",
    "DISTILL.STUDENT_WARMUP_ITERS",
    "DISTILL.EMA_DECAY",
    "DISTILL.AVERAGE_DECAY",
    "DISTILL.TEACHER_FLIP",
    "DISTILL.TEACHER_MIN_SIZE",
    "DISTILL.AMBIGUOUS_SCORE",
    "DISTILL.CLASS_SET_RATIO",
    "DISTILL.CLASS_SET_PAIR_SHARE",
    "DISTILL.PSEUDO_BOX_REGRESSION",
    "DISTILL.THRESHOLD_DATASET",
    "DISTILL.THRESHOLD_HOLDOUT",
    "DATASETS.TRAIN",
    "SOLVER.MAX_ITER",
    "SEED",
)


class RunMismatchError(RuntimeError):
    """OUTPUT_DIR holds a distillation run made with different settings."""


def round_dir(cfg, r: int) -> Path:
    return Path(cfg.OUTPUT_DIR) / f"round_{r}"


def _get(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


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


def round_config(cfg, r: int, init_weights: str | None, *, control: bool = False):
    """The training config of round ``r`` (0: synthesized only; else the student's).

    Args:
        cfg: the run's config.
        r: the round.
        init_weights: the weights a student starts from with ``STUDENT_INIT "teacher"`` (the
            previous round's student; for the control, the previous round's control).
        control: the control arm's config: DATASETS.TRAIN only, under ``round_<r>/control``,
            otherwise the student's iterations, schedule, learning rate and seed.
    """
    c = cfg.clone()
    c.defrost()
    c.OUTPUT_DIR = str(round_dir(cfg, r) / "control" if control else round_dir(cfg, r))
    # The loop evaluates itself; an empty test set keeps the trainer's final EvalHook a no-op.
    c.DATASETS.TEST = ()
    c.TEST.EVAL_PERIOD = 0
    if cfg.SEED >= 0:
        c.SEED = cfg.SEED + r
    average = float(cfg.DISTILL.AVERAGE_DECAY)
    if average > 0 and float(cfg.DISTILL.EMA_DECAY) > 0:
        raise ValueError("DISTILL.AVERAGE_DECAY and DISTILL.EMA_DECAY exclude each other: set one")
    if r == 0 or control:
        # Round 0: an average over it would be mostly the initialisation; the control: no
        # teacher is ever taken from it.
        c.DISTILL.EMA_DECAY = 0.0
    if r > 0 and average > 0:  # both arms: the round's model is the average (``round_weights``)
        c.DISTILL.EMA_DECAY = average
    if r > 0:
        if not control:
            c.DATASETS.TRAIN = (*cfg.DATASETS.TRAIN, pseudo_dataset_name(cfg, r))
        iters = int(cfg.DISTILL.ITERS_PER_ROUND)
        scale = iters / max(int(cfg.SOLVER.MAX_ITER), 1)
        c.SOLVER.MAX_ITER = iters
        c.SOLVER.STEPS = tuple(
            s2 for s2 in (int(s * scale) for s in cfg.SOLVER.STEPS) if 0 < s2 < iters
        )
        c.SOLVER.BASE_LR = float(cfg.SOLVER.BASE_LR) * float(cfg.DISTILL.STUDENT_LR_FACTOR)
        warmup = int(cfg.DISTILL.STUDENT_WARMUP_ITERS)
        if warmup < 0:
            warmup = min(int(cfg.SOLVER.WARMUP_ITERS), max(iters // 10, 1))
        c.SOLVER.WARMUP_ITERS = min(warmup, iters)
        # At least one checkpoint inside the round, so that a killed round resumes mid-way.
        if c.SOLVER.CHECKPOINT_PERIOD >= iters:
            c.SOLVER.CHECKPOINT_PERIOD = max(iters // 2, 1)
        init = cfg.DISTILL.STUDENT_INIT
        if init == "teacher":
            c.MODEL.WEIGHTS = init_weights
        elif init != "scratch":
            raise ValueError(f"DISTILL.STUDENT_INIT must be 'teacher' or 'scratch', got {init!r}")
    c.freeze()
    return c


def round_weights(cfg, r: int, trained: str, train_cfg) -> str:
    """The model a trained round (either arm) stands for: its last weights, or with
    ``DISTILL.AVERAGE_DECAY`` the average the EMA hook saved beside them."""
    if r == 0 or float(cfg.DISTILL.AVERAGE_DECAY) <= 0:
        return trained
    path = Path(train_cfg.OUTPUT_DIR) / EMA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: DISTILL.AVERAGE_DECAY is set but no average was saved")
    return str(path)


def control_config(cfg, r: int, init_weights: str):
    """The control arm's training config of round ``r`` >= 1 (see ``round_config``)."""
    return round_config(cfg, r, init_weights, control=True)


def _groundtruth_path(cfg) -> str | None:
    """The pool's hidden ground truth for the audit (read after selection, never by it).

    In order: ``DISTILL.POOL_GROUNDTRUTH``; the pool metadata's ``groundtruth_json``;
    ``pool_groundtruth.json`` in its ``dataset_root``; the pool's own annotation file when the
    pool is a labelled registered split (metadata ``evaluator_type`` "rpc" and ``json_file``).
    """
    path = cfg.DISTILL.POOL_GROUNDTRUTH
    if not path:
        meta = MetadataCatalog.get(cfg.DISTILL.POOL_DATASET)
        path = meta.get("groundtruth_json", "")
        if not path and meta.get("dataset_root", ""):
            path = os.path.join(meta.dataset_root, "pool_groundtruth.json")
        if not (path and os.path.isfile(path)) and meta.get("evaluator_type", None) == "rpc":
            path = meta.get("json_file", "")
    return path if path and os.path.isfile(path) else None


def _load_state(cfg) -> dict:
    path = Path(cfg.OUTPUT_DIR) / STATE_FILE
    fingerprint = _fingerprint(cfg)
    if not path.is_file():
        return {"fingerprint": fingerprint, "rounds": {}}
    state = load_json(path)
    stored = state["fingerprint"]
    changed = [
        f"{k}: {stored.get(k)!r} -> {v!r}"
        for k, v in fingerprint.items()
        if k in stored and stored[k] != v
    ]
    if changed:
        raise RunMismatchError(
            f"{path} was written by a run with other settings ({'; '.join(changed)}); "
            "use another OUTPUT_DIR or delete it"
        )
    return state


def run_distillation(cfg, steps=None, *, guard: bool = True) -> dict:
    """Run (or resume) every round and its control; returns the state (complete on rank 0).

    Args:
        cfg: a frozen config with dpsnet's keys.
        steps: the stage implementations (default ``Detectron2Steps``).
        guard: run the honesty guard first (the tool runs it before spawning processes).

    Raises:
        ValueError: ``DISTILL.THRESHOLD_DATASET`` is an evaluation split or the pool.
        RunMismatchError: OUTPUT_DIR holds a run made with other settings.
    """
    steps = steps or Detectron2Steps()
    cfg = apply_holdout(cfg)
    threshold_dataset = check_threshold_dataset(cfg)
    if guard:
        check_guard(cfg)
    state = _load_state(cfg)
    main = comm.is_main_process()
    out = Path(cfg.OUTPUT_DIR)

    def save(plot: bool = False):
        if main:
            atomic_write_json(out / STATE_FILE, state, indent=1)
            report.write_report(out, state, plot=plot)

    arm = Arm(cfg, steps, save, threshold_dataset)
    save()
    gt_path = _groundtruth_path(cfg)
    round0_iters, iters = int(cfg.SOLVER.MAX_ITER), int(cfg.DISTILL.ITERS_PER_ROUND)
    for r in range(int(cfg.DISTILL.NUM_ROUNDS) + 1):
        rs = state["rounds"].setdefault(str(r), {"stage": "start"})
        rdir = round_dir(cfg, r)
        first_iter = 0 if r == 0 else round0_iters + (r - 1) * iters
        prev = state["rounds"].get(str(r - 1), {})
        pseudo_json = rdir / "pseudo_labels.json"
        logger.info("Distillation round %d: at stage %r", r, rs["stage"])
        if r == 0 and rs["stage"] == "start":
            rs["stage"] = "audited"  # nothing to label in round 0
        if rs["stage"] == "start":
            rs["threshold"] = threshold_for_round(cfg.DISTILL.THRESHOLD_SCHEDULE, r)
            rs["teacher"] = prev.get("teacher_weights") or prev["weights"]
            rs["pseudo_json"] = str(pseudo_json)
            rs["statistics"] = steps.label(cfg, rs["teacher"], r, pseudo_json)
            rs["stage"] = "labelled"
            save()
        if rs["stage"] == "labelled":
            # After selection, from the written file: the audit cannot feed selection.
            if main and gt_path is not None:
                rs["audit"] = audit_pseudo_label_files(pseudo_json, gt_path)
                rs["audit"]["groundtruth"] = gt_path
            rs["stage"] = "audited"
            save()
        train_cfg = round_config(cfg, r, prev.get("weights"))
        if rs["stage"] == "audited":
            if r == 0 and cfg.DISTILL.ROUND0_WEIGHTS:
                rs["weights"] = cfg.DISTILL.ROUND0_WEIGHTS
            else:
                if r > 0:
                    steps.register(cfg, r, pseudo_json)
                rs["weights"] = round_weights(cfg, r, steps.train(train_cfg), train_cfg)
                ema = Path(train_cfg.OUTPUT_DIR) / EMA_FILE
                if float(cfg.DISTILL.EMA_DECAY) > 0 and r > 0 and ema.is_file():
                    rs["teacher_weights"] = str(ema)
            rs["stage"] = "trained"
            save()
        own = not (r == 0 and cfg.DISTILL.ROUND0_WEIGHTS)
        arm.finish(rs, train_cfg, rdir, first_iter, own_weights=own)
        if r > 0 and cfg.DISTILL.CONTROL:
            ctl = rs.setdefault("control", {"stage": "start"})
            prev_ctl = prev.get("control", prev)  # round 0 is round 1's control start
            ctl_cfg = control_config(cfg, r, prev_ctl.get("weights"))
            if ctl["stage"] == "start":
                ctl["init"] = prev_ctl.get("weights")
                ctl["weights"] = round_weights(cfg, r, steps.train(ctl_cfg), ctl_cfg)
                ctl["stage"] = "trained"
                save()
            arm.finish(ctl, ctl_cfg, rdir / "control", first_iter, own_weights=True)
            if main and "gain_interval" not in rs and rs["stage"] == ctl["stage"] == "done":
                modes = sorted(rs.get("metrics") or {})
                seed = max(int(cfg.SEED), 0)
                rs["gain_interval"] = gain_intervals(rdir, rdir / "control", modes, seed)
                save()
        comm.synchronize()
    return state
