#!/usr/bin/env python
"""Pretrain the detector's ResNet trunk as a product classifier on crops of training boxes.

    python tools/pretrain_backbone.py --config-file configs/MiniWorld/demo.yaml \\
        --output output/pretrain/backbone.pth DATASETS.TRAIN '("mini_synth",)'
    python tools/train_net.py --config-file C MODEL.WEIGHTS output/pretrain/backbone.pth

The stand-in for ImageNet weights where none can be downloaded (dpsnet/recognition/pretrain.py).
Writes the checkpoint (``backbone.bottom_up.*`` tensors, what MODEL.WEIGHTS loads) and a JSON of
its figures beside it. Users with real pretrained weights skip this and set MODEL.WEIGHTS.
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers datasets)

# isort: split
import argparse
import json
import os
import sys

import torch
from detectron2.utils.logger import setup_logger

from dpsnet.engine import ConfigError, load_config
from dpsnet.engine.cli import ArgumentParser, int_at_least, run
from dpsnet.engine.setup import check_dataset
from dpsnet.recognition.pretrain import pretrain_backbone
from dpsnet.utils.io import BadInputError


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="the .pth to write")
    parser.add_argument(
        "--num-threads",
        type=int_at_least(0),
        default=0,
        help="torch CPU threads (0: the free cores)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_file, args.opts)
        datasets = list(cfg.PRETRAIN.DATASETS) or list(cfg.DATASETS.TRAIN)
        key = "PRETRAIN.DATASETS" if cfg.PRETRAIN.DATASETS else "DATASETS.TRAIN"
        for name in datasets:
            check_dataset(name, key)
        for k in ("IMS_PER_BATCH", "MAX_ITER"):
            if int(cfg.PRETRAIN[k]) < 1:
                raise ConfigError(f"PRETRAIN.{k} must be >= 1, got {cfg.PRETRAIN[k]}")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.num_threads:  # wins over the thread count dpsnet would choose
        os.environ["OMP_NUM_THREADS"] = str(args.num_threads)
        torch.set_num_threads(args.num_threads)
    setup_logger(name="dpsnet")
    try:
        metrics = pretrain_backbone(cfg, args.output)
    except (BadInputError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: metrics[k] for k in ("crops", "classes", "heldout_accuracy")}))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, resume_hint="rerun the same command (pretraining starts over)"))
