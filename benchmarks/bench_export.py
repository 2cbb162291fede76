#!/usr/bin/env python
"""Inference time of an exported DPSNet (TorchScript, ONNX Runtime) beside the eager model, CPU.

    python benchmarks/bench_export.py [--config-file configs/MiniWorld/demo.yaml] \\
        [--images datasets/mini_world/test2019] [--num-images 8] [--repeat 5] [KEY VALUE ...]

The config's model (randomly initialised, seeded: the time does not depend on what it learned,
beyond the number of boxes it keeps) is saved as dpsnet saves a checkpoint and exported with
``dpsnet.engine.export``; the exported files are checked against eager first. Timings are
interleaved (eager, TorchScript, ONNX on the same image, the order rotating each round) after a
warm-up, in this process's CPU time on one thread (a shared machine's other jobs barely move it;
wall time is recorded too); figures are medians per image over ``--repeat`` rounds of every image.
ONNX is left out where onnxruntime is not installed.

Writes ``benchmarks/results/bench_export.json``.
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers dpsnet's parts)

# isort: split
import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

from dpsnet.data.catalogue import Catalogue
from dpsnet.engine import load_config
from dpsnet.engine.checkpoint import checkpoint_fields
from dpsnet.engine.export import (
    check_export,
    export_model,
    load_eager,
    onnx_session_options,
    preprocess,
    tracing_adapter,
)
from dpsnet.utils.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=str(ROOT / "configs/MiniWorld/demo.yaml"))
    parser.add_argument("--images", default=str(ROOT / "datasets/mini_world/test2019"))
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/bench_export.json"))
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    files = sorted(Path(args.images).glob("*.jpg"))[: args.num_images]
    if not files:
        print(f"error: no .jpg under {args.images} (build the mini world first)", file=sys.stderr)
        return 2
    opts = ["MODEL.DEVICE", "cpu", "MODEL.PRECISION", "float32", *args.opts]
    cfg = load_config(args.config_file, opts)
    torch.manual_seed(0)
    from detectron2.modeling import build_model

    names = [f"product {i}" for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)]
    catalogue = Catalogue(range(1, len(names) + 1), names)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.pth"
        state = build_model(cfg).state_dict()
        torch.save({"model": state, "dpsnet": checkpoint_fields(cfg, catalogue)}, weights)
        model, cfg, _ = load_eager(str(weights), None, opts)
        images = [preprocess(cfg, cv2.imread(str(f))) for f in files]
        runners, checks = {"eager": tracing_adapter(model, images[0])}, {}
        formats = ["torchscript"] + (["onnx"] if importlib.util.find_spec("onnxruntime") else [])
        for fmt in formats:
            path = export_model(model, cfg, images[0], fmt, Path(tmp) / f"model.{fmt}")
            checks[fmt] = check_export(model, path, fmt, images).as_dict()
            if fmt == "torchscript":
                runners[fmt] = torch.jit.load(str(path))
            else:
                import onnxruntime as ort

                session = ort.InferenceSession(
                    str(path), onnx_session_options(), ["CPUExecutionProvider"]
                )
                runners[fmt] = lambda im, s=session: s.run(None, {"image": im.numpy()})
        cpu = {k: [] for k in runners}
        wall = {k: [] for k in runners}
        order = list(runners)
        with torch.no_grad():
            for _ in range(2):
                for run in runners.values():
                    run(images[0])
            for r in range(args.repeat):
                for image in images:
                    for name in order[r % len(order) :] + order[: r % len(order)]:
                        c0, w0 = time.process_time(), time.perf_counter()
                        runners[name](image)
                        cpu[name].append(time.process_time() - c0)
                        wall[name].append(time.perf_counter() - w0)
    ms = {k: round(1000 * statistics.median(v), 1) for k, v in cpu.items()}
    result = {
        "config": args.config_file,
        "input_size": list(images[0].shape[1:]),
        "images": len(images),
        "repeat": args.repeat,
        "threads": 1,
        "cpu_ms_per_image": ms,
        "wall_ms_per_image": {k: round(1000 * statistics.median(v), 1) for k, v in wall.items()},
        "ratio_to_eager": {k: round(v / ms["eager"], 3) for k, v in ms.items() if k != "eager"},
        "checks": checks,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    atomic_write_json(args.output, result, indent=1)
    print(json.dumps({k: result[k] for k in ("cpu_ms_per_image", "ratio_to_eager")}, indent=1))
    return 0 if all(c["match"] for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
