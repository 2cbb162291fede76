#!/usr/bin/env python
"""Evaluate a COCO-format results file on an RPC annotation file, as rpctool's command line does.

    python tools/evaluate_rpc.py RESULTS.json ANNOTATIONS.json [--levels easy,medium,hard,averaged]
        [--threshold T | --search] [--no-map] [--output-dir DIR] [--cross-class-iou IOU]

Without --threshold or --search, both protocols are reported: the fixed threshold 0.5 (the
deployable figure) and rpctool's threshold searched on the evaluated set (optimistic).
Prints a Markdown table; with --output-dir also writes rpc_metrics.json and rpc_metrics.md.
With --cross-class-iou, detections of different products overlapping above that IoU are first
merged into one per object, as ``MODEL.DPSNET.CROSS_CLASS_IOU`` does at inference (to measure
the merge on saved results, a model's or any other detector's). With --against OTHER.json (and
its own --against-threshold), another model's results on the same annotations are scored too,
and the cAcc difference RESULTS - OTHER is printed with its 95 % paired-bootstrap interval over
the images (``dpsnet.evaluation.paired``): whether two models differ beyond the images drawn.
"""

import dpsnet  # noqa: F401  (first: applies the detectron2 shims)

# isort: split
import json
import logging
import sys

import numpy as np
import torch
from detectron2.structures import Boxes, BoxMode, Instances

from dpsnet.data.datasets.checkout import CLUTTER_LEVELS
from dpsnet.engine.cli import ArgumentParser, int_at_least, name_list, run, unit_float
from dpsnet.evaluation.paired import paired_cacc_difference
from dpsnet.evaluation.results_io import Detections
from dpsnet.evaluation.rpc_report import evaluate_files, markdown_report
from dpsnet.modeling.postprocess import merge_across_classes
from dpsnet.utils.io import BadInputError

#: Names ``--levels`` accepts: RPC's clutter levels and "averaged" (every image).
EVAL_LEVELS = (*CLUTTER_LEVELS, "averaged")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="COCO results: [{image_id, category_id, bbox, score}]")
    parser.add_argument("annotations", help="RPC/COCO ground-truth annotation JSON")
    parser.add_argument(
        "--levels",
        type=name_list(EVAL_LEVELS),
        default=None,
        help='comma-separated levels, e.g. "easy,medium,hard,averaged" (default: every level '
        "present, then averaged)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--threshold", type=unit_float, help="fixed score threshold only")
    group.add_argument(
        "--search", action="store_true", help="only rpctool's searched threshold (optimistic)"
    )
    parser.add_argument("--no-map", action="store_true", help="skip mAP50 / mmAP (pycocotools)")
    parser.add_argument("--output-dir", help="write rpc_metrics.json and rpc_metrics.md here")
    parser.add_argument(
        "--top-k", type=int_at_least(1), default=10, help="rows of the error-analysis tables"
    )
    parser.add_argument("--json", action="store_true", help="print the flat metrics as JSON")
    parser.add_argument(
        "--cross-class-iou",
        type=unit_float,
        default=0.0,
        help="first merge detections of different products overlapping above this IoU into one "
        "(named by the best, scored by the summed scores; 0: off)",
    )
    parser.add_argument(
        "--against",
        metavar="OTHER",
        help="another model's COCO results on the same annotations: print the cAcc difference "
        "(RESULTS - OTHER) with its 95 %% paired-bootstrap interval over the images",
    )
    parser.add_argument(
        "--against-threshold",
        type=unit_float,
        default=None,
        help="OTHER's fixed score threshold (default: the one RESULTS is scored at)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the paired bootstrap's seed")
    return parser.parse_args(argv)


def merge_classes(dets: Detections, iou: float) -> Detections:
    """``merge_across_classes`` on each image's detections (images in index order)."""
    dets = dets.select(np.argsort(dets.image_index, kind="stable"))
    bounds = np.flatnonzero(np.diff(dets.image_index)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(dets)]
    rows, scores = [], []
    for lo, hi in zip(starts, ends, strict=True):
        if lo == hi:
            continue
        inst = Instances((0, 0))
        xyxy = BoxMode.convert(dets.bbox[lo:hi], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
        inst.pred_boxes = Boxes(torch.as_tensor(xyxy, dtype=torch.float64))
        inst.scores = torch.as_tensor(dets.score[lo:hi], dtype=torch.float64)
        inst.pred_classes = torch.as_tensor(dets.category_index[lo:hi])
        inst.row = torch.arange(lo, hi)
        merged = merge_across_classes(inst, iou)
        rows.append(merged.row.numpy())
        scores.append(merged.scores.numpy())
    if not rows:
        return dets
    out = dets.select(np.concatenate(rows))
    out.score = np.concatenate(scores).astype(np.float64)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print(f"error: --threshold {args.threshold} is outside [0, 1]", file=sys.stderr)
        return 2
    threshold = None if args.search else (0.5 if args.threshold is None else args.threshold)
    transform = (
        (lambda d: merge_classes(d, args.cross_class_iou)) if args.cross_class_iou > 0 else None
    )
    try:
        report = evaluate_files(
            args.results,
            args.annotations,
            levels=args.levels,
            score_threshold=threshold,
            search_threshold=args.search or args.threshold is None,
            compute_map=not args.no_map,
            output_dir=args.output_dir,
            top_k=args.top_k,
            transform=transform,
        )
        paired = None
        if args.against:
            other_threshold = (
                threshold if args.against_threshold is None else args.against_threshold
            )
            other = evaluate_files(
                args.against,
                args.annotations,
                levels=["averaged"],
                score_threshold=other_threshold,
                search_threshold=other_threshold is None,
                compute_map=False,
                transform=transform,
            )
            paired = paired_cacc_difference(report["per_image"], other["per_image"], seed=args.seed)
    except BadInputError as e:  # a malformed results or annotation file: bad input
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        out = report["metrics"] if paired is None else {**report["metrics"], "against": paired}
        print(json.dumps(out, indent=2))
    else:
        print(markdown_report(report))
        if paired is not None:
            print(
                f"\ncAcc {args.results} - {args.against}: {paired['difference']:+.2f} points, "
                f"95 % interval [{paired['low']:+.2f}, {paired['high']:+.2f}] (paired bootstrap "
                f"over {paired['images']} images; exactly right only in the first: "
                f"{paired['first_only']}, only in the second: {paired['second_only']})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
