"""Per-round report of a distillation run: JSON, Markdown and a PNG plot of cAcc per level.

Built from the loop's state file alone, so it can be regenerated at any time
(``write_report(output_dir, load_json(output_dir / "distill_state.json"))``).
"""

import logging
from pathlib import Path

from dpsnet.utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["cacc_by_level", "flatten_metrics", "summarize_rounds", "write_report"]

#: Figures of the distilled-vs-control table, in order.
FIGURE_COLUMNS = ("cAcc", "easy/cAcc", "medium/cAcc", "hard/cAcc", "mAP50", "ACD", "count_MAE")

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


def _mode_for(entry: dict | None) -> str | None:
    """The inference mode of the headline figures: count-guided only where it won on held-out
    data (``count_guided_default``), else plain ("count_guided_off" or "default")."""
    if not entry:
        return None
    figures = entry.get("figures") or {}
    if entry.get("count_guided_default") and "count_guided_on" in figures:
        return "count_guided_on"
    for mode in ("count_guided_off", "default"):
        if mode in figures:
            return mode
    return next(iter(figures), None)


def _arm_entry(st: dict) -> dict:
    choice = st.get("threshold_choice") or {}
    return {
        "stage": st.get("stage"),
        "weights": st.get("weights"),
        "score_threshold": choice.get("threshold"),
        "threshold_source": choice.get("source"),
        "count_guided_default": choice.get("count_guided_default"),
        "threshold_choice": choice or None,
        "cAcc": {mode: cacc_by_level(res) for mode, res in (st.get("metrics") or {}).items()},
        # A state written before figures were stored: derive them from its metrics.
        "figures": st.get("figures") or _figures_of(st.get("metrics")),
        "iteration": st.get("iteration"),
    }


def _figures_of(metrics) -> dict:
    from dpsnet.distill.evaluation import round_figures

    return round_figures(metrics) if metrics else {}


def _gain(distilled: dict, control: dict) -> dict:
    """distilled - control, per mode and figure, where both have it."""
    out = {}
    for mode, figs in distilled.items():
        other = control.get(mode, {})
        diff = {k: v - other[k] for k, v in figs.items() if k in other}
        if diff:
            out[mode] = diff
    return out


def _curve(state: dict, mode: str | None) -> dict:
    """Learning-curve points per arm: the curve checkpoints and each round's final model."""
    arms = {"distilled": [], "control": []}
    keys = sorted(state.get("rounds", {}), key=int)
    for key in keys:
        rs = state["rounds"][key]
        chains = ["distilled", "control"] if key == "0" else ["distilled"]
        sources = [(rs, chains)]
        if key != "0" and rs.get("control"):
            sources.append((rs["control"], ["control"]))
        for st, names in sources:
            pts = list((st.get("curve") or {}).values())
            if st.get("stage") == "done" and st.get("iteration") is not None:
                pts.append({"iteration": st["iteration"], "figures": st.get("figures") or {}})
            for p in pts:
                figs = p["figures"].get(mode) or next(iter(p["figures"].values()), {})
                point = {
                    "iteration": p["iteration"],
                    "round": int(key),
                    "cAcc": figs.get("cAcc"),
                    "mAP50": figs.get("mAP50"),
                }
                for name in names:
                    arms[name].append(point)
    for pts in arms.values():
        pts.sort(key=lambda p: p["iteration"])
    return arms


