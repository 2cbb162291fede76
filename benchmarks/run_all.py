#!/usr/bin/env python
"""Run every benchmark (``benchmarks/bench_*.py``) and write one summary JSON (``make bench``).

    python benchmarks/run_all.py [--quick] [--only NAME ...] [--list]

Each benchmark runs as its own process (as a user would run it), writes its own result JSON, and
the summary gathers them: per benchmark the command, exit code, wall seconds and the result
file's contents. Full runs write ``benchmarks/results/summary.json`` beside the benchmarks' own
files (minutes each: ``bench_rpc_eval`` and ``bench_load_rpc`` work on test-set-sized cases,
``bench_cpu_train`` needs the demo's scenes and makes them if absent).

``--quick`` runs each benchmark on a small case (the sizes in ``QUICK_ARGS``), in seconds to a
minute each, to check that they all still run; its results go to ``benchmarks/results/quick/``
so they never replace measured figures. A benchmark with no quick settings is left out of a
quick run (and listed as such).

Exit code: 0 when every benchmark that ran exited 0, 1 otherwise (the summary is written either
way), 2 for an unknown ``--only`` name.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dpsnet.utils.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
RESULTS = BENCH_DIR / "results"

# The flag that names each benchmark's result JSON, and its default file there.
OUTPUT_FLAG = {
    "bench_cpu_train": ("--output", "cpu_train.json"),
    "bench_export": ("--output", "bench_export.json"),
    "bench_gallery": ("--output", "bench_gallery.json"),
    "bench_load_rpc": ("--out", "bench_load_rpc.json"),
    "bench_model": ("--out", "bench_model.json"),
    "bench_rpc_eval": ("--out", "bench_rpc_eval.json"),
    "bench_synthesis": ("--output", "bench_synthesis.json"),
    "bench_unseen_world": ("--results", "unseen_world.json"),
}

# Small cases for --quick: enough to run every code path of the benchmark, not to measure.
QUICK_ARGS = {
    "bench_cpu_train": ["--iters", "1", "--warmup", "0", "--images", "2"],
    "bench_export": ["--num-images", "1", "--repeat", "1"],
    "bench_gallery": ["--per-product", "2", "--repeats", "1"],
    "bench_load_rpc": ["--images", "200", "--boxes", "2000", "--repeat", "1"],
    "bench_model": [
        "--size",
        "128",
        "--batch",
        "1",
        "--objects",
        "2",
        "--repeat",
        "1",
        "--warmup",
        "0",
    ],  # fmt: skip
    "bench_rpc_eval": ["--images", "300", "--categories", "20", "--tool-map-images", "0"],
    "bench_synthesis": ["--images", "4", "--baseline-images", "2"],
}


def discover() -> list[str]:
    """Names of the benchmarks in ``benchmarks/`` (``bench_*.py``), sorted."""
    return sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))


def run_one(name: str, quick: bool, out_dir: Path) -> dict:
    """Run one benchmark in its own process; return its summary entry."""
    command = [sys.executable, str(BENCH_DIR / f"{name}.py")]
    result_file = None
    if quick:
        command += QUICK_ARGS[name]
    if name in OUTPUT_FLAG:
        flag, default = OUTPUT_FLAG[name]
        result_file = out_dir / default
        if quick:  # full runs keep each benchmark's own default path
            command += [flag, str(result_file)]
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    code = subprocess.call(command, cwd=ROOT)
    entry = {
        "command": [Path(command[0]).name, *[os.path.relpath(c, ROOT) if c.startswith(str(ROOT))
                                             else c for c in command[1:]]],
        "exit_code": code,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "result_file": None,
        "result": None,
    }  # fmt: skip
    if result_file is not None and result_file.is_file() and code == 0:
        entry["result_file"] = os.path.relpath(result_file, ROOT)
        entry["result"] = json.loads(result_file.read_text())
    return entry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small cases, results in quick/")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these benchmarks only")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            print(f"error: --only: no benchmark named {', '.join(unknown)} (see --list)")
            return 2
        names = [n for n in names if n in args.only]
    out_dir = RESULTS / "quick" if args.quick else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"quick": args.quick, "benchmarks": {}, "not_run": {}}
    for name in names:
        if args.quick and name not in QUICK_ARGS:
            summary["not_run"][name] = "no quick settings in benchmarks/run_all.py QUICK_ARGS"
            continue
        summary["benchmarks"][name] = run_one(name, args.quick, out_dir)
    failed = [n for n, e in summary["benchmarks"].items() if e["exit_code"] != 0]
    summary["failed"] = failed
    path = out_dir / "summary.json"
    atomic_write_json(path, summary, indent=2)
    ran = len(summary["benchmarks"])
    print(f"{ran - len(failed)}/{ran} benchmarks ran; summary: {os.path.relpath(path, ROOT)}")
    for name in failed:
        print(f"failed: {name} (exit {summary['benchmarks'][name]['exit_code']})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
