"""Per-round report of a distillation run: JSON, Markdown and a PNG plot of cAcc per level.

Built from the loop's state file alone, so it can be regenerated at any time
(``write_report(output_dir, load_json(output_dir / "distill_state.json"))``).
"""

import logging
from pathlib import Path

from dpsnet.utils.io import atomic_path, atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["cacc_by_level", "flatten_metrics", "summarize_rounds", "write_report"]

LEVELS = ("averaged", "easy", "medium", "hard")
# Prefixes of the evaluator's metrics that are not the fixed-threshold detection figures.
_OTHER_PROTOCOLS = ("search", "count")


def flatten_metrics(results, prefix: str = "") -> dict[str, float]:
    """Nested evaluator results -> {"a/b": value}, numbers only."""
    out = {}
    if isinstance(results, dict):
        for k, v in results.items():
            out.update(flatten_metrics(v, f"{prefix}{k}/"))
    elif isinstance(results, (int, float)) and not isinstance(results, bool):
        out[prefix.rstrip("/")] = float(results)
    return out


def cacc_by_level(results) -> dict[str, float]:
    """Fixed-threshold cAcc (%) per level from an RPCEvaluator result, plus rpctool's protocol.

    The evaluator reports ``cAcc`` (averaged over all images), ``easy/cAcc`` ... and the searched
    threshold's ``search/cAcc``; the leading task name ("rpc") and dataset name are ignored.
    """
    out = {}
    for key, value in flatten_metrics(results).items():
        parts = key.split("/")
        if parts[-1] != "cAcc":
            continue
        rest = parts[:-1]
        if rest and rest[0] == "rpc":
            rest = rest[1:]
        rest = [p for p in rest if p in LEVELS or p in _OTHER_PROTOCOLS]
        if not rest:
            out["averaged"] = value
        elif rest[0] == "search":
            out["search/" + (rest[1] if len(rest) > 1 else "averaged")] = value
        elif rest[0] in LEVELS and len(rest) == 1:
            out[rest[0]] = value
    return out


def summarize_rounds(state: dict) -> dict:
    """The report's content: one entry per round, and the gain of the last round over round 0."""
    rounds = []
    for key in sorted(state.get("rounds", {}), key=int):
        rs = state["rounds"][key]
        entry = {
            "round": int(key),
            "stage": rs.get("stage"),
            "threshold": rs.get("threshold"),
            "weights": rs.get("weights"),
            "statistics": rs.get("statistics"),
            "audit": rs.get("audit"),
            "cAcc": {mode: cacc_by_level(res) for mode, res in (rs.get("metrics") or {}).items()},
        }
        rounds.append(entry)
    done = [e for e in rounds if e["stage"] == "done" and e["cAcc"]]
    gain = {}
    if len(done) >= 2 and done[0]["round"] == 0:
        first, last = done[0]["cAcc"], done[-1]["cAcc"]
        for mode in last:
            a, b = first.get(mode, {}).get("averaged"), last[mode].get("averaged")
            if a is not None and b is not None:
                gain[mode] = {"from_round": 0, "to_round": done[-1]["round"], "points": b - a}
    return {"rounds": rounds, "averaged_cAcc_gain": gain}


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _markdown(summary: dict) -> str:
    lines = ["# Distillation report", ""]
    lines += [
        "Fixed-threshold cAcc (%) on the held-out split after each round (round 0: synthesized "
        "data only, the baseline). `search` is rpctool's protocol (threshold searched on the "
        "evaluated set itself, optimistic), for comparison only.",
        "",
    ]
    modes = sorted({m for e in summary["rounds"] for m in e["cAcc"]})
    header = ["round", "threshold", "mode", *LEVELS, "search"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in summary["rounds"]:
        for mode in modes or ["-"]:
            c = e["cAcc"].get(mode, {})
            row = [str(e["round"]), _fmt(e["threshold"]), mode]
            row += [_fmt(c.get(lv)) for lv in LEVELS] + [_fmt(c.get("search/averaged"))]
            lines.append("| " + " | ".join(row) + " |")
    for mode, g in summary["averaged_cAcc_gain"].items():
        lines.append(
            f"\nAveraged cAcc gain ({mode}), round {g['to_round']} over round 0: "
            f"{g['points']:+.2f} points."
        )
    lines += ["", "## Pseudo-labels per round", ""]
    header = [
        "round",
        "image-level imgs",
        "instance-level imgs",
        "rejected",
        "boxes",
        "painted boxes",
        "audit precision",
        "audit recall (selected)",
        "pool recall",
        "image-level exact",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in summary["rounds"]:
        s, a = e["statistics"], e["audit"]
        if not s:
            continue
        row = [
            str(e["round"]),
            str(s["image_level_images"]),
            str(s["instance_level_images"]),
            str(s["rejected_images"]),
            str(s["boxes"]),
            str(s["painted_boxes"]),
        ]
        if a:
            row += [
                _fmt(a["all"]["precision"], 3),
                _fmt(a["all"]["recall"], 3),
                _fmt(a["pool_recall"], 3),
                _fmt(a["image_level_exact"], 3),
            ]
        else:
            row += ["-"] * 4
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "The audit compares the pseudo-labels with the pool's hidden ground truth after "
        "selection; it never feeds selection. Precision: pseudo boxes matching a ground-truth "
        "box of the same category (IoU >= 0.5); recall (selected): over the objects of the "
        "selected images; image-level exact: image-level samples whose per-category counts are "
        "exactly right.",
    ]
    return "\n".join(lines) + "\n"


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    modes = sorted({m for e in summary["rounds"] for m in e["cAcc"]})
    styles = {0: "-", 1: "--", 2: ":"}
    for i, mode in enumerate(modes):
        for lv in LEVELS:
            pts = [
                (e["round"], e["cAcc"][mode][lv])
                for e in summary["rounds"]
                if lv in e["cAcc"].get(mode, {})
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, styles.get(i, "-"), marker="o", label=f"{lv} ({mode})")
    ax.set_xlabel("round (0 = synthesized only)")
    ax.set_ylabel("cAcc (%) at the fixed threshold")
    ax.set_title("Distillation: checkout accuracy per round")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(output_dir: str | Path, state: dict, plot: bool = True) -> dict:
    """Write distill_report.{json,md} (and .png with ``plot``) into ``output_dir``.

    Returns:
        The summary (see ``summarize_rounds``).
    """
    output_dir = Path(output_dir)
    summary = summarize_rounds(state)
    atomic_write_json(output_dir / "distill_report.json", summary, indent=1)
    atomic_write_text(output_dir / "distill_report.md", _markdown(summary))
    if plot:
        _plot(summary, output_dir / "distill_report.png")
    return summary
