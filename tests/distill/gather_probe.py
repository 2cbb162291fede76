"""Pseudo-labels a tiny pool on 2 CPU processes with a scripted teacher (used by test_gather.py).

Each rank records the pool images it ran the teacher on; rank 0 writes the gathered JSON.
Usage: python gather_probe.py DATA_DIR OUT_DIR
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers dpsnet's parts)

# isort: split
import json
import sys
from pathlib import Path

import torch
from detectron2.config import get_cfg
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm

from dpsnet.config import add_dpsnet_config
from dpsnet.data.datasets import register_checkout_dataset
from dpsnet.distill.loop import Detectron2Steps
from dpsnet.engine import launch

DATA_DIR, OUT_DIR = Path(sys.argv[1]), Path(sys.argv[2])
# Registered at import, so processes spawned by launch() see them too.
register_checkout_dataset("distill_probe_train", DATA_DIR / "train.json", DATA_DIR)
register_checkout_dataset(
    "distill_probe_pool", DATA_DIR / "pool.json", DATA_DIR, evaluator_type=None
)


class Teacher(torch.nn.Module):
    """Even image ids agree with the count (image level), odd ones are unsure (rejected)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, inputs):
        outs = []
        for x in inputs:
            self.seen.append(x["image_id"])
            inst = Instances((x["height"], x["width"]))
            inst.pred_boxes = Boxes(torch.tensor([[4.0, 4.0, 20.0, 20.0]]))
            inst.scores = torch.tensor([0.99 if x["image_id"] % 2 == 0 else 0.5])
            inst.pred_classes = torch.tensor([0])
            outs.append({"instances": inst, "counts": torch.tensor([1.0])})
        return outs


class Steps(Detectron2Steps):
    def _load(self, cfg, weights):
        self.teacher = Teacher()
        return self.teacher


def main():
    cfg = get_cfg()
    add_dpsnet_config(cfg)
    cfg.DATASETS.TRAIN = ("distill_probe_train",)
    cfg.DISTILL.POOL_DATASET = "distill_probe_pool"
    cfg.DISTILL.COUNT_LEVELS = ["total"]
    cfg.freeze()
    steps = Steps()
    stats = steps.label(cfg, "teacher.pth", 1, OUT_DIR / "pseudo_labels.json")
    rank = comm.get_rank()
    report = {"rank": rank, "world_size": comm.get_world_size(), "seen": steps.teacher.seen}
    report["stats"] = stats
    (OUT_DIR / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    launch(main, 2)
