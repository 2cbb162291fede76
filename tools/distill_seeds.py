#!/usr/bin/env python
"""Distillation over several seeds, then the mean and spread of distilled, control and gain.

    python tools/distill_seeds.py --config-file C --seeds 1 2 3 --output out/seeds [KEY VALUE ...]
    python tools/distill_seeds.py --aggregate-only --seeds 1 2 3 --output out/seeds

Runs ``tools/distill.py --config-file C OUTPUT_DIR <output>/seed_<s> SEED <s> [KEY VALUE ...]``
for each seed in turn (each run resumes where it stopped, so re-running the command continues),
then writes ``<output>/seeds_report.{json,md}`` (``dpsnet.distill.seeds``). Within a seed the
distilled chain and its control share that seed's round-0 model.

Exit codes: 0 done; 1 a seed's run failed (the others are still aggregated); 2 bad input.
"""

import argparse
import subprocess
import sys
from pathlib import Path

from dpsnet.engine.cli import ArgumentParser, int_at_least, run

ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", default="", help="config of every run")
    p.add_argument("--seeds", type=int_at_least(0), nargs="+", required=True, help="seeds to run")
    p.add_argument("--output", required=True, help="folder of the seeds' runs and the report")
    p.add_argument("--mode", default="count_guided_off", help="inference mode to compare")
    p.add_argument("--aggregate-only", action="store_true", help="only aggregate finished runs")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.output)
    if len(args.opts) % 2:
        print(f"error: config overrides must be KEY VALUE pairs: {args.opts}", file=sys.stderr)
        return 2
    if not args.aggregate_only and not args.config_file:
        print("error: --config-file is required to run the seeds", file=sys.stderr)
        return 2
    runs = {s: out / f"seed_{s}" for s in args.seeds}
    failed = []
    if not args.aggregate_only:
        for seed, run in runs.items():
            cmd = [
                sys.executable, str(ROOT / "tools" / "distill.py"),
                "--config-file", args.config_file,
                *args.opts, "OUTPUT_DIR", str(run), "SEED", str(seed),
            ]  # fmt: skip
            print(f"seed {seed}: {' '.join(cmd)}", flush=True)
            if subprocess.run(cmd, cwd=ROOT).returncode != 0:
                failed.append(seed)
    done = {s: d for s, d in runs.items() if (d / "distill_report.json").is_file()}
    if not done:
        print(f"error: no distill_report.json under {out}/seed_*", file=sys.stderr)
        return 2 if args.aggregate_only else 1
    from dpsnet.distill.seeds import write_seeds_report

    write_seeds_report(done, out, args.mode)
    print(f"Seeds report: {out / 'seeds_report.md'}")
    missing = sorted(set(runs) - set(done))
    if failed or missing:
        print(f"seeds failed: {failed}; without a report: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(main, resume_hint="rerun the same command: each seed resumes where it stopped"))
