#!/usr/bin/env python
"""Add a product to a gallery by embedding its exemplars; nothing is retrained.

    python tools/add_product.py --gallery G.npz --weights model_final.pth --id 201 \\
        --name "new_cola" --images photos/cola_*.jpg          # photos, one product filling each
    python tools/add_product.py --gallery G.npz --weights W --id 7 --dataset mini_rpc_train
    # exemplars + scenes made of them (configs/OpenSet/gallery_scenes_mini.yaml)
    python tools/add_product.py --gallery G.npz --weights W --id 7 \\
        --dataset mini_rpc_train openset_gallery_scenes
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers datasets)

# isort: split
import sys

from detectron2.utils.logger import setup_logger

from dpsnet.engine.cli import ArgumentParser, int_at_least, run
from dpsnet.recognition.build import add_product_to_gallery
from dpsnet.utils.io import BadInputError


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--gallery", required=True, help="gallery file, rewritten in place")
    parser.add_argument("--weights", required=True, help="recogniser checkpoint")
    parser.add_argument(
        "--id", type=int_at_least(0), required=True, help="product id (category id)"
    )
    parser.add_argument("--name", default="", help="product name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", nargs="+", help="photos of the product alone")
    source.add_argument(
        "--dataset", nargs="+", help="registered dataset(s) holding boxes of this product id"
    )
    parser.add_argument("--replace", action="store_true", help="overwrite an existing id")
    args = parser.parse_args(argv)
    setup_logger(name="dpsnet")
    try:
        gallery = add_product_to_gallery(
            args.gallery,
            args.weights,
            args.id,
            args.name,
            args.images,
            args.dataset,
            args.replace,
        )
    except (BadInputError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.gallery}: {len(gallery.products)} products, {len(gallery)} embeddings")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
