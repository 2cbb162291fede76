#!/usr/bin/env python
"""Build a product gallery: embeddings of every exemplar box of a dataset, in one file.

    python tools/build_gallery.py --weights output/rec/model_final.pth \\
        --datasets mini_rpc_train --calibrate mini_rpc_val --output output/rec/gallery.npz
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers datasets)

# isort: split
import sys

from detectron2.utils.logger import setup_logger

from dpsnet.engine.cli import ArgumentParser, float_at_least, int_at_least, run
from dpsnet.recognition.build import build_gallery_file
from dpsnet.utils.io import BadInputError


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--weights", required=True, help="recogniser checkpoint")
    parser.add_argument("--datasets", nargs="+", required=True, help="exemplar datasets")
    parser.add_argument("--output", required=True, help="gallery file (.npz)")
    parser.add_argument(
        "--products", type=int_at_least(0), nargs="*", help="only these product ids"
    )
    parser.add_argument("--max-per-product", type=int_at_least(0), default=0, help="0: all")
    parser.add_argument("--calibrate", nargs="*", help="labelled datasets for the threshold")
    parser.add_argument("--unknown-distance", type=float_at_least(0), help="fixed unknown distance")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument(
        "--rotations", action="store_true", help="also embed each exemplar at 90/180/270 degrees"
    )
    parser.add_argument(
        "--jitter-views",
        type=int_at_least(0),
        default=0,
        help="also embed N copies under random lighting",
    )
    args = parser.parse_args(argv)
    setup_logger(name="dpsnet")
    try:
        gallery = build_gallery_file(
            args.weights,
            args.datasets,
            args.output,
            args.products,
            args.max_per_product,
            args.calibrate,
            args.unknown_distance,
            args.seed,
            args.rotations,
            args.jitter_views,
        )
    except (BadInputError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.output}: {len(gallery)} embeddings, {len(gallery.products)} products")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
