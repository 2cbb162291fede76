"""Iterative knowledge distillation: pseudo-labels on an unlabelled pool, rounds, honesty guard."""

from dpsnet.distill.guard import PoolLeakError, check_pool_disjoint
from dpsnet.distill.loop import run_distillation
from dpsnet.distill.pseudo_labels import CountLayout, select_image, threshold_for_round

__all__ = [
    "CountLayout",
    "PoolLeakError",
    "check_pool_disjoint",
    "run_distillation",
    "select_image",
    "threshold_for_round",
]
