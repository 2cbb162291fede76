#!/usr/bin/env python
"""Loading a test-set-sized RPC JSON into detectron2 records: dpsnet against detectron2.

    python benchmarks/bench_load_rpc.py [--images 24000] [--boxes 294333] [--repeat 2]

Generates (seeded) an RPC-schema JSON the size of RPC's test set (24,000 images of 1815x1815 at
three levels, 294,333 boxes over 200 categories in 17 supercategories, with RPC's extra keys
``level``, ``point_xy`` and ``__raw_Chinese_name_df``), then times, in the same run on the same
file:
- ``dpsnet.data.datasets.load_checkout_json`` (what the ``rpc_2019_*`` names call), and
- detectron2's ``load_coco_json`` (pycocotools index + records), the baseline;
plus ``json.load`` alone, the floor both share. Each timing is the best of ``--repeat`` runs.
Annotations carry ``segmentation: []`` (with RPC's ``[[]]`` detectron2 would drop every box;
dpsnet keeps the box and drops the empty mask), so both loaders do the same work.

Writes ``benchmarks/results/bench_load_rpc.json``.
"""

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import dpsnet  # noqa: F401  (applies the detectron2 shims)
from dpsnet.data.datasets import load_checkout_json, unregister_dataset
from dpsnet.utils.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
#: RPC's mean objects per image per level (REFERENCE.md section 2).
LEVEL_MEANS = {"easy": 7.15, "medium": 12.30, "hard": 17.35}


def make_rpc_json(path: Path, num_images: int, num_boxes: int, seed: int = 0) -> None:
    """Write an RPC-schema JSON with ``num_images`` images and exactly ``num_boxes`` boxes."""
    rng = np.random.default_rng(seed)
    levels = np.array(list(LEVEL_MEANS))[np.arange(num_images) % 3]
    means = np.array([LEVEL_MEANS[lv] for lv in levels])
    counts = np.maximum(1, rng.poisson(means * num_boxes / means.sum()))
    diff = num_boxes - counts.sum()
    idx = rng.choice(num_images, size=abs(int(diff)), replace=True)
    np.add.at(counts, idx, 1 if diff > 0 else -1)
    counts = np.maximum(counts, 0)
    counts[-1] += num_boxes - counts.sum()
    side = 1815
    images = [
        {"file_name": f"20180926-{i:06d}.jpg", "width": side, "height": side, "id": i + 1,
         "level": str(levels[i])}
        for i in range(num_images)
    ]  # fmt: skip
    image_ids = np.repeat(np.arange(1, num_images + 1), counts)
    wh = rng.uniform(80, 420, size=(num_boxes, 2)).round(2)
    xy = (rng.uniform(0, 1, size=(num_boxes, 2)) * (side - wh)).round(2)
    cats = rng.integers(1, 201, size=num_boxes)
    annotations = [
        {
            "area": round(float(w * h), 2),
            "bbox": [float(x), float(y), float(w), float(h)],
            "category_id": int(c),
            "id": k + 1,
            "image_id": int(i),
            "iscrowd": 0,
            "segmentation": [],
            "point_xy": [round(float(x + w / 2), 2), round(float(y + h / 2), 2)],
        }
        for k, ((x, y), (w, h), c, i) in enumerate(zip(xy, wh, cats, image_ids, strict=True))
    ]
    categories = [
        {"supercategory": f"super_{(c - 1) // 12}", "id": c, "name": f"{c}_product_{c}"}
        for c in range(1, 201)
    ]
    data = {
        "info": {"description": "synthetic RPC-sized test JSON"},
        "licenses": [],
        "categories": categories,
        "__raw_Chinese_name_df": [{"sku_name": f"p{c}", "category_id": c} for c in range(1, 201)],
        "images": images,
        "annotations": annotations,
    }
    with open(path, "w") as f:
        json.dump(data, f)


def _best(fn, repeat: int) -> tuple:
    best, out = float("inf"), None
    for _ in range(repeat):
        out = None
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24_000)
    parser.add_argument("--boxes", type=int, default=294_333)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/bench_load_rpc.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from detectron2.data.datasets import load_coco_json

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "instances_test2019.json"
        start = time.perf_counter()
        make_rpc_json(path, args.images, args.boxes)
        gen_s = time.perf_counter() - start
        size_mb = path.stat().st_size / 2**20

        def ours():
            return load_checkout_json(path, tmp)

        name = "bench_load_rpc_baseline"

        def baseline():
            unregister_dataset(name)
            return load_coco_json(str(path), tmp, dataset_name=name)

        def raw():
            with open(path) as f:
                return json.load(f)

        json_s, _ = _best(raw, args.repeat)
        ours_s, records = _best(ours, args.repeat)
        base_s, base_records = _best(baseline, args.repeat)
        unregister_dataset(name)
        n_ours = sum(len(r["annotations"]) for r in records)
        n_base = sum(len(r["annotations"]) for r in base_records)
        # Same content: every image, every box, same contiguous class of every box.
        same = len(records) == len(base_records) and n_ours == n_base
        same = same and all(
            [a["category_id"] for a in r["annotations"]]
            == [a["category_id"] for a in b["annotations"]]
            for r, b in zip(records, base_records, strict=True)
        )
    result = {
        "benchmark": "bench_load_rpc",
        "command": " ".join(["python benchmarks/bench_load_rpc.py", *(argv or sys.argv[1:])]),
        "images": args.images,
        "boxes": args.boxes,
        "json_mb": round(size_mb, 1),
        "generate_s": round(gen_s, 2),
        "json_load_s": round(json_s, 3),
        "dpsnet_load_checkout_json_s": round(ours_s, 3),
        "detectron2_load_coco_json_s": round(base_s, 3),
        "ratio_dpsnet_over_detectron2": round(ours_s / base_s, 3),
        "repeat": args.repeat,
        "boxes_loaded": {"dpsnet": n_ours, "detectron2": n_base},
        "same_records": bool(same),
        "target_s": 15.0,
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    atomic_write_json(args.out, result, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
