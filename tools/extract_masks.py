#!/usr/bin/env python
"""Segment every exemplar (coarse mask, refinement, quality), prune unrealistic poses, cache.

    python tools/extract_masks.py --dataset mini_rpc_train --output output/masks
    python tools/extract_masks.py --json instances_train2019.json --image-root train2019 \\
        --output output/masks --workers 4 SYNTHESIS.MASKS.REFINE.METHOD net
    # with the mini world's truths, for the reports only (never used for a decision):
    python tools/extract_masks.py --dataset mini_rpc_train --output output/masks \\
        --truth-dir datasets/mini_world/train2019_true_masks \\
        --planted-bad-poses datasets/mini_world/train2019_planted_bad_poses.json

Writes OUTPUT/{masks/, coarse/, index.json, pose_report.json, mask_report.json}. A rerun
computes only new or changed exemplars (or all of them when a mask setting changed).
Settings: cfg.SYNTHESIS.MASKS.*, cfg.SYNTHESIS.POSE.*, cfg.SYNTHESIS.SEED.
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers datasets)

# isort: split
import argparse
import json
import logging
import os
import sys

from detectron2.utils.logger import setup_logger

from dpsnet.engine import ConfigError, load_config
from dpsnet.engine.cli import ArgumentParser, int_at_least, run
from dpsnet.synthesis.extract import extract_masks_from_config
from dpsnet.utils.io import BadInputError


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", default="", metavar="FILE", help="YAML config")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", metavar="NAME", help="registered exemplar dataset")
    src.add_argument("--json", metavar="FILE", help="COCO/RPC JSON of the exemplars")
    p.add_argument("--image-root", metavar="DIR", help="image folder of --json")
    p.add_argument("--output", required=True, metavar="OUT", help="output folder")
    p.add_argument("--truth-dir", metavar="DIR", help="true masks <stem>.png (report only)")
    p.add_argument(
        "--planted-bad-poses", metavar="FILE", help="known bad poses (report precision/recall)"
    )
    p.add_argument(
        "--workers", type=int_at_least(1), default=min(2, os.cpu_count() or 1), help="processes"
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if args.json and not args.image_root:
        p.error("--json needs --image-root")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logger = setup_logger(name="dpsnet")
    try:
        cfg = load_config(args.config_file, args.opts)
        result = extract_masks_from_config(
            cfg,
            args.output,
            dataset=args.dataset,
            json_file=args.json,
            image_root=args.image_root,
            workers=args.workers,
            truth_dir=args.truth_dir,
            planted_bad_poses=args.planted_bad_poses,
        )
    except (ConfigError, BadInputError, ValueError) as e:
        logging.getLogger("dpsnet").error("%s", e)
        return 2
    summary = {"run": result["mask_report"]["run"], "poses": result["pose_report"]["total"]}
    truth = result["mask_report"]["truth"]
    if truth:
        summary["iou_vs_truth"] = {"all": truth["all"], "kept": truth["kept"]}
    planted = result["pose_report"].get("planted_bad_poses")
    if planted:
        summary["planted_bad_poses"] = {
            k: {m: planted[k][m] for m in ("precision", "recall", "dropped", "bad")}
            for k in ("pose_drops", "all_drops")
        }
    logger.info("summary:\n%s", json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
