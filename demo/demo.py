#!/usr/bin/env python
"""Check out a folder of images: annotated images, a receipt per image, receipts.csv, report.html.

    python demo/demo.py --config-file configs/MiniWorld/<config>.yaml --input IMAGES_DIR \\
        --output output/demo [--confidence-threshold 0.5] [--metrics-json rpc_metrics.json] \\
        [--opts MODEL.WEIGHTS output/model_final.pth]
    python demo/demo.py --weights OUT/model_final.pth --input IMAGES_DIR --output REPORT_DIR

--input takes folders (every file, recursively), image files or glob patterns ("imgs/**/*.jpg").
Product names and ids come from the metadata of DATASETS.TEST[0] (else DATASETS.TRAIN[0]).
--weights alone runs a checkpoint dpsnet saved: its config, product catalogue and score threshold
travel inside it (an explicit --config-file still overrides the saved config).
Unreadable files are skipped and listed in the log and the report; the exit status is non-zero
only when no image could be checked out (or the command line or config is wrong).
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers dpsnet's parts)

# isort: split
import argparse
import os
import sys

from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger

from dpsnet.checkout import (
    ProductCatalog,
    find_inputs,
    lower_score_thresholds,
    run_checkout,
    write_report,
)
from dpsnet.engine import ConfigError, check_weights, load_config, resolve_device
from dpsnet.engine.checkpoint import chosen_threshold, config_from_checkpoint
from dpsnet.engine.cli import ArgumentParser, run, unit_float
from dpsnet.engine.setup import check_datasets
from dpsnet.engine.trainer import cpu_settings_for, load_external_parts
from dpsnet.utils.io import IMAGE_EXTENSIONS, BadInputError, load_json
from dpsnet.utils.precision import apply_cpu_settings


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])  # one-line errors, exit 2
    parser.add_argument(
        "--config-file", metavar="FILE", help="model config YAML (default: the one in --weights)"
    )
    parser.add_argument(
        "--weights", metavar="PTH", help="a checkpoint dpsnet saved (carries its config and names)"
    )
    parser.add_argument(
        "--input", required=True, nargs="+", help="folders, image files or glob patterns"
    )
    parser.add_argument("--output", required=True, help="folder for the report and receipts")
    parser.add_argument(
        "--confidence-threshold",
        type=unit_float,
        default=None,
        help="score a detection needs to be counted (default: the checkpoint's chosen "
        "threshold, else TEST.RPC.SCORE_THRESHOLD)",
    )
    parser.add_argument(
        "--metrics-json", help="metrics JSON to show in the report (e.g. rpc_metrics.json)"
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow .pkl weights (MODEL.TRUST_PICKLE): unpickling runs code, trusted files only",
    )
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ..."
    )
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logger = setup_logger(name="dpsnet")
    setup_logger(name="detectron2")
    try:
        meta = {}
        if args.weights:
            if not os.path.isfile(args.weights):
                raise ConfigError(f"--weights: file not found: {args.weights}")
            cfg, meta = config_from_checkpoint(args.weights, args.config_file, args.opts)
        elif args.config_file:
            cfg = load_config(args.config_file, args.opts)
        else:
            raise ConfigError("give --weights (a checkpoint dpsnet saved) or --config-file")
        if args.trust_pickle:
            cfg.MODEL.TRUST_PICKLE = True
        check_weights(cfg)
        check_datasets(cfg, ("TEST",), classes=False, names_only=True)  # the product names
        if args.metrics_json:
            load_json(args.metrics_json)  # fail before the model runs, not after
    except (ConfigError, BadInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    threshold = args.confidence_threshold
    if threshold is None:
        threshold = chosen_threshold(meta, cfg)
    if not 0.0 <= threshold <= 1.0:
        print(f"error: --confidence-threshold {threshold} is outside [0, 1]", file=sys.stderr)
        return 2
    lower_score_thresholds(cfg, threshold)
    if resolve_device(cfg):
        logger.info("CUDA is not available: running on cpu")
    cfg.freeze()

    files, problems = find_inputs(args.input, exclude=args.output)
    for problem in problems:
        logger.warning("input %s: %s", problem["file"], problem["reason"])
    if not files and not problems:  # only empty folders: nothing to list in a report
        print(f"error: no images in {' '.join(args.input)}; supported: "
              f"{' '.join(IMAGE_EXTENSIONS)}", file=sys.stderr)  # fmt: skip
        return 2
    catalog = ProductCatalog.from_config(cfg)
    if catalog.source.startswith("dpsnet_checkpoint_"):  # metadata made from the saved catalogue
        catalog.source = f"{args.weights} (its catalogue)"
    try:  # the open-set pipeline reads its parts' files (detector, recogniser, gallery) here
        predictor = DefaultPredictor(cfg)
        load_external_parts(predictor.model, cfg)  # a model builds from its config alone
        settings = cpu_settings_for(cfg)  # precision/layout/threads measured here (None on CUDA)
        if settings is not None:
            apply_cpu_settings(predictor.model, settings)
    except BadInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run = run_checkout(predictor, files, args.output, catalog, threshold, skipped=problems)
    kinds = sorted({"+".join(r["view_levels"]) for r in run.receipts if r["view_levels"]})
    weights, untrained = cfg.MODEL.WEIGHTS, [] if cfg.MODEL.WEIGHTS else ["MODEL.WEIGHTS"]
    if cfg.MODEL.META_ARCHITECTURE == "DPSNetOpenSet":  # its parts name their own files
        r = cfg.RECOGNITION
        parts = {
            "RECOGNITION.DETECTOR.WEIGHTS": r.DETECTOR.WEIGHTS,
            "RECOGNITION.EMBEDDER.WEIGHTS": r.EMBEDDER.WEIGHTS,
            "RECOGNITION.GALLERY.FILE": r.GALLERY.FILE,
        }
        weights = ", ".join(path for path in parts.values() if path)
        untrained = [key for key, path in parts.items() if not path]
    settings = {
        "config": args.config_file or f"saved in {args.weights}",
        "weights": weights or "(none: random initialisation)",
        "device": cfg.MODEL.DEVICE,
        "score threshold": threshold,
        "product names from": catalog.source or "(no metadata)",
        "counting view": ", ".join(kinds) or "(none)",
    }
    warnings = []
    note = getattr(predictor.model, "dpsnet_weights_note", None)  # a trunk-only checkpoint
    if note:
        warnings.append(f"{note}.")
    if untrained:
        warnings.append(f"{' and '.join(untrained)}: empty, so the model is (partly) randomly "
                        "initialised: these receipts show the pipeline working, not a trained "
                        "checkout.")  # fmt: skip
    report = write_report(run, settings, args.metrics_json, warnings)
    if not run.receipts:
        logger.error("no image could be checked out (%d files skipped)", len(run.skipped))
        return 1
    print(f"Report: {report.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, resume_hint="rerun the same command (the demo starts over)"))
