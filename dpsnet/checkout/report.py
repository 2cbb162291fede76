"""``report.html`` of a checkout run: thumbnails with their receipts, a summary, skipped files,
and optionally an evaluator's metrics JSON, rendered verbatim.

The page is one static file that needs no server: styles inline, no script, and every link
relative to the output folder (thumbnails, annotated images, receipt JSONs, ``receipts.csv``,
a copy of the metrics JSON), so the folder can be moved or zipped as a whole.
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from dpsnet.utils.io import atomic_path, atomic_write_text, load_json

if TYPE_CHECKING:
    from dpsnet.checkout.run import CheckoutRun

__all__ = ["metrics_html", "render_report", "write_report"]

logger = logging.getLogger(__name__)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; } th { background: #eee; }
.warn { background: #fff3cd; border: 1px solid #e0c060; padding: 0.5em 1em; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 0.6em;
        width: 340px; }
.card img { max-width: 100%; display: block; } .card h3 { font-size: 0.95em; margin: 0.3em 0;
        word-break: break-all; }
.total td { font-weight: bold; } .muted { color: #777; font-size: 0.85em; }
"""

_RPC_SECTIONS = {
    "fixed": "Fixed score threshold {score_threshold} (the deployable figure)",
    "search": "rpctool protocol: threshold searched on the evaluated set (optimistic)",
    "map": "Box mAP (pycocotools)",
    "count": "Counting view ({count_kind} channels), count-only metrics",
}


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _href(path: str) -> str:
    """A relative URL for a path inside the output folder (spaces, '#', '?' escaped)."""
    return _e(quote(Path(path).as_posix()))


def _verbatim(value) -> str:
    """A figure exactly as the JSON holds it (no rounding: the report must match the file)."""
    return value if isinstance(value, str) else json.dumps(value)


def _cell(value, key: str | None = None) -> str:
    num = isinstance(value, (int, float)) and not isinstance(value, bool)
    attrs = (' class="n"' if num else "") + (f' data-key="{_e(key)}"' if key else "")
    return f"<td{attrs}>{_e(_verbatim(value))}</td>"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _generic(obj, depth: int = 0) -> str:
    """Any JSON value as nested tables: scalars in key/value rows, lists of records as tables."""
    if _is_scalar(obj):
        return _e(_verbatim(obj))
    if isinstance(obj, list):
        if not obj:
            return '<p class="muted">(none)</p>'
        if obj and all(isinstance(r, Mapping) and all(map(_is_scalar, r.values())) for r in obj):
            cols = list(dict.fromkeys(k for r in obj for k in r))
            return _table(cols, [[_cell(r.get(c, "")) for c in cols] for r in obj])
        if all(map(_is_scalar, obj)):
            return _e(", ".join(_verbatim(v) for v in obj))
        return "".join(f"<div>{_generic(v, depth + 1)}</div>" for v in obj)
    scalars = [[f"<th>{_e(k)}</th>", _cell(v, k)] for k, v in obj.items() if _is_scalar(v)]
    parts = [_table([], scalars)] if scalars else []
    for key, value in obj.items():
        if not _is_scalar(value):
            level = min(depth + 3, 6)
            parts.append(f"<h{level}>{_e(key)}</h{level}>{_generic(value, depth + 1)}")
    return "".join(parts)


def metrics_html(metrics: Mapping) -> str:
    """A metrics JSON as HTML, figures verbatim.

    An RPC evaluator report (``rpc_metrics.json``: ``levels`` -> ``fixed`` / ``search`` /
    ``map`` / ``count`` sections) gets one table per section with a row per level; its flat
    ``metrics`` dict follows (each cell's ``data-key`` is the flat name). Any other JSON is shown
    as nested tables.
    """
    if not isinstance(metrics, Mapping) or not isinstance(metrics.get("levels"), Mapping):
        return _generic(metrics)
    levels = metrics["levels"]
    parts = []
    top = [[f"<th>{_e(k)}</th>", _cell(v, k)] for k, v in metrics.items() if _is_scalar(v)]
    parts.append(_table([], top))
    for name, title in _RPC_SECTIONS.items():
        rows = {lv: s[name] for lv, s in levels.items() if isinstance(s.get(name), Mapping)}
        if not rows:
            continue
        cols = list(dict.fromkeys(k for r in rows.values() for k in r if k != "num_images"))
        table_rows = [
            [f"<th>{_e(lv)}</th>", _cell(levels[lv].get("num_images", ""))]
            + [_cell(r.get(c, "")) for c in cols]
            for lv, r in rows.items()
        ]
        fields = {k: metrics.get(k) for k in ("score_threshold", "count_kind")}
        parts.append(f"<h3>{_e(title.format(**fields))}</h3>")
        parts.append(_table(["level", "images", *cols], table_rows))
    rest = {
        k: v for k, v in metrics.items() if not _is_scalar(v) and k not in ("levels", "metrics")
    }
    if rest:
        parts.append(_generic(rest, depth=1))
    if isinstance(metrics.get("metrics"), Mapping):
        flat = [[f"<th>{_e(k)}</th>", _cell(v, k)] for k, v in metrics["metrics"].items()]
        parts.append(f"<details><summary>All figures (flat)</summary>{_table([], flat)}</details>")
    return "".join(parts)


