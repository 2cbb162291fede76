#!/usr/bin/env python
"""Scene synthesis throughput: 800x800 "hard" scenes (15-20 items) per second on 2 processes.

    nice -n 10 python benchmarks/bench_synthesis.py [--images 300] [--workers 2]

Exemplars: the mini world's (256x256 photos, its true masks as the masks index, planted bad
poses dropped), built once under ``--world`` (default: a temporary folder). Scenes: RPC's hard
level (8-10 categories, 15-20 instances), items scaled by 0.3-0.4 of the scene/exemplar ratio
(so they cover 13-28 % of the scene's side, as in the mini world's own checkout images),
rotation 0-360, IoU limit 0.5 relaxed by 0.1, occlusion guard, soft shadows, the default
photometric albumentations and noise, JPEG 92, labels with RLE masks; end to end through
``dpsnet.synthesis.writer.synthesize`` (images and label files written, JSON written).

Measured in the same process:
- ``--workers`` processes (the claim) against 1 process (the baseline), on the same config;
  throughput from wall time, and from CPU time (the machine is shared: CPU seconds of this
  process and its children say what 2 free cores would do);
- the mean CPU time per stage of a scene (from the run's report);
- the RLE of a visible mask from its crop (``crop_to_rle``) against pycocotools encoding the
  full-image mask, on the run's own masks;
- the demo's setting: 384x384 scenes at the mini world's levels (its config's SYNTHESIS keys).

Writes ``benchmarks/results/bench_synthesis.json``.
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6)

# isort: split
import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from dpsnet.data.mini_world import build_mini_world
from dpsnet.engine import load_config
from dpsnet.synthesis.items import mini_world_index
from dpsnet.synthesis.rle import crop_to_rle
from dpsnet.synthesis.writer import synthesize
from dpsnet.utils.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]

HARD_800 = [
    "SYNTHESIS.COMPOSE.IMAGE_SIZE", "[800, 800]",
    "SYNTHESIS.COMPOSE.LEVEL_MIX", "[0, 0, 1]",
    "SYNTHESIS.COMPOSE.CATEGORIES", "[[3, 4], [5, 7], [8, 10]]",
    "SYNTHESIS.COMPOSE.INSTANCES", "[[3, 10], [10, 15], [15, 20]]",
    "SYNTHESIS.COMPOSE.SCALE_RANGE", "[0.3, 0.4]",
]  # fmt: skip
DEMO_384 = [
    "SYNTHESIS.COMPOSE.IMAGE_SIZE", "[384, 384]",
    "SYNTHESIS.COMPOSE.CATEGORIES", "[[2, 4], [4, 6], [6, 8]]",
    "SYNTHESIS.COMPOSE.INSTANCES", "[[3, 6], [7, 10], [11, 14]]",
    "SYNTHESIS.COMPOSE.SCALE_RANGE", "[0.3, 0.42]",
]  # fmt: skip


def make_index(world_root: Path, out: Path) -> Path:
    world = build_mini_world(
        world_root, 0, val_images=3, test_images=3, pool_images=3, d2s_val_images=3
    )
    return mini_world_index(world, out)


def cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed_run(index: Path, out: Path, n: int, workers: int, opts: list) -> dict:
    cfg = load_config(
        None,
        [
            "SYNTHESIS.COMPOSE.MASKS_INDEX", str(index),
            "SYNTHESIS.COMPOSE.OUTPUT_DIR", str(out),
            "SYNTHESIS.COMPOSE.NUM_IMAGES", str(n),
            *opts,
        ],
    )  # fmt: skip
    c0, t0 = cpu_seconds(), time.perf_counter()
    report = synthesize(cfg, workers=workers, overwrite=True, progress=False, register=False)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {
        "images": n,
        "workers": workers,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "images_per_s": round(n / wall, 2),
        "images_per_cpu_s": round(n / cpu, 2),
        "instances_per_image": round(
            sum(v["instances"] for v in report["per_level"].values()) / n, 2
        ),
        "dropped_labels_per_image": round(
            sum(v["dropped"] for v in report["per_level"].values()) / n, 3
        ),
        "relaxed_placements_per_image": round(report["relaxed_placements"] / n, 3),
        "mean_cpu_ms_per_image_by_stage": report["mean_cpu_ms_per_written_image"],
        "json_file": str(out / "instances_synth.json"),
    }


def rle_comparison(json_file: str, limit: int = 300) -> dict:
    anns = json.loads(Path(json_file).read_text())["annotations"][:limit]
    masks = [mask_utils.decode(a["segmentation"]).astype(bool) for a in anns]
    crops = []
    for m, a in zip(masks, anns, strict=True):
        x, y, w, h = a["bbox"]
        crops.append((m[y : y + h, x : x + w], x, y))
    H, W = masks[0].shape
    t0 = time.perf_counter()
    ours = [crop_to_rle(c, x, y, H, W) for c, x, y in crops]
    t1 = time.perf_counter()
    full = []
    for c, x, y in crops:  # what the composer would do without crop_to_rle
        m = np.zeros((H, W), np.uint8, order="F")
        m[y : y + c.shape[0], x : x + c.shape[1]] = c
        full.append(mask_utils.encode(m))
    t2 = time.perf_counter()
    assert all(o["counts"] == f["counts"].decode() for o, f in zip(ours, full, strict=True))
    return {
        "masks": len(anns),
        "crop_to_rle_ms": round(1000 * (t1 - t0) / len(anns), 4),
        "pycocotools_full_mask_ms": round(1000 * (t2 - t1) / len(anns), 4),
        "speedup": round((t2 - t1) / (t1 - t0), 2),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=300, help="scenes in the multi-process run")
    p.add_argument("--baseline-images", type=int, default=100, help="scenes in the 1-process run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--world", default="", help="mini world folder (built if missing)")
    p.add_argument(
        "--output", default=str(ROOT / "benchmarks" / "results" / "bench_synthesis.json")
    )
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        tmp = Path(tmp)
        index = make_index(Path(args.world) if args.world else tmp / "world", tmp / "index")
        load0 = os.getloadavg()
        parallel = timed_run(index, tmp / "par", args.images, args.workers, HARD_800)
        single = timed_run(index, tmp / "one", args.baseline_images, 1, HARD_800)
        demo = timed_run(index, tmp / "demo", args.images, args.workers, DEMO_384)
        rle = rle_comparison(parallel["json_file"])
        load1 = os.getloadavg()
    for r in (parallel, single, demo):
        r.pop("json_file")
    result = {
        "benchmark": "bench_synthesis",
        "setting": "800x800 hard scenes (8-10 categories, 15-20 items), mini world exemplars",
        "hard_800": {
            f"{args.workers}_processes": parallel,
            "1_process_baseline": single,
            "speedup_wall": round(parallel["images_per_s"] / single["images_per_s"], 2),
            "speedup_cpu_normalised": round(
                parallel["images_per_cpu_s"] / single["images_per_cpu_s"], 2
            ),
            f"images_per_s_on_{args.workers}_free_cores_from_cpu_time": round(
                parallel["images_per_cpu_s"] * args.workers, 2
            ),
            "target_images_per_s": 25,
        },
        "demo_384_mixed_levels": demo,
        "rle_from_crop_vs_full_mask": rle,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": [round(v, 2) for v in load0],
            "load_average_after": [round(v, 2) for v in load1],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "command": "nice -n 10 python benchmarks/bench_synthesis.py " + " ".join(sys.argv[1:]),
    }
    atomic_write_json(args.output, result, indent=1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
