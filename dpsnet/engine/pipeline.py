"""The whole chain from exemplars to a checkout model, as resumable stages (one tool each).

``tools/run_pipeline.py`` (any data) and ``tools/run_demo.py`` (the mini world) are thin layers
over :func:`run_pipeline`: each stage runs one of dpsnet's tools as its own process (its progress
bar shows as it goes), and a stage whose command, inputs and outputs are unchanged since it last
finished is skipped. A stage that reruns makes every later stage rerun.

    masks       tools/extract_masks.py      exemplar masks, quality, pose pruning
    synthesize  tools/synthesize.py         checkout scenes from the kept exemplars
    pretrain    tools/pretrain_backbone.py  the detector's trunk on crops of the scenes
    distill     tools/distill.py            round 0 on the scenes, then pseudo-label rounds
    report      demo/demo.py                the last model checks out a folder: report.html

Nothing here imports the stages' packages: the stages are processes.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dpsnet.engine.stages import DEMO_STAGES, PIPELINE_STAGES, StageRunner, digest, file_key
from dpsnet.utils.io import load_json

__all__ = [
    "DEMO_STAGES",
    "PIPELINE_STAGES",
    "PROFILES",
    "PipelineSpec",
    "Source",
    "StageRunner",
    "digest",
    "file_key",
    "print_summary",
    "run_pipeline",
    "stage_env",
]


#: Training budgets of tools/run_pipeline.py --profile, as config overrides (only keys the config
#: has are applied) and a number of synthesized scenes (None: SYNTHESIS.COMPOSE's default).
PROFILES: dict[str, dict] = {
    # Checks the chain on any data in a few minutes on 2 CPU cores; figures mean nothing.
    "smoke": {
        "synth_images": 16,
        "opts": [
            "SOLVER.MAX_ITER",
            "6",
            "SOLVER.STEPS",
            "(5,)",
            "SOLVER.WARMUP_ITERS",
            "2",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "DISTILL.NUM_ROUNDS",
            "1",
            "DISTILL.ITERS_PER_ROUND",
            "4",
            "DISTILL.CONTROL",
            "False",
            "DISTILL.COMPARE_COUNT_GUIDED",
            "False",
            "INPUT.MIN_SIZE_TRAIN",
            "(160,)",
            "INPUT.MAX_SIZE_TRAIN",
            "224",
            "INPUT.MIN_SIZE_TEST",
            "160",
            "INPUT.MAX_SIZE_TEST",
            "224",
            "PRETRAIN.MAX_ITER",
            "4",
            "PRETRAIN.IMS_PER_BATCH",
            "8",
            "DATALOADER.NUM_WORKERS",
            "0",
        ],
    },  # fmt: skip
    # configs/MiniWorld/demo.yaml's own budget (about 20 minutes on 2 CPU cores).
    "demo": {"synth_images": None, "opts": []},
    # A learning-curve run: longer rounds, more scenes, both arms evaluated every 1000 iterations
    # (about 17,000 training iterations in all: under 150 minutes on 2 CPU cores at the demo's
    # 0.3 s per iteration; minutes on a GPU).
    "long": {
        "synth_images": 4000,
        "opts": [
            "SOLVER.MAX_ITER",
            "5000",
            "SOLVER.STEPS",
            "(4000,)",
            "DISTILL.NUM_ROUNDS",
            "3",
            "DISTILL.ITERS_PER_ROUND",
            "2000",
            "PRETRAIN.MAX_ITER",
            "1000",
            "DISTILL.CURVE_EVAL_PERIOD",
            "1000",
        ],
    },  # fmt: skip
}

#: What the summary says when there is no labelled evaluation set.
NO_LABELS = (
    "no labelled evaluation set (--eval): no accuracy can be measured without labels; reported "
    "are the pseudo-label statistics and the counting view's agreement with the detections"
)


@dataclass
class Source:
    """A dataset a stage reads: its registered name, and how other processes register it.

    Attributes:
        name: the name every stage's config uses.
        register: a ``DATASETS.REGISTER`` entry (None: registered by ``import dpsnet``).
        image_root: the folder of its images (for the report stage), when known.
        json_file: its COCO/RPC JSON, when it has one.
    """

    name: str
    register: list[str] | None = None
    image_root: str | None = None
    json_file: str | None = None


@dataclass
class PipelineSpec:
    """Everything a pipeline run needs.

    Attributes:
        output: the folder of every stage's output.
        config_file: the model + distillation config.
        exemplars: the single-product exemplars (extract_masks' input).
        pool: the unlabelled checkout images (pseudo-labelled).
        eval: the labelled evaluation set (None: no accuracy is measured).
        report_input: the folder the report stage checks out.
        opts: training overrides (KEY VALUE ...), given to pretraining, distillation and report.
        synth_name: the registered name of the synthesized scenes.
        synth_images: scenes to synthesize (None: the config's default).
        categories_json: a JSON whose ``categories`` fix the class order (None: the scenes').
        workers: processes of the data stages.
        masks_args: extra arguments of tools/extract_masks.py.
        report_from_checkpoint: the report stage runs ``demo.py --weights`` alone (the
            checkpoint's own config and catalogue) instead of the config and overrides.
        stage_keys: stage -> what else its result depends on (e.g. the catalogue's digest);
            a change reruns it and everything after it.
        stages: the stage names, in order (the labels' "[i/N]").
        state_name / summary_name: files under ``output``.
        env: the stages' environment.
    """

    output: Path
    config_file: str
    exemplars: Source
    pool: Source
    eval: Source | None
    report_input: Path
    opts: list[str] = field(default_factory=list)
    synth_name: str = "mini_synth"
    synth_images: int | None = None
    categories_json: str | None = None
    workers: int = 2
    masks_args: list[str] = field(default_factory=list)
    report_from_checkpoint: bool = False
    stage_keys: dict = field(default_factory=dict)
    stages: tuple[str, ...] = DEMO_STAGES
    state_name: str = "demo_stages.json"
    summary_name: str = "demo_summary.json"
    env: dict = field(default_factory=lambda: stage_env())


def stage_env(data_root: str | None = None) -> dict:
    """The stages' environment: this one, with the data root.

    Threads are not pinned here: each training stage decides its compute threads from the cores
    that are free when it starts (``dpsnet.utils.precision``), and an ``OMP_NUM_THREADS`` the user
    exported still wins.
    """
    env = dict(os.environ)
    if data_root:
        env["DPSNET_DATASETS"] = str(data_root)
    return env


def run_pipeline(spec: PipelineSpec, runner: StageRunner, times: dict) -> dict:
    """Run the masks..report stages of ``spec``; write and return the summary.

    Args:
        spec: the run.
        runner: the stage runner (its stage list includes :data:`PIPELINE_STAGES`).
        times: stage -> seconds, filled in (earlier stages' times may already be there).
    """
    out, py = Path(spec.output), sys.executable
    first = runner.stages.index("masks")
    total_start = time.perf_counter()
    keys = spec.stage_keys

    masks = out / "masks"
    cmd = [py, "tools/extract_masks.py"]
    ex = spec.exemplars
    if ex.register:
        cmd += ["--json", ex.register[1], "--image-root", ex.register[2]]
    else:
        cmd += ["--dataset", ex.name]
    cmd += ["--output", str(masks), "--workers", str(spec.workers), *spec.masks_args]
    times["masks"] = runner.run(first, "masks", cmd, [masks / "index.json"], keys.get("masks"))

    synth = out / "synth"
    cmd = [
        py, "tools/synthesize.py",
        "--masks", str(masks / "index.json"),
        "--output", str(synth),
        "--workers", str(spec.workers),
    ]  # fmt: skip
    if spec.synth_images:
        cmd += ["--num-images", str(spec.synth_images)]
    cmd += ["--config-file", spec.config_file]
    synth_json = synth / "instances_synth.json"
    times["synthesize"] = runner.run(
        first + 1, "synthesize", cmd, [synth_json], keys.get("synthesize")
    )

    distill = out / "distill"
    synth_entry = (spec.synth_name, str(synth_json), str(synth / "images"))
    if spec.categories_json:
        synth_entry += (spec.categories_json,)
    # the exemplars are read by the masks stage alone
    register = [synth_entry] + [
        tuple(s.register) for s in (spec.pool, spec.eval) if s and s.register
    ]
    train_opts = [
        "OUTPUT_DIR", str(distill),
        "DATASETS.REGISTER", repr(register),
        "DATASETS.TRAIN", f"('{spec.synth_name}',)",
        *spec.opts,
    ]  # fmt: skip
    backbone = out / "pretrain" / "backbone.pth"
    cmd = [
        py, "tools/pretrain_backbone.py",
        "--config-file", spec.config_file,
        "--output", str(backbone),
        *train_opts[2:],
    ]  # fmt: skip
    times["pretrain"] = runner.run(first + 2, "pretrain", cmd, [backbone], keys.get("pretrain"))

    train_opts += ["MODEL.WEIGHTS", str(backbone)]
    cmd = [py, "tools/distill.py", "--config-file", spec.config_file, *train_opts]
    report_json = distill / "distill_report.json"
    times["distill"] = runner.run(first + 3, "distill", cmd, [report_json], keys.get("distill"))

    report = load_json(report_json)
    last = _last_round(report)
    mode = _inference_mode(spec, train_opts)
    metrics_json = _metrics_file(distill, last, mode) if spec.eval else None
    demo_out = out / "report"
    cmd = [py, "demo/demo.py"]
    if not spec.report_from_checkpoint:
        cmd += ["--config-file", spec.config_file]
    else:
        cmd += ["--weights", last["weights"]]
    cmd += ["--input", str(spec.report_input), "--output", str(demo_out)]
    if metrics_json:
        cmd += ["--metrics-json", str(metrics_json)]
    if not spec.report_from_checkpoint:
        cmd += ["--opts", *train_opts[2:], "MODEL.WEIGHTS", last["weights"]]
    times["report"] = runner.run(
        first + 4, "report", cmd, [demo_out / "report.html"], keys.get("report")
    )

    final = out / "model_final.pth"
    if spec.stages != DEMO_STAGES:  # the product: OUT/model_final.pth
        _copy_atomic(Path(last["weights"]), final)
    rows = [_round_row(r, mode) for r in report["rounds"]]
    summary = {
        "output": str(out),
        "stage_seconds": {k: round(v, 1) for k, v in times.items()},
        "seconds_this_run": round(time.perf_counter() - total_start, 1),
        "inference": mode,
        "rounds": rows,
        "headline": report.get("headline"),
        "metrics_json": str(metrics_json) if metrics_json else None,
        "report": str(demo_out / "report.html"),
        "distill_report": str(distill / "distill_report.md"),
    }
    if spec.stages != DEMO_STAGES:
        summary["model"] = str(final)
    if spec.eval is None:
        summary["accuracy"] = NO_LABELS
    return summary


def print_summary(summary: dict) -> None:
    """The fixed-threshold cAcc table of every round, the stage times and the reports."""
    mode = summary["inference"]
    if summary.get("accuracy"):
        print(f"\n{summary['accuracy']}.")
        for row in summary["rounds"]:
            st = row.get("statistics") or {}
            if st:
                print(
                    f"round {row['round']}: {st.get('image_level_images')} of "
                    f"{st.get('pool_images')} pool images agree with the counting view "
                    f"(image-level), {st.get('instance_level_images')} instance-level; "
                    f"mean predicted count {st.get('mean_predicted_count', float('nan')):.2f}"
                )
    else:
        print(f"\nFixed-threshold cAcc (%) on the test split ({mode.replace('_', ' ')}):")
        print(
            f"{'round':>5} {'threshold':>9} {'averaged':>8} {'easy':>6} {'medium':>6} {'hard':>6}"
        )
        for row in summary["rounds"]:
            c = row["cAcc"]
            print(
                f"{row['round']:>5} {row['threshold'] or '-':>9} {_pct(c.get('averaged')):>8}"
                f" {_pct(c.get('easy')):>6} {_pct(c.get('medium')):>6} {_pct(c.get('hard')):>6}"
            )
    print(f"Stage times (s): {summary['stage_seconds']}")
    print(f"Distillation report: {summary['distill_report']}")
    print(f"Checkout report:     {summary['report']}")
    if summary.get("model"):
        print(f"Model:               {summary['model']}")


def _inference_mode(spec: PipelineSpec, train_opts: list[str]) -> str:
    from dpsnet.engine.setup import load_config

    cfg = load_config(spec.config_file, train_opts)  # the settings the report's model runs with
    return "count_guided_on" if cfg.MODEL.DPSNET.COUNT_GUIDED.ENABLED else "count_guided_off"


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


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
