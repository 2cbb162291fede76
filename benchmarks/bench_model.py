#!/usr/bin/env python
"""DPSNet against detectron2's stock Faster R-CNN: train step, inference and peak memory.

    python benchmarks/bench_model.py [--config-file configs/MiniWorld/dpsnet_R_18_FPN_mini.yaml]
        [--size 320] [--batch 2] [--objects 10] [--repeat 10] [--warmup 2] [--device cpu]
        [KEY VALUE ...]

Both models come from the same config in one process: DPSNet as configured, and the baseline with
``MODEL.META_ARCHITECTURE GeneralizedRCNN`` and ``MODEL.BACKBONE.NAME build_resnet_fpn_backbone``
(everything else equal); the baseline gets DPSNet's detection weights, so both detectors do the
same work on the same inputs (seeded images with ``--objects`` boxes each, DPSNet also gets their
density maps) under the same RPN/RoI sampling seed. Timings are interleaved (the two models
alternate, the order swapping every round) after ``--warmup`` rounds; figures are medians of
``--repeat`` rounds and ratios are DPSNet / baseline, in this process's CPU time on CPU (a
shared machine's other jobs barely move it; wall time is recorded too) and in wall time on
CUDA. A train step is forward, backward and an SGD step. Peak memory is the peak of tensor memory
during one train step and one inference pass: on CUDA ``torch.cuda.max_memory_allocated``; on CPU
torch's ``MemTracker`` (a dispatch mode that follows every tensor storage), which also splits it
by kind (parameters, gradients, activations, ...).

Writes ``benchmarks/results/bench_model.json`` (``bench_model_cuda.json`` on CUDA).
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers dpsnet's parts)

# isort: split
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from dpsnet.data.density import DensityTargetGenerator, density_layout_from_config
from dpsnet.engine import load_config
from dpsnet.utils.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs/MiniWorld/dpsnet_R_18_FPN_mini.yaml"
AIMS = {"train_step": 1.10, "inference": 1.05}


def build_pair(cfg):
    """(DPSNet, baseline Faster R-CNN), the baseline holding DPSNet's detection weights."""
    torch.manual_seed(0)
    dpsnet_model = build_model(cfg)
    base_cfg = cfg.clone()
    base_cfg.defrost()
    base_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    base_cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    baseline = build_model(base_cfg)
    ours = dpsnet_model.state_dict()
    theirs = baseline.state_dict()
    missing = [k for k in theirs if k not in ours or ours[k].shape != theirs[k].shape]
    if missing:
        raise RuntimeError(f"baseline weights not found in DPSNet: {missing[:5]}")
    baseline.load_state_dict({k: ours[k] for k in theirs})
    return dpsnet_model, baseline


