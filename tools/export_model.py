#!/usr/bin/env python
"""Export a DPSNet checkpoint (detection view and counting view) and check it against eager.

    python tools/export_model.py --weights OUT/model_final.pth --format torchscript \\
        --output OUT/model.ts [--input IMAGES_DIR] [--num-images 8] [--config-file C] \\
        [KEY VALUE ...]

The exported graph takes one resized image, a float (3, H, W) tensor in the model's channel
order (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, as the predictor resizes), and returns boxes (XYXY in
that image), scores, contiguous classes, the density map and the counts (dpsnet/engine/export.py).
TorchScript takes any size; ONNX (needs the onnx and onnxruntime packages) is fixed to the size
it was traced at. The check runs the eager and the exported model on --input's images (default:
one synthetic image) and writes OUTPUT.json: the largest differences (tolerance: boxes 0.01 px,
scores 1e-4, counts 1e-3; classes equal) and the mean inference time of each on this CPU.
Exit status 0: exported and matching; 1: exported but the check failed; 2: bad input.
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers dpsnet's parts)

# isort: split
import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from detectron2.utils.logger import setup_logger

from dpsnet.engine import ConfigError
from dpsnet.engine.cli import ArgumentParser, int_at_least, run
from dpsnet.engine.export import check_export, export_model, load_eager, preprocess
from dpsnet.utils.io import IMAGE_EXTENSIONS, BadInputError, atomic_write_json, try_read_image


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--weights", required=True, help="a checkpoint dpsnet saved (.pth)")
    parser.add_argument("--format", required=True, choices=["torchscript", "onnx"])
    parser.add_argument("--output", required=True, help="the exported file")
    parser.add_argument("--config-file", help="overrides the config saved in --weights")
    parser.add_argument("--input", help="folder of sample images for the check")
    parser.add_argument(
        "--num-images", type=int_at_least(1), default=8, help="sample images checked"
    )
    parser.add_argument(
        "--threads", type=int_at_least(1), default=1, help="CPU threads while timing"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def sample_images(folder: str | None, n: int) -> list[np.ndarray]:
    """Up to ``n`` BGR images of ``folder`` (sorted), else one seeded synthetic tray."""
    if not folder:
        rng = np.random.default_rng(0)
        image = np.full((480, 640, 3), 200, np.uint8)
        for _ in range(6):
            x, y = rng.integers(0, 520), rng.integers(0, 360)
            cv2.rectangle(image, (x, y), (x + 100, y + 100), rng.integers(0, 255, 3).tolist(), -1)
        return [image]
    if not Path(folder).is_dir():
        raise BadInputError(f"--input: not a folder: {folder}")
    files = sorted(
        p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    images = [im for im in (try_read_image(p) for p in files[:n]) if im is not None]
    if not images:
        raise BadInputError(f"--input: no readable image in {folder}")
    return images


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="dpsnet")
    import torch

    torch.set_num_threads(max(1, args.threads))
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as e:
            print(
                f"error: --format onnx needs {e.name}: pip install onnx onnxruntime",
                file=sys.stderr,
            )
            return 2
    try:
        if not os.path.isfile(args.weights):
            raise ConfigError(f"--weights: file not found: {args.weights}")
        model, cfg, meta = load_eager(args.weights, args.config_file, args.opts)
        if cfg.MODEL.META_ARCHITECTURE != "DPSNet":
            raise ConfigError(f"{args.weights}: a {cfg.MODEL.META_ARCHITECTURE}, not a DPSNet")
        images = [preprocess(cfg, im) for im in sample_images(args.input, args.num_images)]
    except (ConfigError, BadInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = export_model(model, cfg, images[0], args.format, args.output)
    check = check_export(model, path, args.format, images)
    report = {
        "weights": str(args.weights),
        "format": args.format,
        "output": str(path),
        "input_size": list(images[0].shape[1:]),
        "input_format": cfg.INPUT.FORMAT,
        "outputs": ["boxes", "scores", "classes", "density", "counts"],
        "counting_layout": meta.get("counting_layout"),
        "catalogue": meta.get("catalogue"),
        "threads": args.threads,
        "check": check.as_dict(),
    }
    atomic_write_json(f"{path}.json", report, indent=1)
    print(json.dumps(report["check"], indent=1))
    print(
        f"{args.format}: {path} ({'matches' if check.match else 'DOES NOT MATCH'} the eager model "
        f"on {check.images} image(s)); eager {check.eager_ms} ms, exported {check.exported_ms} ms "
        "per image"
    )
    return 0 if check.match else 1


if __name__ == "__main__":
    sys.exit(run(main))