def summarize_rounds(state: dict) -> dict:
    """The report's content: per round the distilled model and its same-budget control.

    Returns:
        {"rounds": [...], "gain_note", "change_over_round0", "headline", "curve"}. Each round:
        its pseudo-label statistics and audit, the distilled model's figures per inference mode
        (``figures``: cAcc averaged and per level, mAP50, mmAP, ACD, count_MAE) at its score
        threshold, the control's (``control``), and ``gain`` = distilled - control of the same
        round. ``change_over_round0`` compares the last round with round 0, which trained fewer
        iterations: it is not a gain of the method.
    """
    rounds = []
    for key in sorted(state.get("rounds", {}), key=int):
        rs = state["rounds"][key]
        entry = {
            "round": int(key),
            "threshold": rs.get("threshold"),
            "statistics": rs.get("statistics"),
            "audit": rs.get("audit"),
            **_arm_entry(rs),
        }
        ctl = rs.get("control")
        entry["control"] = _arm_entry(ctl) if ctl else None
        entry["gain"] = {}
        if ctl and ctl.get("stage") == "done" and rs.get("stage") == "done":
            entry["gain"] = _gain(entry["figures"], entry["control"]["figures"])
        entry["gain_interval"] = rs.get("gain_interval") or {}
        rounds.append(entry)
    done = [e for e in rounds if e["stage"] == "done" and e["figures"]]
    change = {}
    if len(done) >= 2 and done[0]["round"] == 0:
        first, last = done[0]["figures"], done[-1]["figures"]
        for mode, figs in last.items():
            a, b = first.get(mode, {}).get("cAcc"), figs.get("cAcc")
            if a is not None and b is not None:
                change[mode] = {"from_round": 0, "to_round": done[-1]["round"], "points": b - a}
    headline = _headline(done)
    return {
        "rounds": rounds,
        "gain_note": "gain = distilled - control of the same round (same iterations, schedule, "
        "seed and starting weights); change_over_round0 is not a gain (more iterations).",
        "change_over_round0": change,
        "headline": headline,
        "curve": _curve(state, headline.get("mode") if headline else None),
    }


def _headline(done: list[dict]) -> dict:
    """round0_cacc, final_cacc, control_cacc, final_map50 (%, averaged), the threshold, and
    the final round's cAcc gain interval over its control (``final_gain_interval``: [low,
    high], the 95 % paired bootstrap over the evaluated images; None without one)."""
    if not done:
        return {}
    last = done[-1]
    mode = _mode_for(last)
    first = done[0] if done[0]["round"] == 0 else None
    ctl = last.get("control") or {}
    return {
        "mode": mode,
        "final_round": last["round"],
        "round0_cacc": (first or {}).get("figures", {}).get(mode, {}).get("cAcc"),
        "final_cacc": last["figures"].get(mode, {}).get("cAcc"),
        "control_cacc": ctl.get("figures", {}).get(mode, {}).get("cAcc")
        if ctl.get("stage") == "done"
        else None,
        "final_map50": last["figures"].get(mode, {}).get("mAP50"),
        "final_gain_interval": _bounds((last.get("gain_interval") or {}).get(mode)),
        "threshold": last["score_threshold"],
        "threshold_source": last["threshold_source"] or "TEST.RPC.SCORE_THRESHOLD (fixed)",
        "count_guided_default": bool(last.get("count_guided_default")),
    }


def _bracket(low: float, high: float) -> str:
    return f" [{low:+.2f}, {high:+.2f}]"


def _interval_text(headline: dict) -> str:
    bounds = headline.get("final_gain_interval")
    return f"; gain 95 % interval{_bracket(*bounds)}" if bounds else ""


def _bounds(interval: dict | None) -> list[float] | None:
    return None if not interval else [interval["low"], interval["high"]]


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _comparison_table(summary: dict) -> list[str]:
    header = ["round", "mode", "arm", "score thr.", *FIGURE_COLUMNS]
    lines = [_row(header), "|" + "---|" * len(header)]
    modes = sorted({m for e in summary["rounds"] for m in e["figures"]})
    for e in summary["rounds"]:
        for mode in modes:
            arms = [("distilled" if e["round"] else "round 0", e)]
            if e.get("control"):
                arms.append(("control", e["control"]))
            for name, a in arms:
                figs = a["figures"].get(mode)
                if figs is None:
                    continue
                cells = [str(e["round"]), mode, name, _fmt(a["score_threshold"])]
                lines.append(_row(cells + [_fmt(figs.get(k)) for k in FIGURE_COLUMNS]))
            gain = e["gain"].get(mode)
            if gain:
                cells = [str(e["round"]), mode, "**gain**", ""]
                figs = [_signed(gain.get(k)) for k in FIGURE_COLUMNS]
                interval = e.get("gain_interval", {}).get(mode)
                if interval:
                    figs[FIGURE_COLUMNS.index("cAcc")] += _bracket(
                        interval["low"], interval["high"]
                    )
                lines.append(_row(cells + figs))
    return lines


def _signed(v) -> str:
    return "-" if v is None else f"{v:+.2f}"


