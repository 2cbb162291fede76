#!/usr/bin/env python
"""Render synthesized checkout scenes toward the look of real checkout images.

    # fast statistics-matching renderer (CPU), checked, written and registered:
    python tools/render.py render --config-file configs/Render/fast_mini_world.yaml \\
        RENDER.SOURCE output/synth/instances_synth.json RENDER.OUTPUT_DIR output/render_fast
    # learned renderer: train a CycleGAN (resumes from its last checkpoint), then render
    python tools/render.py train --config-file configs/Render/cyclegan_R9_gpu.yaml \\
        RENDER.SOURCE output/synth/instances_synth.json
    python tools/render.py render --config-file configs/Render/cyclegan_R9_gpu.yaml \\
        RENDER.SOURCE output/synth/instances_synth.json RENDER.OUTPUT_DIR output/render_cyclegan
    # check images rendered by another tool (same file names) and keep those that pass
    python tools/render.py render RENDER.METHOD folder RENDER.FOLDER their/images \\
        RENDER.SOURCE output/synth/instances_synth.json
    # how far a set's look is from the target's
    python tools/render.py stats RENDER.SOURCE output/synth/instances_synth.json

RENDER.SOURCE is a registered dataset or a JSON; tools/synthesize.py writes OUT/instances_synth.json
with its images in OUT/images/, found by default (else give RENDER.SOURCE_IMAGE_ROOT).
Writes RENDER.OUTPUT_DIR/{images/, dropped/, instances.json, render_report.json}; the labels
of the kept images are the source's, unchanged.
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers datasets)

# isort: split
import argparse
import json
import logging
import sys

from dpsnet.engine import ConfigError, load_config
from dpsnet.engine.cli import ArgumentParser, int_at_least, run
from dpsnet.synthesis.render import render_from_config, train_from_config
from dpsnet.synthesis.render.jobs import compare_looks
from dpsnet.utils.io import BadInputError


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    modes = p.add_subparsers(dest="mode", required=True, metavar="{render,train,stats}")
    for mode, text in (
        ("render", "render RENDER.SOURCE, check every image, write and register the kept ones"),
        ("train", "train the CycleGAN renderer (resumes from its last checkpoint)"),
        ("stats", "compare the look of RENDER.SOURCE with RENDER.TARGET"),
    ):
        m = modes.add_parser(mode, help=text, description=text)
        m.add_argument("--config-file", default="", metavar="FILE", help="YAML config")
        if mode == "render":
            m.add_argument("--overwrite", action="store_true", help="render again images on disk")
            m.add_argument(
                "--limit", type=int_at_least(0), default=0, help="render only the first N images"
            )
        if mode == "train":
            m.add_argument("--no-resume", action="store_true", help="ignore the last checkpoint")
        m.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config(args.config_file, args.opts)
        if args.mode == "train":
            print(train_from_config(cfg, resume=not args.no_resume))
        elif args.mode == "stats":
            print(json.dumps(compare_looks(cfg), indent=1))
        else:
            report = render_from_config(cfg, overwrite=args.overwrite, limit=args.limit)
            keys = ("images", "kept", "dropped_by_check", "bad_input", "items_failed", "dataset")
            print(json.dumps({k: report.get(k) for k in keys}))
            if "look" in report:
                print(json.dumps({k: report["look"][k] for k in report["look"] if "_to_" in k}))
    except (ConfigError, BadInputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(
        run(main, resume_hint="rerun the same command: images on disk are kept, training resumes")
    )
