"""Evaluating a round's model: count-guided inference off and on, and the score threshold.

``CountGuidedComparison`` feeds one inference pass to three RPC evaluators. ``threshold_choice``
reads the evaluation of a model on held-out labelled data (``DISTILL.THRESHOLD_DATASET``, never
the evaluation split nor the pool) and returns the score threshold maximising cAcc there (rpctool's
search, ``dpsnet.evaluation.rpc_metrics.search_score_threshold``, run by the evaluator) and
whether count-guided inference wins on that same data. ``round_figures`` pulls the report's
figures out of an evaluation.
"""

import logging
from pathlib import Path

from detectron2.evaluation import DatasetEvaluator

from dpsnet.engine import build_evaluator

logger = logging.getLogger(__name__)

__all__ = [
    "CountGuidedComparison",
    "check_threshold_dataset",
    "count_guided_key",
    "gain_intervals",
    "round_figures",
    "set_count_guided",
    "threshold_choice",
]

# Config keys that switch count-guided inference, in the order they are looked for.
_COUNT_GUIDED_KEYS = ("MODEL.DPSNET.COUNT_GUIDED.ENABLED",)
#: Figures per inference mode in the report: name -> flat metric key of the evaluator.
FIGURES = {
    "cAcc": "cAcc",
    "easy/cAcc": "easy/cAcc",
    "medium/cAcc": "medium/cAcc",
    "hard/cAcc": "hard/cAcc",
    "mAP50": "mAP50",
    "mmAP": "mmAP",
    "ACD": "ACD",
    "count_MAE": "count/total_MAE",
}


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


def _flat(results: dict) -> dict:
    """The evaluator's flat metrics (``{"rpc": {...}}`` or already flat)."""
    if isinstance(results, dict) and isinstance(results.get("rpc"), dict):
        return results["rpc"]
    return results or {}


def round_figures(metrics: dict) -> dict:
    """{mode: {figure: value}} of ``FIGURES`` from a round's evaluation (mode -> results)."""
    out = {}
    for mode, results in (metrics or {}).items():
        flat = _flat(results)
        out[mode] = {name: float(flat[key]) for name, key in FIGURES.items() if key in flat}
    return out


def check_threshold_dataset(cfg) -> str | None:
    """``DISTILL.THRESHOLD_DATASET`` (None when empty), refused when it is evaluated or the pool.

    Raises:
        ValueError: it names the evaluation split, a DATASETS.TEST split or the pool.
    """
    name = cfg.DISTILL.THRESHOLD_DATASET
    if not name:
        return None
    evaluated = {cfg.DISTILL.EVAL_DATASET, *cfg.DATASETS.TEST}
    if name in evaluated:
        raise ValueError(
            f"DISTILL.THRESHOLD_DATASET {name!r} is an evaluation split: the threshold must be "
            "chosen without test labels"
        )
    if name == cfg.DISTILL.POOL_DATASET:
        raise ValueError(
            f"DISTILL.THRESHOLD_DATASET {name!r} is the pool; give a labelled split that is not"
        )
    return name


def threshold_choice(metrics: dict, source: str) -> dict:
    """The score threshold chosen on held-out data, and whether count-guided inference wins.

    Args:
        metrics: the evaluation (mode -> results) of one model on ``source`` with
            ``TEST.RPC.SEARCH_THRESHOLD`` on; modes as ``Detectron2Steps.evaluate`` returns them.
        source: the held-out dataset's name (recorded).

    Returns:
        {"threshold", "source", "cAcc_at_threshold" (plain inference at that threshold, on
        ``source``), "count_guided_cAcc" (None without count-guided inference),
        "count_guided_default" (True only when count-guided inference scores a higher cAcc on
        ``source`` than plain inference at the chosen threshold)}.

    Raises:
        KeyError: the evaluation holds no searched threshold.
    """
    plain = _flat(metrics.get("count_guided_off") or metrics.get("default") or {})
    if "search/threshold" not in plain:
        raise KeyError(f"no searched threshold in the evaluation on {source} (SEARCH_THRESHOLD?)")
    guided = _flat(metrics.get("count_guided_on") or {})
    plain_cacc = float(plain["search/cAcc"])
    guided_cacc = float(guided["cAcc"]) if "cAcc" in guided else None
    return {
        "threshold": float(plain["search/threshold"]),
        "source": source,
        "cAcc_at_threshold": plain_cacc,
        "count_guided_cAcc": guided_cacc,
        "count_guided_default": guided_cacc is not None and guided_cacc > plain_cacc,
    }


def gain_intervals(distilled_dir: Path, control_dir: Path, modes, seed: int = 0) -> dict:
    """Per inference mode, the distilled - control cAcc difference on the evaluated images,
    with its paired-bootstrap interval (``dpsnet.evaluation.paired``).

    Reads each arm's ``eval_<mode>/rpc_per_image.json`` (written by the RPC evaluator); a mode
    without both files is left out (e.g. a run evaluated before they existed), and so is one
    whose file is unreadable (a warning names it: the figures stand without the interval).
    """
    from dpsnet.evaluation.paired import paired_cacc_difference
    from dpsnet.evaluation.rpc_report import PER_IMAGE_FILE
    from dpsnet.utils.io import load_json

    out = {}
    for mode in modes:
        files = [Path(d) / f"eval_{mode}" / PER_IMAGE_FILE for d in (distilled_dir, control_dir)]
        if not all(f.is_file() for f in files):
            continue
        try:
            first, second = (load_json(f) for f in files)
            found = paired_cacc_difference(first, second, seed=seed)
        except (ValueError, TypeError, AttributeError) as e:  # BadInputError is a ValueError
            logger.warning("No gain interval for %s: %s", mode, e)
            continue
        if found is not None:
            out[mode] = found
    return out
