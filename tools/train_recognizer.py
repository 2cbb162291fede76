#!/usr/bin/env python
"""Train the open-set recogniser (product embedder) on a dataset's exemplar boxes.

    python tools/train_recognizer.py --config-file configs/OpenSet/recognizer_R18_mini_rpc.yaml
    python tools/train_recognizer.py --config-file C --output-dir output/rec --resume \\
        RECOGNITION.TRAIN.HOLDOUT_FRACTION 0.2

Writes model_final.pth, gallery.npz (held-out products added through the gallery alone, unknown
distance calibrated on RECOGNITION.TRAIN.VAL_DATASETS) and metrics.json to the output folder.
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers datasets)

# isort: split
import argparse
import json
import sys

import torch
from detectron2.utils.logger import setup_logger

from dpsnet.engine import ConfigError, load_config
from dpsnet.engine.cli import ArgumentParser, int_at_least, run
from dpsnet.recognition.evaluate import evaluate_recognizer
from dpsnet.recognition.train import train_recognizer
from dpsnet.utils.io import BadInputError


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output-dir", default="", help="default: the config's OUTPUT_DIR")
    parser.add_argument("--resume", action="store_true", help="continue last_checkpoint.pth")
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="evaluate model_final.pth of the output folder again (gallery as the config says)",
    )
    parser.add_argument(
        "--num-threads", type=int_at_least(0), default=0, help="torch CPU threads (0: all)"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_file, args.opts)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    setup_logger(name="dpsnet")
    output_dir = args.output_dir or cfg.OUTPUT_DIR
    try:
        if args.eval_only:
            metrics = evaluate_recognizer(cfg, output_dir)
        else:
            metrics = train_recognizer(cfg, output_dir, resume=args.resume)
    except BadInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {k: metrics[k] for k in ("all", "known", "added", "unknown_distance")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, resume_hint="rerun with --resume to continue from last_checkpoint.pth"))
