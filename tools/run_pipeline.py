#!/usr/bin/env python
"""A shop's own products, from exemplar photos to a checkout model, in one command.

    python tools/run_pipeline.py --exemplars E [--exemplar-images DIR] --pool P \\
        [--eval V [--eval-images DIR]] --output OUT [--profile smoke|demo|long] \\
        [--config-file C] [--workers 2] [--from-stage STAGE] [KEY VALUE ...]

E: the single-product exemplars, a registered dataset or a COCO/RPC JSON (images in
--exemplar-images, by default the RPC layout's folder beside the JSON: train2019/ for
instances_train2019.json). P: the unlabelled checkout photos, a registered dataset, a JSON or a
plain folder. V: an optional labelled evaluation set, given as E is. Class count, names, ids and
supercategories come from E (MODEL.ROI_HEADS.NUM_CLASSES and the counting channels follow).

Stages (each resumable, skipped when its command and inputs are unchanged): masks, synthesize,
pretrain, distill, report. A changed catalogue in E reruns from the first stage that depends on
it; outputs made for the old catalogue move to OUT/stale/. The model is OUT/model_final.pth: it
carries its catalogue, counting layout, threshold and config, so
``python demo/demo.py --weights OUT/model_final.pth --input DIR --output REPORT`` runs alone.
Without V the run reports pseudo-label statistics only: no accuracy without labels.
"""

import dpsnet  # noqa: F401  (first: shims detectron2 0.6, registers dpsnet's parts)

# isort: split
import argparse
import sys
from pathlib import Path

from dpsnet.engine import ConfigError, load_config
from dpsnet.engine.cli import ArgumentParser, int_at_least, run
from dpsnet.engine.pipeline import (
    PIPELINE_STAGES,
    PROFILES,
    PipelineSpec,
    StageRunner,
    print_summary,
    run_pipeline,
    stage_env,
)
from dpsnet.engine.sources import (
    exemplar_catalogue,
    folder_source,
    move_stale_outputs,
    resolve_source,
    stage_keys,
    write_catalogue,
)
from dpsnet.utils.io import BadInputError, atomic_write_json

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "MiniWorld" / "demo.yaml"


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--exemplars", required=True, help="registered dataset or COCO/RPC JSON")
    parser.add_argument("--exemplar-images", help="image folder of an --exemplars JSON")
    parser.add_argument("--pool", required=True, help="registered dataset, JSON or image folder")
    parser.add_argument("--eval", help="labelled evaluation set: registered dataset or JSON")
    parser.add_argument("--eval-images", help="image folder of an --eval JSON")
    parser.add_argument("--output", required=True, help="folder for every stage's output")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="demo", help="budget")
    parser.add_argument("--config-file", default=str(CONFIG), help="model + distillation config")
    parser.add_argument(
        "--workers", type=int_at_least(1), default=2, help="processes for data stages"
    )
    parser.add_argument(
        "--from-stage", choices=PIPELINE_STAGES, help="rerun this stage and the later ones"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return parser


def profile_opts(profile: str, config_file: str) -> list[str]:
    """The profile's overrides that the config has (others are left out, not an error)."""
    cfg = load_config(config_file)
    opts = PROFILES[profile]["opts"]
    keep = []
    for key, value in zip(opts[::2], opts[1::2]):
        node = cfg
        for part in key.split("."):
            node = node.get(part) if hasattr(node, "get") else None
        if node is not None:
            keep += [key, value]
    return keep


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    out = Path(args.output).resolve()
    try:
        if args.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {args.workers}")
        exemplars = resolve_source(args.exemplars, "exemplars", args.exemplar_images)
        catalogue = exemplar_catalogue(exemplars)
        moved = move_stale_outputs(out, catalogue)
        categories = write_catalogue(catalogue, out)
        if Path(args.pool).is_dir():
            pool = folder_source(args.pool, out / "pool", categories)
        else:
            pool = resolve_source(args.pool, "pool", None, str(categories))
        evalset = None
        if args.eval:
            evalset = resolve_source(args.eval, "eval", args.eval_images, str(categories))
        opts = profile_opts(args.profile, args.config_file)
        opts += [
            "MODEL.ROI_HEADS.NUM_CLASSES", str(catalogue.num_classes),
            "MODEL.COUNTING_HEAD.NUM_CHANNELS", "0",  # from the levels and the catalogue
            "DISTILL.POOL_DATASET", pool.name,
            "DISTILL.EVAL_DATASET", evalset.name if evalset else "",
            "DATASETS.TEST", f"('{evalset.name}',)" if evalset else "()",
            # thresholds from a held-out tenth of the scenes (the demo config's mini_rpc_val is
            # not this data); pass DISTILL.THRESHOLD_DATASET to use a labelled split of your own
            "DISTILL.THRESHOLD_DATASET", "",
            "DISTILL.THRESHOLD_HOLDOUT", "0.1",
            *args.opts,
        ]  # fmt: skip
        load_config(args.config_file, opts)  # a wrong key fails here, before any stage runs
    except (ConfigError, BadInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if moved:
        print(f"The catalogue changed: outputs of the old one moved to {out / 'stale' / moved}")
    print(
        f"{catalogue.num_classes} products from {args.exemplars}; pool {pool.name}; "
        f"evaluation {evalset.name if evalset else '(none: no accuracy without labels)'}"
    )
    spec = PipelineSpec(
        output=out,
        config_file=args.config_file,
        exemplars=exemplars,
        pool=pool,
        eval=evalset,
        report_input=Path(evalset.image_root if evalset else pool.image_root),
        opts=opts,
        synth_name="pipeline_synth",
        synth_images=PROFILES[args.profile]["synth_images"],
        categories_json=str(categories),
        workers=args.workers,
        report_from_checkpoint=True,
        stage_keys=stage_keys(catalogue, exemplars, pool, evalset),
        stages=PIPELINE_STAGES,
        state_name="pipeline_stages.json",
        summary_name="pipeline_summary.json",
        env=stage_env(),
    )
    runner = StageRunner(out, spec.env, args.from_stage, PIPELINE_STAGES, spec.state_name)
    summary = run_pipeline(spec, runner, {})
    summary = {"profile": args.profile, "products": catalogue.num_classes, **summary}
    atomic_write_json(out / spec.summary_name, summary, indent=1)
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, resume_hint="rerun the same command: finished stages are kept"))
