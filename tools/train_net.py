#!/usr/bin/env python
"""Train or evaluate a dpsnet model (DPSNet, or any detectron2 model) from a YAML config.

    python tools/train_net.py --config-file configs/MiniWorld/<config>.yaml [KEY VALUE ...]
    python tools/train_net.py --config-file C --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file C --num-gpus 8            # one machine, 8 processes
    python tools/train_net.py --config-file C --num-gpus 8 --num-machines 2 --machine-rank 0 \\
        --dist-url tcp://HOST:PORT                                    # and rank 1 on the other
    torchrun --nproc_per_node 2 tools/train_net.py --config-file C    # env:// initialisation

Without CUDA, --num-gpus N runs N CPU processes over gloo (the same path as multi-GPU).
Exit codes: 0 done, 2 bad input (one line: config key, file, dataset), 130 Ctrl-C (the first
Ctrl-C finishes the step and saves OUTPUT_DIR/model_interrupted.pth; --resume continues).
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers dpsnet's parts)

# isort: split
import logging
import sys

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from dpsnet.engine import Trainer, check_weights, launch, load_config, resolve_device
from dpsnet.engine.cli import int_at_least, one_line_errors, run
from dpsnet.engine.interrupt import GracefulInterrupt
from dpsnet.engine.setup import check_datasets, check_solver


def setup(args):
    """Load, check and freeze the config; set up logging in this process."""
    cfg = load_config(args.config_file, args.opts)
    moved_to_cpu = resolve_device(cfg)
    check_weights(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    logger = setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="dpsnet")
    if moved_to_cpu:
        logger.info("CUDA is not available: training with MODEL.DEVICE cpu")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.register_hooks([GracefulInterrupt()])
    return trainer.train()


def build_parser():
    parser = one_line_errors(default_argument_parser())
    for action in parser._actions:  # detectron2's process counts: at least one
        if action.dest in ("num_gpus", "num_machines"):
            action.type = int_at_least(1)
        elif action.dest == "machine_rank":
            action.type = int_at_least(0)
    # detectron2 derives a fixed port from the user id, so two jobs on one machine collide.
    parser.set_defaults(dist_url="auto")
    return parser


def _main(argv=None):
    args = build_parser().parse_args(argv)
    # Fail fast, in one line, before any process is spawned.
    cfg = load_config(args.config_file, args.opts)
    check_weights(cfg)
    check_datasets(cfg, ("TEST",) if args.eval_only else ("TRAIN", "TEST"))
    if not args.eval_only:
        check_solver(cfg)
    logging.getLogger("dpsnet").info("Command line arguments: %s", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0


def cli(argv=None):
    return run(_main, argv, resume_hint="rerun with --resume to continue from the last checkpoint")


if __name__ == "__main__":
    sys.exit(cli())
