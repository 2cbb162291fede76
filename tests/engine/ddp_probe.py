"""Runs tools/train_net.py's setup and Trainer through dpsnet's launch, then records per rank.

Used by test_train_net.py: each rank writes its final weights and whether it saves
checkpoints, so the test can check that gradients were averaged and only rank 0 wrote.
Usage: python ddp_probe.py DATA_DIR REPORT_DIR [train_net arguments ...]
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers dpsnet's parts)

# isort: split
import importlib.util
import json
import sys
from pathlib import Path

import torch
from detectron2.data.datasets import register_coco_instances
from detectron2.utils import comm

from dpsnet.engine import Trainer, launch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("train_net", ROOT / "tools" / "train_net.py")
train_net = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_net)

DATA_DIR, REPORT_DIR = Path(sys.argv[1]), Path(sys.argv[2])
# Registered at import, so processes spawned by launch() see it too.
register_coco_instances("engine_tiny_train", {}, str(DATA_DIR / "train.json"), str(DATA_DIR))


def main(args):
    cfg = train_net.setup(args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    rank = comm.get_rank()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    torch.save(model.state_dict(), REPORT_DIR / f"weights_rank{rank}.pth")
    report = {
        "rank": rank,
        "world_size": comm.get_world_size(),
        "local_rank": comm.get_local_rank(),
        "saves_checkpoints": bool(trainer.checkpointer.save_to_disk),
        "iter": trainer.iter,
    }
    (REPORT_DIR / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    parser = train_net.default_argument_parser()
    parser.set_defaults(dist_url="auto")
    args = parser.parse_args(sys.argv[3:])
    launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, (args,))
