#!/usr/bin/env python
"""Distillation against its control on checkout worlds the configs were never tuned on.

    python benchmarks/bench_unseen_world.py [--world-seeds 11 12] [--num-products 8] \\
        [--exemplar-size 320] [--lookalike-pairs 2] [--images 150] [--profile demo] \\
        [--output-dir output/unseen] [--results benchmarks/results/unseen_world.json] \\
        [KEY VALUE ...]

Per world seed: ``datasets/make_mini_world.py`` draws a new RPC-format world (its own products,
look-alike pairs and exemplar size; the mini world's generator, so the same kind of trays and
lighting), then ``tools/run_pipeline.py`` runs the README's "Real data" chain on it as a user
would: exemplars = its train split, pool = its val split (labels unread, except by the
pseudo-label audit), evaluation = its test split, each model's threshold chosen on held-out
synthesized scenes (no labelled real image is used for any choice). Trailing ``KEY VALUE`` pairs
go to the pipeline.

Writes the results JSON (per world and round: distilled and control cAcc, mAP50, ACD, and the
gain) and prints a table. The check (exit status 1 when it fails): no round more than
``--max-drop`` (2) points of averaged cAcc below its control. Exit 2: bad input.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from dpsnet.utils.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "unseen_world.json"
MODE = "count_guided_off"


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        raise RuntimeError(f"{cmd[1]} exited with {rc}; see {log}")


def round_rows(report: dict) -> list[dict]:
    """Per round of a distill_report.json: distilled and control figures and the gain."""
    rows = []
    for r in report["rounds"]:
        fig = r.get("figures", {}).get(MODE)
        if fig is None:
            continue
        row = {"round": r["round"], "threshold": r.get("score_threshold")}
        for key in ("cAcc", "mAP50", "mmAP", "ACD"):
            row[key] = fig.get(key)
        ctrl = (r.get("control") or {}).get("figures", {}).get(MODE)
        if ctrl is not None:
            for key in ("cAcc", "mAP50", "mmAP", "ACD"):
                row[f"control_{key}"] = ctrl.get(key)
            row["gain_cAcc"] = fig["cAcc"] - ctrl["cAcc"]
        rows.append(row)
    return rows


def run_world(seed: int, args, out_dir: Path) -> dict:
    world = out_dir / f"world_{seed}"
    run = out_dir / f"run_{seed}"
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / f"world_{seed}.log"
    py = sys.executable
    start = time.perf_counter()
    _run(
        [py, "datasets/make_mini_world.py", "--root", str(world), "--seed", str(seed),
         "--num-products", str(args.num_products), "--exemplar-size", str(args.exemplar_size),
         "--lookalike-pairs", str(args.lookalike_pairs), "--val-images", str(args.images),
         "--test-images", str(args.images), "--pool-images", "3", "--workers", str(args.workers)],
        log,
    )  # fmt: skip
    _run(
        [py, "tools/run_pipeline.py", "--exemplars", str(world / "instances_train2019.json"),
         "--pool", str(world / "instances_val2019.json"),
         "--eval", str(world / "instances_test2019.json"), "--output", str(run),
         "--profile", args.profile, "--workers", str(args.workers), *args.opts],
        log,
    )  # fmt: skip
    report = json.loads((run / "distill" / "distill_report.json").read_text())
    return {
        "world_seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
        "rounds": round_rows(report),
        "audit": [
            {
                "round": r["round"],
                "precision": r["audit"]["all"]["precision"],
                "recall": r["audit"]["all"]["recall"],
            }
            for r in report["rounds"]
            if r.get("audit")
        ],  # fmt: skip
    }


def check(worlds: list[dict], max_drop: float) -> list[str]:
    """Rounds more than ``max_drop`` cAcc points below their control."""
    return [
        f"world {w['world_seed']} round {r['round']}: {r['gain_cAcc']:+.1f}"
        for w in worlds
        for r in w["rounds"]
        if "gain_cAcc" in r and r["gain_cAcc"] < -max_drop
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world-seeds", type=int, nargs="+", default=[11])
    p.add_argument("--num-products", type=int, default=8)
    p.add_argument("--exemplar-size", type=int, default=320)
    p.add_argument("--lookalike-pairs", type=int, default=2)
    p.add_argument("--images", type=int, default=150, help="val (the pool) and test images")
    p.add_argument("--profile", default="demo", choices=["smoke", "demo", "long"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-drop", type=float, default=2.0)
    p.add_argument("--output-dir", default=str(ROOT / "output" / "unseen"))
    p.add_argument("--results", default=str(DEFAULT_RESULTS))
    p.add_argument("opts", nargs=argparse.REMAINDER, help="pipeline overrides KEY VALUE")
    args = p.parse_args(argv)
    for name in ("num_products", "exemplar_size", "images", "workers"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    if args.lookalike_pairs * 2 > args.num_products:
        print("error: --lookalike-pairs needs two products each", file=sys.stderr)
        return 2
    if len(args.opts) % 2:
        print(f"error: overrides must be KEY VALUE pairs, got {args.opts}", file=sys.stderr)
        return 2
    worlds = []
    for seed in args.world_seeds:
        try:
            worlds.append(run_world(seed, args, Path(args.output_dir)))
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    failed = check(worlds, args.max_drop)
    out = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("results",)},
        "worlds": worlds,
        "max_drop": args.max_drop,
        "failed_rounds": failed,
    }
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results, out, indent=1)
    print("| world | round | cAcc | control cAcc | gain | mAP50 | control mAP50 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for w in worlds:
        for r in w["rounds"]:
            ctrl = r.get("control_cAcc")
            print(
                f"| {w['world_seed']} | {r['round']} | {r['cAcc']:.1f} | "
                + (f"{ctrl:.1f} | {r['gain_cAcc']:+.1f} | " if ctrl is not None else "- | - | ")
                + f"{r['mAP50']:.1f} | "
                + (f"{r['control_mAP50']:.1f} |" if ctrl is not None else "- |")
            )
    print(f"wrote {results}")
    if failed:
        print(f"check failed (a round more than {args.max_drop} below its control): {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
