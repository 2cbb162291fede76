"""Distillation over several seeds: mean and spread of distilled, control and gain per round.

Each seed is one complete run (``tools/distill.py`` with ``SEED`` set and its own OUTPUT_DIR):
its round 0 is shared by its distilled chain and its control chain, so the gain of a seed is
measured from one starting model. ``aggregate_reports`` reads the seeds' ``distill_report.json``
(``report.summarize_rounds``) and gives, per round and arm, the mean, the standard deviation
(population, over seeds), min and max of each figure; ``tools/distill_seeds.py`` runs the seeds
and writes ``seeds_report.{json,md}``.
"""

from pathlib import Path

import numpy as np

from dpsnet.distill.report import FIGURE_COLUMNS
from dpsnet.utils.io import atomic_write_json, atomic_write_text, load_json

__all__ = ["aggregate_reports", "seeds_markdown", "spread", "write_seeds_report"]

#: Inference modes tried in order when a report has not the requested one.
_FALLBACK_MODES = ("count_guided_off", "default")


def spread(values) -> dict:
    """{"mean", "std", "min", "max", "n"} of the numbers in ``values`` (None ignored)."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


def _by_mode(per_mode: dict | None, mode: str):
    """``per_mode[mode]``, else the first of ``_FALLBACK_MODES`` present; None if none is."""
    per_mode = per_mode or {}
    for m in (mode, *_FALLBACK_MODES):
        if m in per_mode:
            return per_mode[m]
    return None


def _figures(arm: dict | None, mode: str) -> dict:
    return _by_mode((arm or {}).get("figures"), mode) or {}


def aggregate_reports(reports: dict, mode: str = "count_guided_off") -> dict:
    """Mean and spread over seeds of each round's distilled, control and gain figures.

    Args:
        reports: seed -> the seed's distill_report.json content.
        mode: the inference mode compared (falls back to "count_guided_off", then "default").

    Returns:
        {"seeds", "mode", "rounds": [{"round", "distilled", "control", "gain": figure ->
        spread, "gain_exceeds_spread", "gain_positive_every_seed", "gain_intervals"}]}. A
        round's gain counts (``gain_exceeds_spread``) when the mean cAcc gain is positive and
        larger than the standard deviation of the gain over seeds; rounds missing from a seed
        are left out of that seed's figures (``n`` says how many seeds a figure has).
        ``gain_intervals``: of the seeds whose report has the round's paired interval
        (``n``), how many lie wholly above zero and how many wholly below.
    """
    by_round: dict[int, dict] = {}
    intervals: dict[int, list] = {}
    for report in reports.values():
        for e in report.get("rounds", []):
            if e.get("stage") != "done":
                continue
            arms = by_round.setdefault(
                int(e["round"]), {"distilled": [], "control": [], "gain": []}
            )
            interval = _by_mode(e.get("gain_interval"), mode)
            if interval is not None:
                intervals.setdefault(int(e["round"]), []).append(interval)
            arms["distilled"].append(_figures(e, mode))
            ctl = e.get("control")
            if ctl and ctl.get("stage") == "done":
                c = _figures(ctl, mode)
                arms["control"].append(c)
                d = _figures(e, mode)
                arms["gain"].append({k: d[k] - c[k] for k in d if k in c})
    rounds = []
    for r in sorted(by_round):
        entry = {"round": r}
        for arm, figs in by_round[r].items():
            entry[arm] = {k: spread(f.get(k) for f in figs) for k in FIGURE_COLUMNS}
        gain = entry["gain"]["cAcc"]
        entry["gain_exceeds_spread"] = bool(
            gain["n"] >= 2 and gain["mean"] > 0 and gain["mean"] > gain["std"]
        )
        entry["gain_positive_every_seed"] = bool(gain["n"] and gain["min"] > 0)
        found = intervals.get(r, [])
        entry["gain_intervals"] = {
            "n": len(found),
            "above_zero": sum(i["low"] > 0 for i in found),
            "below_zero": sum(i["high"] < 0 for i in found),
        }
        rounds.append(entry)
    return {"seeds": sorted(reports, key=str), "mode": mode, "rounds": rounds}


def _cell(s: dict) -> str:
    if not s or s["n"] == 0:
        return "-"
    return f"{s['mean']:.2f} ± {s['std']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"


def seeds_markdown(agg: dict) -> str:
    """The aggregate as Markdown: mean ± std [min, max] over seeds per round and arm."""
    cols = ("cAcc", "hard/cAcc", "mAP50", "ACD")
    lines = [
        "# Distillation over seeds",
        "",
        f"Seeds: {', '.join(map(str, agg['seeds']))}; mode {agg['mode']}. Each cell: mean ± std "
        "[min, max] over seeds. gain = distilled - control of the same seed and round; it counts "
        "when its mean is positive and above its std.",
        "",
        "| round | arm | " + " | ".join(cols) + " | n |",
        "|---|---|" + "---|" * (len(cols) + 1),
    ]
    for e in agg["rounds"]:
        for arm in ("distilled", "control", "gain"):
            figs = e[arm]
            if not figs["cAcc"]["n"]:
                continue
            name = "round 0" if e["round"] == 0 and arm == "distilled" else arm
            if arm == "gain":
                name += " (counts)" if e["gain_exceeds_spread"] else " (within spread)"
            cells = [_cell(figs[c]) for c in cols]
            lines.append(
                f"| {e['round']} | {name} | " + " | ".join(cells) + f" | {figs['cAcc']['n']} |"
            )
    counted = [e for e in agg["rounds"] if e.get("gain_intervals", {}).get("n")]
    if counted:
        lines += ["", "Each seed's cAcc gain against its 95 % paired interval over the images:"]
        for e in counted:
            i = e["gain_intervals"]
            lines.append(
                f"- round {e['round']}: {i['above_zero']} of {i['n']} seeds above zero, "
                f"{i['below_zero']} below"
            )
    return "\n".join(lines) + "\n"


def write_seeds_report(run_dirs: dict, output_dir, mode: str = "count_guided_off") -> dict:
    """Aggregate the seeds' runs (seed -> OUTPUT_DIR) into ``seeds_report.{json,md}``."""
    reports = {seed: load_json(Path(d) / "distill_report.json") for seed, d in run_dirs.items()}
    agg = aggregate_reports(reports, mode)
    agg["runs"] = {str(k): str(v) for k, v in run_dirs.items()}
    output_dir = Path(output_dir)
    atomic_write_json(output_dir / "seeds_report.json", agg, indent=1)
    atomic_write_text(output_dir / "seeds_report.md", seeds_markdown(agg))
    return agg
