#!/usr/bin/env python
"""Synthesize checkout scenes from segmented exemplars (the masks index of extract_masks.py).

    # 1500 scenes of the mini world at 384x384 on 2 processes (resumes if stopped):
    python tools/synthesize.py --config-file configs/MiniWorld/dpsnet_R_18_FPN_mini.yaml \\
        --index output/masks/index.json --output output/synth --num-images 1500 --workers 2
    # only hard scenes, or a mix (relative shares):
    python tools/synthesize.py ... --level hard
    python tools/synthesize.py ... --level easy:1,medium:1,hard:2
    # on 4 machines (same config and index), then gather OUT/images + OUT/shards and merge;
    # the merge also runs by itself when the last shard ends in a folder holding all of them:
    python tools/synthesize.py ... --shard 0 --num-shards 4      # 1, 2, 3 elsewhere
    python tools/synthesize.py merge --output output/synth

Any SYNTHESIS.* key can follow as KEY VALUE (e.g. SYNTHESIS.SEED 3
SYNTHESIS.COMPOSE.IMAGE_SIZE "[384, 384]").

Writes OUT/instances_synth.json (RPC/COCO: boxes and RLE masks of the visible parts, centre
points, levels; the exemplar set's categories, so class ids match it), OUT/images/ (its image
root), OUT/synth_report.json, and registers the set in this process (name:
SYNTHESIS.COMPOSE.DATASET_NAME, default synth_<folder>). Other processes (training) name it in
their config:

    DATASETS:
      REGISTER: [["synth_mini", "output/synth/instances_synth.json", "output/synth/images"]]
      TRAIN: ("synth_mini",)
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers datasets)

# isort: split
import argparse
import json
import sys

from detectron2.utils.logger import setup_logger

from dpsnet.data.datasets.checkout import CLUTTER_LEVELS
from dpsnet.engine import ConfigError, load_config
from dpsnet.engine.cli import ArgumentParser, int_at_least, run
from dpsnet.synthesis.dataset import merge_shards
from dpsnet.synthesis.writer import synthesize
from dpsnet.utils.io import BadInputError


def level_mix(text: str) -> list[float]:
    """``"hard"``, ``"easy,hard"`` or ``"easy:1,medium:1,hard:2"`` -> LEVEL_MIX weights."""
    mix = dict.fromkeys(CLUTTER_LEVELS, 0.0)
    for part in text.split(","):
        name, _, weight = part.strip().partition(":")
        if name not in mix:
            raise argparse.ArgumentTypeError(
                f"unknown level {name!r} (use {', '.join(CLUTTER_LEVELS)})"
            )
        try:
            mix[name] = float(weight) if weight else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad weight in {part!r}") from None
        if not mix[name] >= 0 or mix[name] == float("inf"):  # NaN fails too
            raise argparse.ArgumentTypeError(f"weight in {part!r} must be a number >= 0")
    if sum(mix.values()) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the weights sum to zero")
    return [mix[n] for n in CLUTTER_LEVELS]


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:
        p = ArgumentParser(
            prog="synthesize.py merge",
            description="merge OUT/shards/* into OUT/instances_synth.json and register it",
        )
        p.add_argument("--output", required=True, help="the output folder of the shards")
        p.add_argument("--name", default="", help="dataset name (default synth_<folder>)")
        args = p.parse_args(argv[1:])
        args.mode = "merge"
        return args
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", default="", metavar="FILE", help="YAML config")
    p.add_argument(
        "--index", "--masks", default="", help="masks index (SYNTHESIS.COMPOSE.MASKS_INDEX)"
    )
    p.add_argument("--output", default="", help="output folder (SYNTHESIS.COMPOSE.OUTPUT_DIR)")
    p.add_argument(
        "--num-images", type=int_at_least(1), default=None, help="SYNTHESIS.COMPOSE.NUM_IMAGES"
    )
    p.add_argument(
        "--level", type=level_mix, default=None, help="level mix: hard | easy,hard | easy:1,hard:2"
    )
    p.add_argument(
        "--workers", type=int_at_least(1), default=1, help="processes (output does not change)"
    )
    p.add_argument("--shard", type=int_at_least(0), default=0, help="this piece's number, 0-based")
    p.add_argument("--num-shards", type=int_at_least(1), default=1, help="number of pieces")
    p.add_argument(
        "--allow-missing-products",
        action="store_true",
        help="go on when a product has no exemplar left (SYNTHESIS.COMPOSE.ALLOW_MISSING_PRODUCTS)",
    )
    p.add_argument("--overwrite", action="store_true", help="remake scenes already on disk")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if args.shard >= args.num_shards:
        p.error(f"--shard {args.shard} must be below --num-shards {args.num_shards}")
    args.mode = "run"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="dpsnet")
    try:
        if args.mode == "merge":
            path = merge_shards(args.output, register=True, name=args.name)
            print(json.dumps({"json_file": str(path)}))
            return 0
        opts = list(args.opts)
        for flag, key in (
            (args.index, "MASKS_INDEX"),
            (args.output, "OUTPUT_DIR"),
            (args.num_images, "NUM_IMAGES"),
            (args.level, "LEVEL_MIX"),
        ):
            if flag is not None and flag != "":  # --num-images 0 is refused by its type
                opts += [f"SYNTHESIS.COMPOSE.{key}", str(flag)]
        if args.allow_missing_products:
            opts += ["SYNTHESIS.COMPOSE.ALLOW_MISSING_PRODUCTS", "True"]
        cfg = load_config(args.config_file, opts)
        report = synthesize(
            cfg,
            shard=args.shard,
            num_shards=args.num_shards,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
        keys = ("images", "written", "reused", "per_level", "json_file", "shard_file", "dataset")
        print(json.dumps({k: report[k] for k in keys if k in report}))
    except (ConfigError, BadInputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run(main, resume_hint="rerun the same command: scenes on disk are kept"))
