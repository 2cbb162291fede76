#!/usr/bin/env python
"""Iterative knowledge distillation: round 0 on synthesized data, then pseudo-label rounds.

    python tools/distill.py --config-file configs/MiniWorld/<config>.yaml OUTPUT_DIR out/distill
    python tools/distill.py --config-file C DISTILL.NUM_ROUNDS 2 DISTILL.ITERS_PER_ROUND 200
    python tools/distill.py --config-file C --num-gpus 2      # pool split over 2 processes
    python tools/distill.py --config-file C --transductive    # allow a pool sharing eval images

Re-running the same command resumes a killed run at the round, stage and iteration it reached.
Every round >= 1 also trains its same-budget control (DISTILL.CONTROL); with
DISTILL.THRESHOLD_DATASET (a labelled split that is neither the pool nor evaluated) each model's
score threshold is chosen there and stored in its checkpoint. Several seeds:
tools/distill_seeds.py. Writes OUTPUT_DIR/distill_report.{json,md,png}.
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers dpsnet's parts)

# isort: split
import logging
import sys

from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from dpsnet.distill.evaluation import check_threshold_dataset
from dpsnet.distill.guard import PoolLeakError
from dpsnet.distill.loop import RunMismatchError, check_guard, run_distillation
from dpsnet.engine import check_weights, launch, load_config, resolve_device
from dpsnet.engine.cli import EXIT_INTERRUPTED, int_at_least, one_line_errors
from dpsnet.engine.setup import ConfigError, check_datasets, check_solver
from dpsnet.utils.io import BadInputError


def build_config(args):
    cfg = load_config(args.config_file, args.opts)
    if args.transductive:
        cfg.DISTILL.TRANSDUCTIVE = True
    return cfg


def main(args):
    cfg = build_config(args)
    resolve_device(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="dpsnet")
    # The guard already ran in the launching process (below), before any process was spawned.
    return run_distillation(cfg, guard=False)


def build_parser():
    parser = one_line_errors(default_argument_parser())
    for action in parser._actions:  # detectron2's process counts: at least one
        if action.dest in ("num_gpus", "num_machines"):
            action.type = int_at_least(1)
        elif action.dest == "machine_rank":
            action.type = int_at_least(0)
    parser.add_argument(
        "--transductive",
        action="store_true",
        help="allow a pool that shares images with the evaluation split (reported as such); "
        "its labels are still never read for selection",
    )
    # detectron2 derives a fixed port from the user id, so two jobs on one machine collide.
    parser.set_defaults(dist_url="auto")
    return parser


def cli(argv=None):
    args = build_parser().parse_args(argv)
    try:  # fail fast, in one line, before any process is spawned
        cfg = build_config(args)
        check_weights(cfg)
        if cfg.DISTILL.ROUND0_WEIGHTS:
            cfg.MODEL.WEIGHTS = cfg.DISTILL.ROUND0_WEIGHTS
            check_weights(cfg)
        check_datasets(cfg, ("TRAIN",), {"DISTILL.POOL_DATASET": cfg.DISTILL.POOL_DATASET})
        check_solver(cfg)
        check_guard(cfg)
        check_threshold_dataset(cfg)
    except (ConfigError, PoolLeakError, RunMismatchError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.getLogger("dpsnet").info("Command line arguments: %s", args)
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except KeyboardInterrupt:
        print("interrupted; rerun the same command: it resumes at the round, stage and "
              "iteration reached", file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    except BadInputError as e:  # a weights file that does not fit, an unreadable checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