def make_inputs(cfg, size: int, batch: int, objects: int, seed: int = 0) -> list[dict]:
    """Seeded images with filled boxes, their ground truth and density maps."""
    rng = np.random.default_rng(seed)
    head = cfg.MODEL.COUNTING_HEAD
    generator = DensityTargetGenerator(
        density_layout_from_config(cfg),
        stride=head.STRIDE,
        mass=head.MASS,
        min_sigma=head.MIN_SIGMA,
        sigma_scale=head.SIGMA_SCALE,
    )
    inputs = []
    for _ in range(batch):
        image = rng.integers(60, 200, (size, size, 3)).astype(np.uint8)
        wh = rng.uniform(size * 0.08, size * 0.3, (objects, 2))
        xy = rng.uniform(0, 1, (objects, 2)) * (size - wh)
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        classes = rng.integers(0, cfg.MODEL.ROI_HEADS.NUM_CLASSES, objects)
        for (x0, y0, x1, y1), c in zip(boxes.astype(int), classes):
            image[y0:y1, x0:x1] = (37 * c) % 256, (91 * c) % 256, 255 - (53 * c) % 256
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.as_tensor(boxes))
        inst.gt_classes = torch.as_tensor(classes, dtype=torch.int64)
        inputs.append(
            {
                "image": torch.as_tensor(image.transpose(2, 0, 1).copy()),
                "instances": inst,
                "density": generator(boxes, classes, (size, size)),
                "height": size,
                "width": size,
            }
        )
    return inputs


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_step(model, optimizer, inputs, seed: int) -> None:
    model.train()
    torch.manual_seed(seed)  # the same proposal / RoI sampling for both models
    with EventStorage():
        losses = model(inputs)
        sum(losses.values()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def inference(model, inputs, seed: int) -> None:
    model.eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        model(inputs)


def interleaved(fns: dict, rounds: int, warmup: int, device: str) -> dict[str, dict]:
    """Seconds per call of each function, alternating and swapping the order every round.

    Returns, per function, ``{"wall": [...], "cpu": [...]}``: wall-clock seconds and this
    process's CPU seconds (on a shared CPU machine the latter hardly depends on the other jobs).
    """
    times = {name: {"wall": [], "cpu": []} for name in fns}
    names = list(fns)
    for r in range(warmup + rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            _sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            fns[name](r)
            _sync(device)
            if r >= warmup:
                times[name]["wall"].append(time.perf_counter() - start)
                times[name]["cpu"].append(time.process_time() - start_cpu)
    return times


def peak_memory(fn, tracked: tuple, device: str) -> dict:
    """Peak tensor memory (bytes) while ``fn()`` runs, and (CPU) its split by kind."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return {"peak_bytes": torch.cuda.max_memory_allocated(), "before_bytes": before}
    from torch.distributed._tools.mem_tracker import MemTracker

    frozen = [p for m in tracked if isinstance(m, torch.nn.Module) for p in m.parameters()]
    if not all(p.requires_grad for p in frozen):  # MemTracker hooks every parameter's gradient
        return {"peak_bytes": None, "why": "frozen parameters (MODEL.BACKBONE.FREEZE_AT > 0)"}
    tracker = MemTracker()
    tracker.track_external(*tracked)
    with tracker:
        fn()
    snap = next(iter(tracker.get_tracker_snapshot("peak").values()))
    kinds = {str(getattr(k, "value", k)): int(v) for k, v in snap.items()}
    return {"peak_bytes": kinds.pop("Total"), "by_kind": kinds}


def counting_view_share(model, inputs, rounds: int) -> dict:
    """DPSNet inference: median seconds in the counting pyramid and the density head."""
    spent = {"count_pyramid": [], "counting_head": []}
    modules = {"count_pyramid": model.backbone.count_pyramid, "counting_head": model.counting_head}
    starts: dict = {}
    handles = []
    for name, module in modules.items():
        handles.append(
            module.register_forward_pre_hook(
                lambda *_, n=name: starts.__setitem__(n, time.perf_counter())
            )
        )
        handles.append(
            module.register_forward_hook(
                lambda *_, n=name: spent[n].append(time.perf_counter() - starts[n])
            )
        )
    for r in range(rounds):
        inference(model, inputs, r)
    for h in handles:
        h.remove()
    return {k: statistics.median(v) for k, v in spent.items()}


def _ratios(ours: list[float], base: list[float]) -> dict:
    per_round = [a / b for a, b in zip(ours, base)]
    return {
        "dpsnet_s": round(statistics.median(ours), 4),
        "baseline_s": round(statistics.median(base), 4),
        "ratio": round(statistics.median(ours) / statistics.median(base), 4),
        "ratio_per_round_median": round(statistics.median(per_round), 4),
        "ratio_per_round_min_max": [round(min(per_round), 4), round(max(per_round), 4)],
    }


def _summary(times: dict, device: str) -> dict:
    """Wall and CPU figures; the headline ``ratio`` is CPU time on CPU, wall time on CUDA."""
    wall = _ratios(times["dpsnet"]["wall"], times["baseline"]["wall"])
    cpu = _ratios(times["dpsnet"]["cpu"], times["baseline"]["cpu"])
    headline = wall if device.startswith("cuda") else cpu
    return {
        "ratio": headline["ratio"],
        "measure": "wall" if device.startswith("cuda") else "process CPU time",
        "wall": wall,
        "cpu": cpu,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default=str(DEFAULT_CONFIG))
    parser.add_argument("--size", type=int, default=320, help="square input side, pixels")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--objects", type=int, default=10, help="ground-truth boxes per image")
    parser.add_argument("--repeat", type=int, default=10, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default=None, help="result JSON (default: benchmarks/results/)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    out = args.out or str(
        ROOT
        / "benchmarks/results"
        / ("bench_model_cuda.json" if device != "cpu" else "bench_model.json")
    )
    cfg = load_config(args.config_file, [*args.opts, "MODEL.DEVICE", device])
    ours, base = build_pair(cfg)
    inputs = make_inputs(cfg, args.size, args.batch, args.objects)
    base_inputs = [{k: v for k, v in x.items() if k != "density"} for x in inputs]
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.0, momentum=0.9)
    opt_base = torch.optim.SGD(base.parameters(), lr=0.0, momentum=0.9)

    train = interleaved(
        {
            "dpsnet": lambda r: train_step(ours, opt_ours, inputs, r),
            "baseline": lambda r: train_step(base, opt_base, base_inputs, r),
        },
        args.repeat,
        args.warmup,
        device,
    )
    infer = interleaved(
        {
            "dpsnet": lambda r: inference(ours, inputs, r),
            "baseline": lambda r: inference(base, base_inputs, r),
        },
        args.repeat,
        args.warmup,
        device,
    )
    memory = {}
    for phase, fns in {
        "train_step": (
            lambda: train_step(ours, opt_ours, inputs, 0),
            lambda: train_step(base, opt_base, base_inputs, 0),
        ),
        "inference": (lambda: inference(ours, inputs, 0), lambda: inference(base, base_inputs, 0)),
    }.items():
        images = [x["image"] for x in inputs]
        with_opt = phase == "train_step"  # inference: no optimizer state in the figures
        m_ours = peak_memory(fns[0], (ours, *[opt_ours][:with_opt], *images), device)
        m_base = peak_memory(fns[1], (base, *[opt_base][:with_opt], *images), device)
        ratio = None
        if m_ours["peak_bytes"] and m_base["peak_bytes"]:
            ratio = round(m_ours["peak_bytes"] / m_base["peak_bytes"], 4)
        memory[phase] = {"dpsnet": m_ours, "baseline": m_base, "ratio": ratio}
    params = {
        "dpsnet": sum(p.numel() for p in ours.parameters()),
        "baseline": sum(p.numel() for p in base.parameters()),
    }
    result = {
        "benchmark": "bench_model",
        "command": " ".join(
            ["python benchmarks/bench_model.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "config_file": os.path.relpath(args.config_file, ROOT),
        "overrides": list(args.opts),
        "device": device,
        "input": {"batch": args.batch, "size": args.size, "objects": args.objects},
        "density_channels": ours.counting_head.num_channels,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "train_step": _summary(train, device),
        "inference": _summary(infer, device),
        "peak_memory": memory,
        "parameters": {**params, "ratio": round(params["dpsnet"] / params["baseline"], 4)},
        "dpsnet_inference_counting_view_s": counting_view_share(
            ours, inputs, args.repeat // 2 or 1
        ),
        "aims": AIMS,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    for phase, aim in AIMS.items():
        result[phase]["within_aim"] = result[phase]["ratio"] <= aim
    atomic_write_json(out, result, indent=1)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
