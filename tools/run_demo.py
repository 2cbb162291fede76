#!/usr/bin/env python
"""The main job on the built-in mini world: ``make demo`` runs this.

    python tools/run_demo.py                       # the full demo (output/demo)
    python tools/run_demo.py --quick --output output/demo_quick   # a tiny smoke run (~minutes)
    python tools/run_demo.py --from-stage distill  # redo a stage and everything after it

Stages, each one of dpsnet's tools run as its own process (their progress bars show as they go):

    1. world       datasets/make_mini_world.py      the mini checkout world (RPC layout)
    2. masks       tools/extract_masks.py           exemplar masks, quality, pose pruning
    3. synthesize  tools/synthesize.py              checkout scenes from the kept exemplars
    4. pretrain    tools/pretrain_backbone.py       the detector's trunk as a product classifier
                                                    on crops of the scenes (no ImageNet here)
    5. distill     tools/distill.py                 round 0 on the scenes, then pseudo-label
                                                    rounds on the unlabelled pool, each
                                                    evaluated on the held-out test split
    6. report      demo/demo.py                     the last round's model checks out the test
                                                    folder: annotated images, receipts,
                                                    report.html with the evaluator's metrics

A stage whose command and outputs are unchanged since it last finished is skipped, so a second
run only prints the summary. Stage times and the headline figures go to
OUTPUT/demo_summary.json. Ground truth of the test split is read by the evaluator alone.
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers dpsnet's parts)

# isort: split
import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from dpsnet.engine import load_config
from dpsnet.utils.io import atomic_write_json, load_json

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "MiniWorld" / "demo.yaml"
STAGES = ("world", "masks", "synthesize", "pretrain", "distill", "report")

#: --quick: a tiny world and a few training iterations; checks the chain, not the figures.
QUICK_WORLD = dict(
    num_products=6,
    views_per_product=4,
    bad_views_per_product=1,
    val_images=6,
    test_images=12,
    pool_images=12,
    d2s_views_per_product=1,
    d2s_val_images=3,
    exemplar_size=128,
    image_size=192,
    lookalike_pairs=1,
)
QUICK_OPTS = [
    "SOLVER.MAX_ITER", "20",
    "SOLVER.STEPS", "(15,)",
    "SOLVER.WARMUP_ITERS", "5",
    "SOLVER.IMS_PER_BATCH", "2",
    "DISTILL.NUM_ROUNDS", "1",
    "DISTILL.ITERS_PER_ROUND", "10",
    "MODEL.ROI_HEADS.NUM_CLASSES", "6",
    "INPUT.MIN_SIZE_TRAIN", "(160,)",
    "INPUT.MIN_SIZE_TEST", "160",
    "PRETRAIN.MAX_ITER", "10",
    "PRETRAIN.IMS_PER_BATCH", "16",
]  # fmt: skip


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--output", default="output/demo", help="folder for every stage's output")
    parser.add_argument("--config-file", default=str(CONFIG), help="model + distillation config")
    parser.add_argument("--workers", type=int, default=2, help="processes for data stages")
    parser.add_argument("--synth-images", type=int, default=None, help="synthesized scenes")
    parser.add_argument(
        "--quick", action="store_true", help="tiny world and schedule (a smoke run)"
    )
    parser.add_argument(
        "--from-stage", choices=STAGES, default=None, help="rerun this stage and the later ones"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides for training: KEY VALUE ..."
    )
    return parser


class StageRunner:
    """Runs stage commands as subprocesses; skips a stage whose command already finished."""

    def __init__(self, out: Path, env: dict, rerun_from: str | None):
        self.out = out
        self.env = env
        self.state_file = out / "demo_stages.json"
        self.state = load_json(self.state_file) if self.state_file.is_file() else {}
        self.rerun_from = STAGES.index(rerun_from) if rerun_from else len(STAGES)
        self.changed = False

    def run(self, index: int, name: str, argv: list[str], outputs: list[Path]) -> float:
        label = f"[{index + 1}/{len(STAGES)}] {name}"
        prev = self.state.get(name)
        fresh = self.changed or index >= self.rerun_from
        if (
            not fresh
            and prev
            and prev.get("argv") == argv
            and all(Path(p).exists() for p in outputs)
        ):
            print(f"{label}: done earlier ({prev['seconds']:.0f} s), skipped", flush=True)
            return prev["seconds"]
        self.changed = True  # every later stage depends on this one's output
        print(f"{label}: {shlex.join(argv)}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(argv, env=self.env, cwd=REPO)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            print(f"{label}: failed (exit status {proc.returncode}) after {seconds:.0f} s")
            sys.exit(proc.returncode)
        missing = [str(p) for p in outputs if not Path(p).exists()]
        if missing:
            print(f"{label}: finished but did not write {', '.join(missing)}")
            sys.exit(1)
        self.state[name] = {"argv": argv, "seconds": round(seconds, 1)}
        atomic_write_json(self.state_file, self.state, indent=1)
        print(f"{label}: done in {seconds:.0f} s", flush=True)
        return seconds


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env = dict(os.environ)
    # One compute thread per process: on 2 shared cores, 2 OpenMP threads made a training
    # iteration 5x slower (9.2 vs 1.7 s, measured under load); the data loader's worker process
    # uses the other core.
    env.setdefault("OMP_NUM_THREADS", "1")
    if args.quick:  # its own world, so a quick run never replaces the real one
        env["DPSNET_DATASETS"] = str(out / "datasets")
    data_root = Path(env.get("DPSNET_DATASETS", REPO / "datasets")).resolve()
    world = data_root / "mini_world"
    env["DPSNET_DATASETS"] = str(data_root)
    runner = StageRunner(out, env, args.from_stage)
    total_start = time.perf_counter()
    times = {}

    # 1. the world
    cmd = [py, "datasets/make_mini_world.py", "--root", str(world), "--workers", str(args.workers)]
    if args.quick:
        for key, value in QUICK_WORLD.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    times["world"] = runner.run(0, "world", cmd, [world / "manifest.json"])

    # 2. masks and pose pruning (the true masks are read for the quality report only)
    masks = out / "masks"
    cmd = [
        py, "tools/extract_masks.py",
        "--dataset", "mini_rpc_train",
        "--output", str(masks),
        "--workers", str(args.workers),
        "--truth-dir", str(world / "train2019_true_masks"),
        "--planted-bad-poses", str(world / "train2019_planted_bad_poses.json"),
    ]  # fmt: skip
    times["masks"] = runner.run(1, "masks", cmd, [masks / "index.json"])

    # 3. synthesized checkout scenes
    synth = out / "synth"
    cmd = [
        py, "tools/synthesize.py",
        "--masks", str(masks / "index.json"),
        "--output", str(synth),
        "--workers", str(args.workers),
    ]  # fmt: skip
    if args.synth_images or args.quick:
        cmd += ["--num-images", str(args.synth_images or 40)]
    cmd += ["--config-file", args.config_file]
    synth_json = synth / "instances_synth.json"
    times["synthesize"] = runner.run(2, "synthesize", cmd, [synth_json])

    # 4. the detector's trunk pretrained on crops of the scenes (a stand-in for ImageNet)
    distill = out / "distill"
    register = [("mini_synth", str(synth_json), str(synth / "images"))]
    train_opts = [
        "OUTPUT_DIR", str(distill),
        "DATASETS.REGISTER", repr(register),
        "DATASETS.TRAIN", "('mini_synth',)",
    ]  # fmt: skip
    if args.quick:
        train_opts += QUICK_OPTS
    train_opts += args.opts
    backbone = out / "pretrain" / "backbone.pth"
    cmd = [
        py, "tools/pretrain_backbone.py",
        "--config-file", args.config_file,
        "--output", str(backbone),
        *train_opts[2:],
    ]  # fmt: skip
    times["pretrain"] = runner.run(3, "pretrain", cmd, [backbone])

    # 5. distillation rounds (round 0 = synthesis only), each evaluated on the test split
    train_opts += ["MODEL.WEIGHTS", str(backbone)]
    cmd = [py, "tools/distill.py", "--config-file", args.config_file, *train_opts]
    times["distill"] = runner.run(4, "distill", cmd, [distill / "distill_report.json"])

    # 6. the demo on the test folder with the last round's model and its metrics
    cfg = load_config(args.config_file, train_opts)  # the settings the demo's model runs with
    guided = cfg.MODEL.DPSNET.COUNT_GUIDED.ENABLED
    report = load_json(distill / "distill_report.json")
    last = _last_round(report)
    mode = "count_guided_on" if guided else "count_guided_off"
    metrics_json = _metrics_file(distill, last, mode)
    demo_out = out / "report"
    cmd = [
        py, "demo/demo.py",
        "--config-file", args.config_file,
        "--input", str(world / "test2019"),
        "--output", str(demo_out),
        "--metrics-json", str(metrics_json),
        "--opts", *train_opts[2:], "MODEL.WEIGHTS", last["weights"],
    ]  # fmt: skip
    times["report"] = runner.run(5, "report", cmd, [demo_out / "report.html"])

    rows = [_round_row(r, mode) for r in report["rounds"]]
    summary = {
        "output": str(out),
        "quick": args.quick,
        "stage_seconds": {k: round(v, 1) for k, v in times.items()},
        "seconds_this_run": round(time.perf_counter() - total_start, 1),
        "inference": mode,
        "rounds": rows,
        "averaged_cAcc_gain": report.get("averaged_cAcc_gain"),
        "metrics_json": str(metrics_json),
        "report": str(demo_out / "report.html"),
        "distill_report": str(distill / "distill_report.md"),
    }
    atomic_write_json(out / "demo_summary.json", summary, indent=1)
    print(f"\nFixed-threshold cAcc (%) on the test split ({mode.replace('_', ' ')}):")
    print(f"{'round':>5} {'threshold':>9} {'averaged':>8} {'easy':>6} {'medium':>6} {'hard':>6}")
    for row in rows:
        c = row["cAcc"]
        print(
            f"{row['round']:>5} {row['threshold'] or '-':>9} {_pct(c.get('averaged')):>8}"
            f" {_pct(c.get('easy')):>6} {_pct(c.get('medium')):>6} {_pct(c.get('hard')):>6}"
        )
    print(f"Stage times (s): {summary['stage_seconds']}")
    print(f"Distillation report: {summary['distill_report']}")
    print(f"Checkout report:     {summary['report']}")
    return 0


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _round_row(entry: dict, mode: str) -> dict:
    cacc = entry.get("cAcc") or {}
    return {
        "round": entry["round"],
        "threshold": entry.get("threshold"),
        "cAcc": cacc.get(mode) or cacc.get("default") or {},
        "statistics": entry.get("statistics"),
        "audit": entry.get("audit"),
    }


def _last_round(report: dict) -> dict:
    done = [r for r in report["rounds"] if r.get("stage") == "done" and r.get("weights")]
    if not done:
        raise SystemExit("distillation finished no round; see its log")
    return done[-1]


def _metrics_file(distill: Path, last: dict, mode: str) -> Path:
    rdir = distill / f"round_{last['round']}"
    for sub in (f"eval_{mode}", "eval_default"):
        if (rdir / sub / "rpc_metrics.json").is_file():
            return rdir / sub / "rpc_metrics.json"
    raise SystemExit(f"no rpc_metrics.json under {rdir}/eval_{mode}")


if __name__ == "__main__":
    sys.exit(main())