def _markdown(summary: dict) -> str:
    lines = ["# Distillation report", ""]
    h = summary.get("headline") or {}
    if h:
        lines += [
            f"Headline ({h['mode']}, round {h['final_round']}, score threshold "
            f"{_fmt(h['threshold'])} from {h['threshold_source']}): averaged cAcc "
            f"{_fmt(h['final_cacc'])} % (round 0: {_fmt(h['round0_cacc'])} %, same-budget "
            f"control: {_fmt(h['control_cacc'])} %{_interval_text(h)}), mAP50 "
            f"{_fmt(h['final_map50'])}.",
            "",
        ]
    lines += [
        "Figures on the held-out evaluation split after each round: cAcc (%) averaged and per "
        "level, mAP50 (%), ACD (items per image) and the counting view's count error (count_MAE, "
        "items per image). Round 0 trains on synthesized data only. The control of round r "
        "starts from round r-1's control (round 0 for r = 1) and trains the same iterations, "
        "schedule and seed on synthesized data only; **gain** = distilled - control of the same "
        "round; beside the cAcc gain, its 95 % interval from a paired bootstrap over the "
        "evaluated images (both arms saw the same images: an interval that holds 0 is a gain "
        "these images cannot tell from none). Modes: count-guided inference off / on (on: its "
        "own selection, on_fixed: selection then the score threshold).",
        "",
        *_comparison_table(summary),
    ]
    for mode, g in summary["change_over_round0"].items():
        lines.append(
            f"\nChange of averaged cAcc ({mode}), round {g['to_round']} against round 0: "
            f"{g['points']:+.2f} points (more training iterations too: not a gain of the method)."
        )
    lines += ["", "## Pseudo-labels per round", ""]
    header = [
        "round",
        "image-level imgs",
        "instance-level imgs",
        "rejected",
        "boxes",
        "painted / ignored boxes",
        "class-set boxes",
        "precision",
        "recall (selected)",
        "pool recall",
        "image-level exact",
        "area painted / ignored",
        "class set holds truth",
    ]
    lines += [_row(header), "|" + "---|" * len(header)]
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
            f"{s.get('painted_boxes', 0)} / {s.get('ignored_boxes', 0)}",
            str(s.get("class_set_boxes", 0)),
        ]
        if a:
            row += [
                _fmt(a["all"]["precision"], 3),
                _fmt(a["all"]["recall"], 3),
                _fmt(a["pool_recall"], 3),
                _fmt(a["image_level_exact"], 3),
                f"{_fmt(a.get('area_painted_fraction'), 3)} / "
                f"{_fmt(a.get('area_ignored_fraction'), 3)}",
                _fmt(a.get("class_set_precision"), 3),
            ]
        else:
            row += ["-"] * 6
        lines.append(_row(row))
    lines += [
        "",
        "The audit compares the pseudo-labels with the pool's hidden ground truth after "
        "selection; it never feeds selection. Precision: pseudo boxes matching a ground-truth "
        "box of the same category (IoU >= 0.5); recall (selected): over the objects of the "
        "selected images; image-level exact: the accuracy of image-level acceptance (accepted "
        "images whose per-category counts are exactly right); area: share of the pool's image "
        "area painted over or left as ignore regions; class-set boxes (DISTILL.CLASS_SET_RATIO): "
        "boxes labelled with a set of products, and the share of them whose object's product is "
        "in the set.",
    ]
    curve = summary.get("curve") or {}
    if any(len(v) > 2 for v in curve.values()):
        lines += ["", "## Learning curve", "", _row(["iteration", "arm", "round", "cAcc", "mAP50"])]
        lines.append("|---|---|---|---|---|")
        for name, pts in curve.items():
            for p in pts:
                cells = [str(p["iteration"]), name, str(p["round"])]
                lines.append(_row(cells + [_fmt(p["cAcc"]), _fmt(p["mAP50"])]))
        lines += ["", "![learning curve](distill_curve.png)"]
    return "\n".join(lines) + "\n"


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
        from dpsnet.distill.plots import plot_curve, plot_rounds

        plot_rounds(summary, output_dir / "distill_report.png")
        if any(len(v) > 2 for v in summary["curve"].values()):
            plot_curve(summary, output_dir / "distill_curve.png")
    return summary
