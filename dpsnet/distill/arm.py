"""One model's stages after training, shared by a distillation round and its control.

``Arm.finish`` takes a stage dict from "trained" to "done": the score threshold chosen on
held-out labelled data (stored in the checkpoint the run wrote), the evaluation split at that
threshold, and the learning-curve checkpoints of the training (``DISTILL.CURVE_EVAL_PERIOD``).
"""

import os
from pathlib import Path

from detectron2.utils import comm

from dpsnet.distill.evaluation import round_figures, threshold_choice

__all__ = ["Arm"]


def _store_threshold(weights: str, choice: dict) -> None:
    """Write the chosen threshold into the checkpoint (rank 0; files the run wrote only)."""
    from dpsnet.utils.checkpoint_meta import update_meta

    if comm.is_main_process() and os.path.isfile(weights):
        update_meta(
            weights,
            score_threshold=choice["threshold"],
            threshold_source=choice["source"],
            count_guided_default=choice["count_guided_default"],
        )


class Arm:
    """Threshold -> evaluate -> curve of one trained model, on its stage dict (shared by the
    distilled round and its control).

    Args:
        cfg: the run's config.
        steps: the stage implementations (``evaluate`` is used).
        save: called after every stage (writes the state file and the report).
        threshold_dataset: where the score threshold is chosen, or None (fixed threshold).
    """

    def __init__(self, cfg, steps, save, threshold_dataset: str | None):
        self.cfg, self.steps, self.save = cfg, steps, save
        self.threshold_dataset = threshold_dataset

    def finish(self, st: dict, train_cfg, out_dir: Path, first_iter: int, own_weights: bool):
        """Run the stages of ``st`` from "trained" on (``st["weights"]`` is set)."""
        cfg = self.cfg
        if st["stage"] == "trained":
            st["threshold_choice"] = None
            if self.threshold_dataset:
                c = cfg.clone()
                c.defrost()
                c.DISTILL.EVAL_DATASET = self.threshold_dataset
                c.TEST.RPC.SEARCH_THRESHOLD = True
                c.freeze()
                metrics = self.steps.evaluate(c, st["weights"], out_dir / "threshold")
                st["threshold_choice"] = threshold_choice(metrics, self.threshold_dataset)
                if own_weights:
                    _store_threshold(st["weights"], st["threshold_choice"])
            st["stage"] = "thresholded"
            self.save()
        if st["stage"] == "thresholded":
            st["metrics"] = self.steps.evaluate(self._at_threshold(st), st["weights"], out_dir)
            st["figures"] = round_figures(st["metrics"])
            st["iteration"] = first_iter + int(train_cfg.SOLVER.MAX_ITER)
            self._curve(st, train_cfg, out_dir, first_iter)
            st["stage"] = "done"
            self.save(plot=True)

    def _at_threshold(self, st: dict):
        choice = st.get("threshold_choice")
        if not choice:
            return self.cfg
        c = self.cfg.clone()
        c.defrost()
        c.TEST.RPC.SCORE_THRESHOLD = float(choice["threshold"])
        c.freeze()
        return c

    def _curve(self, st: dict, train_cfg, out_dir: Path, first_iter: int) -> None:
        """Evaluate the learning-curve checkpoints of this training (DISTILL.CURVE_EVAL_PERIOD)."""
        points = st.setdefault("curve", {})
        train_dir = Path(train_cfg.OUTPUT_DIR)
        for path in sorted(train_dir.glob("curve_*.pth")):
            it = int(path.stem.split("_")[1])
            if str(it) in points:
                continue
            metrics = self.steps.evaluate(self._at_threshold(st), str(path), out_dir / path.stem)
            points[str(it)] = {"iteration": first_iter + it, "figures": round_figures(metrics)}
            self.save()
