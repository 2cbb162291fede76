#!/usr/bin/env python
"""Build the mini checkout world under $DPSNET_DATASETS/mini_world (default datasets/mini_world).

    python datasets/make_mini_world.py                      # default sizes, seed 0
    python datasets/make_mini_world.py --test-images 300 --workers 2 --overwrite

The world is registered at ``import dpsnet`` as mini_rpc_* and mini_d2s_* (see datasets/README.md).
"""

import json
import logging
import os
import sys
import time

import dpsnet  # noqa: F401  (shims first)
from dpsnet.data.datasets import datasets_root
from dpsnet.data.mini_world import DEFAULT_SIZES, build_mini_world
from dpsnet.engine.cli import ArgumentParser, int_at_least, run


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.path.join(datasets_root(), "mini_world"))
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument(
        "--workers", type=int_at_least(1), default=1, help="processes drawing images"
    )
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if up to date")
    for key, value in DEFAULT_SIZES.items():
        low = 0 if key in ("bad_views_per_product", "lookalike_pairs") else 1  # may be none
        parser.add_argument(f"--{key.replace('_', '-')}", type=int_at_least(low), default=value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sizes = {k: getattr(args, k) for k in DEFAULT_SIZES}
    start = time.perf_counter()
    world = build_mini_world(
        args.root, args.seed, workers=args.workers, overwrite=args.overwrite, **sizes
    )
    took = time.perf_counter() - start
    summary = {
        k: {"images": v["images"], "instances": v["instances"]} for k, v in world.counts.items()
    }
    print(
        json.dumps(
            {"root": str(world.root), "seconds": round(took, 2), "counts": summary}, indent=1
        )
    )


if __name__ == "__main__":
    sys.exit(run(main, resume_hint="rerun the same command to build it"))
