"""The Markdown tables of an RPC evaluation report (``rpc_metrics.md``, what
``tools/evaluate_rpc.py`` prints): both threshold protocols, the counting view and the error
analysis, from the report dict of ``rpc_report.evaluate_rpc``."""

from dpsnet.evaluation.rpc_metrics import CHECKOUT_KEYS

__all__ = ["markdown_report"]


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown_report(report: dict, title: str = "RPC evaluation") -> str:
    """The report as Markdown tables (what ``rpc_metrics.md`` holds and the tool prints)."""
    levels = report["levels"]
    parts = [f"## {title}", ""]
    cols = ["cAcc (%)", "ACD", "mCCD", "mCIoU (%)"]
    has_map = any("map" in s for s in levels.values())
    if report.get("score_threshold") is not None:
        parts.append(
            f"Fixed score threshold {report['score_threshold']:g} (the deployable figure)."
        )
        header = ["level", "images", *cols] + (["mAP50 (%)", "mmAP (%)"] if has_map else [])
        rows = []
        for level, s in levels.items():
            f, m = s.get("fixed", {}), s.get("map", {})
            row = [level, str(s["num_images"])] + [_fmt(f.get(k)) for k in CHECKOUT_KEYS]
            rows.append(row + ([_fmt(m.get("mAP50")), _fmt(m.get("mmAP"))] if has_map else []))
        parts += ["", _table(header, rows), ""]
    if any("search" in s for s in levels.values()):
        parts.append(
            "rpctool protocol: score threshold searched on this very set to maximise cAcc "
            "(optimistic; for comparison with published tables)."
        )
        header = ["level", "threshold", *cols] + (
            ["mAP50 (%)", "mmAP (%)"] if has_map and report.get("score_threshold") is None else []
        )
        rows = []
        for level, s in levels.items():
            f = s.get("search", {})
            row = [level, _fmt(f.get("threshold"), 4)] + [_fmt(f.get(k)) for k in CHECKOUT_KEYS]
            if len(header) > 6:
                row += [_fmt(s.get("map", {}).get("mAP50")), _fmt(s.get("map", {}).get("mmAP"))]
            rows.append(row)
        parts += ["", _table(header, rows), ""]
    count_levels = {lv: s["count"] for lv, s in levels.items() if "count" in s}
    if count_levels:
        keys = sorted({k for c in count_levels.values() for k in c if k != "num_images"})
        parts.append(f"Counting view ({report.get('count_kind')} channels), count-only metrics.")
        rows = [[lv, *[_fmt(c.get(k)) for k in keys]] for lv, c in count_levels.items()]
        parts += ["", _table(["level", *keys], rows), ""]
    cats = report.get("categories", {})
    if cats.get("most_miscounted"):
        parts.append(f"Most miscounted categories (threshold {_fmt(cats['threshold'], 4)}).")
        header = ["category", "supercategory", "true", "counted", "over", "under", "images wrong",
                  "CCD"]  # fmt: skip
        rows = [
            [
                r["category"],
                r["supercategory"],
                str(r["gt"]),
                str(r["pred"]),
                str(r["over"]),
                str(r["under"]),
                str(r["images_wrong"]),
                _fmt(r["CCD"], 3),
            ]  # fmt: skip
            for r in cats["most_miscounted"]
        ]
        parts += ["", _table(header, rows), ""]
    if cats.get("most_confused"):
        parts.append("Most confused categories (boxes matched ignoring the category, IoU >= 0.5).")
        rows = [
            [r["true"], r["predicted"], str(r["boxes"]), _fmt(100 * r["share"], 1)]
            for r in cats["most_confused"]
        ]
        parts += ["", _table(["true", "detected as", "boxes", "share (%)"], rows), ""]
    return "\n".join(parts)
