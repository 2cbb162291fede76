#!/usr/bin/env python
"""CPU training and inference speed of the demo configuration: today's setting vs the new default.

    python benchmarks/bench_cpu_train.py [--iters 12] [--warmup 3] [--images 8]

In ONE process on one machine, with the demo's config (configs/MiniWorld/demo.yaml) and its real
data loader over the synthesized scenes of a finished `make demo` (output/demo/synth; made here
under output/bench_cpu if absent):

- baseline: float32, contiguous layout, one compute thread, one loader worker process, the
  demo's sampling sizes as they were (what `make demo` ran before MODEL.PRECISION existed);
- new: the defaults (MODEL.PRECISION / MODEL.CHANNELS_LAST "auto", threads from the free cores,
  in-process loader over images decoded once) plus the config's current sampling sizes.

Baseline and new alternate (A B A B) so that drift of a noisy machine hits both; the figure is
the median seconds per iteration over both passes. Inference: seconds per image on demo.py's path
(DefaultPredictor-style, one image at a time) over test images. Results go to
benchmarks/results/cpu_train.json.
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers dpsnet's parts)

# isort: split
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from detectron2.utils.events import EventStorage

from dpsnet.engine import Trainer, load_config
from dpsnet.utils.io import atomic_write_json
from dpsnet.utils.precision import cpu_flags, resolve_cpu_settings

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "MiniWorld" / "demo.yaml"
RESULTS = REPO / "benchmarks" / "results" / "cpu_train.json"

#: Today's (before this benchmark's issue) settings: what the baseline runs with.
BASELINE_OPTS = [
    "MODEL.PRECISION", "float32",
    "MODEL.CHANNELS_LAST", "off",
    "DATALOADER.NUM_WORKERS", "1",
    "DATALOADER.CACHE_IMAGES", "False",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "128",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "256",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "1000",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "256",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "500",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "256",
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", "0",
]  # fmt: skip


def ensure_scenes(out: Path) -> tuple[Path, Path]:
    """The demo's synthesized scenes, or a fresh set made with the demo's tools."""
    demo = REPO / "output" / "demo" / "synth"
    if (demo / "instances_synth.json").is_file():
        return demo / "instances_synth.json", demo / "images"
    synth = out / "synth"
    if not (synth / "instances_synth.json").is_file():
        py = sys.executable
        world = Path(os.environ.get("DPSNET_DATASETS", REPO / "datasets")) / "mini_world"
        steps = []
        if not (world / "manifest.json").is_file():
            steps.append([py, "datasets/make_mini_world.py", "--root", str(world)])
        steps += [
            [py, "tools/extract_masks.py", "--dataset", "mini_rpc_train", "--output",
             str(out / "masks")],
            [py, "tools/synthesize.py", "--masks", str(out / "masks" / "index.json"),
             "--output", str(synth), "--config-file", str(CONFIG)],
        ]  # fmt: skip
        for cmd in steps:
            subprocess.run(cmd, cwd=REPO, check=True)
    return synth / "instances_synth.json", synth / "images"


def time_training(opts: list[str], iters: int, warmup: int) -> tuple[list[float], dict]:
    cfg = load_config(str(CONFIG), opts)
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.SOLVER.CHECKPOINT_PERIOD = 10**9
    cfg.freeze()
    trainer = Trainer(cfg)
    settings = resolve_cpu_settings(
        cfg.MODEL.PRECISION, cfg.MODEL.CHANNELS_LAST, int(cfg.DATALOADER.NUM_WORKERS)
    )
    times = []
    with EventStorage(0) as trainer.storage:
        for i in range(warmup + iters):
            trainer.iter = i
            start = time.perf_counter()
            trainer.run_step()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    del trainer
    return times, settings.to_dict()


def time_inference(opts: list[str], images: list[Path], warmup: int) -> list[float]:
    """Seconds per image on demo.py's path: read, resize, model forward, one image at a time."""
    import cv2
    from detectron2.data import transforms as T

    cfg = load_config(str(CONFIG), opts)
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    model = Trainer.build_model(cfg)
    model.eval()
    aug = T.ResizeShortestEdge(
        [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
    )
    times = []
    with torch.no_grad():
        for i, path in enumerate([*images[:warmup], *images]):
            start = time.perf_counter()
            image = cv2.imread(str(path))
            h, w = image.shape[:2]
            x = aug.get_transform(image).apply_image(image)
            x = torch.as_tensor(x.astype("float32").transpose(2, 0, 1))
            model([{"image": x, "height": h, "width": w}])
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=12, help="timed iterations per pass")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per pass")
    parser.add_argument("--images", type=int, default=8, help="test images for inference")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    for flag in ("iters", "images"):
        if getattr(args, flag) < 1:
            print(f"error: --{flag} must be >= 1", file=sys.stderr)
            return 2
    if os.environ.get("OMP_NUM_THREADS"):
        print("note: OMP_NUM_THREADS is set; it fixes the thread count of both arms")
    json_file, image_dir = ensure_scenes(REPO / "output" / "bench_cpu")
    register = ["DATASETS.REGISTER", repr([("bench_synth", str(json_file), str(image_dir))]),
                "DATASETS.TRAIN", "('bench_synth',)"]  # fmt: skip
    # One view per image in both arms: the demo's test-time flip (MODEL.DPSNET.TEST_FLIP) buys
    # accuracy with a second forward; this measures the speed of one forward.
    one_view = ["MODEL.DPSNET.TEST_FLIP", "False"]
    base_opts = register + BASELINE_OPTS + one_view
    new_opts = (
        register + one_view + ["DATALOADER.NUM_WORKERS", "0", "DATALOADER.CACHE_IMAGES", "True"]
    )
    runs = {"baseline": [], "new": []}
    chosen = {}
    for _ in range(2):  # A B A B
        for name, opts in (("baseline", base_opts), ("new", new_opts)):
            times, settings = time_training(opts, args.iters, args.warmup)
            runs[name] += times
            chosen[name] = settings
            print(f"train {name}: {statistics.median(times):.3f} s/iter ({settings['reason']})")

    test_dir = Path(os.environ.get("DPSNET_DATASETS", REPO / "datasets")) / "mini_world"
    images = sorted((test_dir / "test2019").glob("*.jpg"))[: args.images]
    infer = {"baseline": [], "new": []}
    if images:
        for _ in range(2):
            for name, opts in (("baseline", base_opts), ("new", new_opts)):
                torch.set_num_threads(1 if name == "baseline" else chosen["new"]["threads"])
                infer[name] += time_inference(opts, images, warmup=2)
    tb, tn = statistics.median(runs["baseline"]), statistics.median(runs["new"])
    result = {
        "config": str(CONFIG.relative_to(REPO)),
        "train_s_per_iter_baseline": round(tb, 4),
        "train_s_per_iter_new": round(tn, 4),
        "train_speedup": round(tb / tn, 3),
        "cpu_flags": sorted(f for f in cpu_flags() if "bf16" in f or "avx" in f or "amx" in f),
        "cpu_cores": len(os.sched_getaffinity(0)),
        "chosen": {
            "precision": chosen["new"]["precision"],
            "channels_last": chosen["new"]["channels_last"],
            "stem_pool_channels_last": chosen["new"]["pool_channels_last"],
            "threads": chosen["new"]["threads"],
            "compile": False,
            "loader": "in-process, images decoded once",
            "reason": chosen["new"]["reason"],
            "probe": chosen["new"]["probe"],
        },
        "baseline": {"opts": BASELINE_OPTS, "threads": 1, "loader_workers": 1},
        "iters_timed_per_arm": len(runs["new"]),
        "torch": torch.__version__,
    }
    if images:
        ib, inn = statistics.median(infer["baseline"]), statistics.median(infer["new"])
        result.update(
            infer_s_per_img_baseline=round(ib, 4),
            infer_s_per_img_new=round(inn, 4),
            infer_speedup=round(ib / inn, 3),
        )
    atomic_write_json(Path(args.output), result, indent=1)
    print(json.dumps({k: v for k, v in result.items() if "speedup" in k or "s_per" in k}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
