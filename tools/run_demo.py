#!/usr/bin/env python
"""The main job on the built-in mini world: ``make demo`` runs this.

    python tools/run_demo.py                       # the full demo (output/demo)
    python tools/run_demo.py --quick --output output/demo_quick   # a tiny smoke run (~minutes)
    python tools/run_demo.py --profile long        # learning curve (output/demo_long, < 150 min)
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
import sys
import time
from pathlib import Path

from dpsnet.data.mini_world import SIZE_PRESETS
from dpsnet.engine.cli import ArgumentParser, int_at_least, run
from dpsnet.engine.pipeline import (
    DEMO_STAGES,
    PROFILES,
    PipelineSpec,
    Source,
    StageRunner,
    print_summary,
    run_pipeline,
    stage_env,
)
from dpsnet.utils.io import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "MiniWorld" / "demo.yaml"
STAGES = DEMO_STAGES

#: --quick: a tiny world and a few training iterations; checks the chain, not the figures.
QUICK_WORLD = SIZE_PRESETS["small"]
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
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--output", default=None, help="folder for every stage's output (output/demo[_long])"
    )
    parser.add_argument(
        "--profile",
        choices=("demo", "long"),
        default="demo",
        help="demo: the config's budget; long: a learning curve (control and distillation "
        "evaluated every 1000 iterations)",
    )
    parser.add_argument("--config-file", default=str(CONFIG), help="model + distillation config")
    parser.add_argument(
        "--workers", type=int_at_least(1), default=2, help="processes for data stages"
    )
    parser.add_argument(
        "--synth-images", type=int_at_least(1), default=None, help="synthesized scenes"
    )
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


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    if args.quick and args.profile != "demo":
        print("error: --quick and --profile long exclude each other", file=sys.stderr)
        return 2
    profile = PROFILES[args.profile]
    default_out = "output/demo" if args.profile == "demo" else f"output/demo_{args.profile}"
    out = Path(args.output or default_out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env = stage_env()
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

    # 2-6. masks (the true masks are read for the quality report only), scenes, trunk,
    # distillation rounds evaluated on the test split, the report on the test folder
    spec = PipelineSpec(
        output=out,
        config_file=args.config_file,
        exemplars=Source("mini_rpc_train"),
        pool=Source("mini_rpc_pool"),
        eval=Source("mini_rpc_test"),
        report_input=world / "test2019",
        opts=(QUICK_OPTS if args.quick else list(profile["opts"])) + args.opts,
        synth_images=args.synth_images or (40 if args.quick else profile["synth_images"]),
        workers=args.workers,
        masks_args=[
            "--truth-dir", str(world / "train2019_true_masks"),
            "--planted-bad-poses", str(world / "train2019_planted_bad_poses.json"),
        ],
        env=env,
    )  # fmt: skip
    summary = run_pipeline(spec, runner, times)
    summary["quick"] = args.quick
    summary["seconds_this_run"] = round(time.perf_counter() - total_start, 1)
    atomic_write_json(out / spec.summary_name, summary, indent=1)
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, resume_hint="rerun the same command: finished stages are kept"))