def _receipt_card(r: dict) -> str:
    levels = r["view_levels"] or []
    viewed = "category" in levels
    header = ["id", "product", "count"] + (["view"] if viewed else [])
    rows = [
        [_cell(i["product_id"]), f"<td>{_e(i['name'])}</td>", _cell(i["count"])]
        + ([_cell(i["view_count"] if i["view_count"] is not None else "")] if viewed else [])
        for i in r["items"]
    ]
    total = ["<td></td>", "<td>total</td>", _cell(r["total"])]
    if viewed:
        total.append(_cell(r["view_total"]))
    items = _table(header, rows).replace("</table>", f'<tr class="total">{"".join(total)}</tr>'
                                         "</table>")  # fmt: skip
    extra = ""
    if levels and not viewed:
        extra = f'<p class="muted">counting view total: {_e(_verbatim(r["view_total"]))}</p>'
    if r.get("view_supercategories"):
        extra += _table(
            ["supercategory", "detected", "view"],
            [
                [f"<td>{_e(s['name'])}</td>", _cell(s["count"]), _cell(s["view_count"])]
                for s in r["view_supercategories"]
            ],
        )
    return (
        f'<div class="card"><a href="{_href(r["annotated"])}"><img src="{_href(r["thumbnail"])}" '
        f'alt="{_e(r["image"])}"></a><h3>{_e(r["image"])}</h3>{items}{extra}'
        f'<a class="muted" href="{_href(r["receipt"])}">receipt JSON</a></div>'
    )


def render_report(
    run: CheckoutRun,
    settings: Mapping[str, str] | None = None,
    metrics: Mapping | None = None,
    metrics_link: str | None = None,
    warnings: list[str] | None = None,
    title: str = "dpsnet checkout report",
) -> str:
    """The HTML page of a checkout run (links relative to ``run.output_dir``)."""
    summary = run.summary()
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>',
        f'<meta name="viewport" content="width=device-width"><style>{_STYLE}</style></head><body>',
        f"<h1>{_e(title)}</h1>",
    ]
    parts += [f'<p class="warn">{_e(w)}</p>' for w in warnings or []]
    stats = {
        "images checked out": summary["images"],
        "files skipped": summary["skipped"],
        "items (detector)": summary["items"],
    }
    if summary["view_items"] is not None:
        stats["items (counting view)"] = summary["view_items"]
        stats["images where detector and rounded view agree"] = summary["view_agreement"]
    stats["seconds"] = summary["seconds"]
    parts.append('<section id="summary"><h2>Summary</h2><div class="row">')
    parts.append(_table([], [[f"<th>{_e(k)}</th>", _cell(v)] for k, v in stats.items()]))
    if settings:
        parts.append(_table([], [[f"<th>{_e(k)}</th>", _cell(v)] for k, v in settings.items()]))
    parts.append(
        f'</div><p><a href="{_href("receipts.csv")}">receipts.csv</a> · '
        f'<a href="{_href("summary.json")}">summary.json</a></p></section>'
    )
    if run.skipped:
        rows = [[f"<td>{_e(s['file'])}</td>", f"<td>{_e(s['reason'])}</td>"] for s in run.skipped]
        parts.append(f'<section id="skipped"><h2>Skipped files ({len(run.skipped)})</h2>')
        parts.append(_table(["file", "reason"], rows) + "</section>")
    parts.append(f'<section id="receipts"><h2>Receipts ({summary["images"]})</h2>')
    parts.append('<div class="grid">' + "".join(map(_receipt_card, run.receipts)) + "</div>")
    if summary["products"]:
        cols = ["product_id", "name", "supercategory", "count", "view_count"]
        rows = [[_cell("" if p[c] is None else p[c]) for c in cols] for p in summary["products"]]
        parts.append("<h3>Products over the folder</h3>" + _table(cols, rows))
    parts.append("</section>")
    if metrics is not None:
        source = "the metrics JSON"
        if metrics_link:
            source = f'<a href="{_href(metrics_link)}">{_e(Path(metrics_link).name)}</a>'
        parts.append(
            f'<section id="metrics"><h2>Metrics</h2><p class="muted">From {source}, '
            f"shown as the file holds them.</p>{metrics_html(metrics)}</section>"
        )
    parts.append("</section></body></html>\n")
    return "\n".join(parts)


def write_report(
    run: CheckoutRun,
    settings: Mapping[str, str] | None = None,
    metrics_json: str | os.PathLike | None = None,
    warnings: list[str] | None = None,
) -> Path:
    """Write ``report.html`` into ``run.output_dir`` (atomically) and return its path.

    ``metrics_json`` (e.g. the RPC evaluator's ``rpc_metrics.json``) is copied byte for byte to
    ``metrics/<its name>`` and rendered verbatim. Raises ``BadInputError`` if it is unreadable.
    """
    out = run.output_dir
    metrics, link = None, None
    if metrics_json is not None:
        metrics = load_json(metrics_json)
        link = f"metrics/{Path(metrics_json).name}"
        with atomic_path(out / link) as tmp:
            shutil.copyfile(metrics_json, tmp)
    path = out / "report.html"
    atomic_write_text(path, render_report(run, settings, metrics, link, warnings))
    logger.info("report written to %s", path)
    return path
