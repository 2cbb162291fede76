#!/usr/bin/env python
"""Search anchor sizes and aspect ratios for a registered dataset's boxes.

    python tools/optimize_anchors.py mini_rpc_val --config-file configs/OpenSet/<detector>.yaml

Boxes are scaled as the config's test-time resize would scale them (INPUT.MIN_SIZE_TEST,
MAX_SIZE_TEST). Prints the config lines to paste and the mean best-anchor IoU of the found
anchors beside detectron2's defaults (sizes 32..512, ratios 0.5/1/2) and the config's own.
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers datasets)

# isort: split
import sys

from detectron2.data import DatasetCatalog

from dpsnet.engine import ConfigError, load_config
from dpsnet.engine.cli import ArgumentParser, int_at_least, run
from dpsnet.recognition.anchors import (
    DEFAULT_RATIOS,
    DEFAULT_SIZES,
    dataset_boxes_wh,
    mean_best_iou,
    optimize_anchors,
)
from dpsnet.utils.io import atomic_write_json


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("dataset", nargs="+", help="registered dataset name(s)")
    parser.add_argument("--config-file", default="", help="detector config (input size, anchors)")
    parser.add_argument("--num-ratios", type=int_at_least(1), default=3)
    parser.add_argument("--json", help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_file or None)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    min_size, max_size = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST
    try:
        dicts = [r for name in args.dataset for r in DatasetCatalog.get(name)]
    except KeyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    wh = dataset_boxes_wh(dicts, min_size, max_size)
    if len(wh) == 0:
        print(f"error: no boxes in {args.dataset}", file=sys.stderr)
        return 2
    levels = cfg.MODEL.ANCHOR_GENERATOR.SIZES
    # One feature map with several sizes (detectron2's default, no FPN): sizes still double.
    one_map = len(levels) == 1 and len(levels[0]) > 1
    num_levels, per_level = (len(levels[0]), 1) if one_map else (len(levels), len(levels[0]))
    sizes, ratios, iou = optimize_anchors(
        wh, num_levels=num_levels, scales_per_level=per_level, num_ratios=args.num_ratios
    )
    if one_map:
        sizes = [[s for level in sizes for s in level]]
    default_iou = mean_best_iou(wh, DEFAULT_SIZES, DEFAULT_RATIOS)
    cfg_sizes = [s for level in cfg.MODEL.ANCHOR_GENERATOR.SIZES for s in level]
    config_iou = mean_best_iou(wh, cfg_sizes, cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS[0])
    print(f"{len(wh)} boxes of {args.dataset} at test scale (short side {min_size})")
    print("MODEL:\n  ANCHOR_GENERATOR:")
    print(f"    SIZES: {sizes}")
    print(f"    ASPECT_RATIOS: [{ratios}]")
    print(
        f"mean best-anchor IoU: optimised {iou:.3f}, detectron2 default {default_iou:.3f}, "
        f"this config {config_iou:.3f}"
    )
    if args.json:
        atomic_write_json(
            args.json,
            {
                "datasets": args.dataset,
                "boxes": len(wh),
                "sizes": sizes,
                "ratios": ratios,
                "iou": iou,
                "default_iou": default_iou,
                "config_iou": config_iou,
            },
            indent=2,
        )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
