#!/usr/bin/env python
"""Check a dataset (a registered name or a COCO/RPC JSON): problems and a summary.

    python tools/check_dataset.py mini_rpc_test
    python tools/check_dataset.py datasets/rpc/instances_val2019.json --image-root DIR

Exits 0 when nothing is wrong, 1 when any problem is found, 2 when the input cannot be found.
"""

import logging
import os
import sys

import dpsnet  # noqa: F401  (shims first; registers the built-in dataset names)
from dpsnet.data.check import check_dataset_json, check_registered
from dpsnet.engine.cli import ArgumentParser, float_at_least, int_at_least, run
from dpsnet.utils.io import atomic_write_json


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="registered dataset name or path to a JSON file")
    parser.add_argument("--image-root", help="image folder (default: from metadata / layout)")
    parser.add_argument("--no-images", action="store_true", help="skip the image files")
    parser.add_argument("--decode", action="store_true", help="fully decode every image")
    parser.add_argument(
        "--box-tolerance", type=float_at_least(0), default=1.0, help="pixels (default 1)"
    )
    parser.add_argument(
        "--max-per-kind", type=int_at_least(1), default=10, help="problems shown per kind"
    )
    parser.add_argument("--json-out", help="also write the full report as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    kw = dict(
        check_images=not args.no_images,
        decode_images=args.decode,
        box_tolerance=args.box_tolerance,
        progress=sys.stderr.isatty(),
    )
    if os.path.isfile(args.dataset) or args.dataset.endswith(".json"):
        report = check_dataset_json(args.dataset, args.image_root, **kw)
    else:
        try:
            if args.image_root:
                from detectron2.data import MetadataCatalog

                json_file = MetadataCatalog.get(args.dataset).get("json_file")
                report = check_dataset_json(json_file, args.image_root, **kw)
            else:
                report = check_registered(args.dataset, **kw)
        except KeyError as e:
            print(f"error: {e.args[0]} (and no such file)", file=sys.stderr)
            return 2
    print(report.format(max_per_kind=args.max_per_kind))
    if args.json_out:
        atomic_write_json(args.json_out, report.to_dict(), indent=1)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(run(main))
