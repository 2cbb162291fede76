"""rpctool 0.1.6 as a test oracle: its own search loop and numeric core, its printed format.

rpctool's ``evaluateByJson`` runs its threshold search and then fails while formatting the row
with pandas >= 2 (it writes a string into a float Series). We run it unchanged, keep the
per-threshold tables its search produced (by wrapping the ``map2`` it calls), and take the row
exactly as it does (first best cAcc of the last round). Its mAP comes from its own ``evalMap``.
"""

import contextlib
import copy
import io

import pandas as pd
from rpctool.evaluate_v1 import evaluateByBbox as tool  # noqa: E402  (test-only dependency)
from rpctool.evaluate_v1.evaluate import evaluate as tool_count_core  # noqa: F401,E402
from rpctool.evaluate_v1.evaluateMap import evalMap  # noqa: E402


def tool_search(results: list, gt: dict, copy_results: bool = True) -> dict:
    """rpctool's searched-threshold row for ``gt`` (raw floats): thre, cAcc, ACD, mCCD, mCIoU.

    Its count path does not modify ``results``; ``copy_results=False`` (benchmarks) skips the
    defensive copy so that only the tool's own work is timed.
    """
    tables = []
    real_map2 = tool.map2

    def spy(f, xs):
        out = real_map2(f, xs)
        tables.append(out)
        return out

    tool.map2, tool.getMmap = spy, False
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            tool.evaluateByJson(copy.deepcopy(results) if copy_results else results, gt)
    except TypeError as e:  # pandas >= 2 refuses its string formatting, after the search
        assert "Invalid value" in str(e), e
    finally:
        tool.map2 = real_map2
    df = pd.DataFrame(tables[-1])
    row = df.loc[df.cAcc.argmax()]
    return {k: float(row[k]) for k in ("thre", "cAcc", "ACD", "mCCD", "mCIoU")}


def level_gt(gt: dict, level: str, deep: bool = True) -> dict:
    """The annotation dict restricted to one level, as rpctool's ``evaluateByJsp`` builds it."""
    if level == "averaged":
        return gt
    coco = copy.deepcopy(gt) if deep else dict(gt)
    coco["images"] = [d for d in coco["images"] if d["level"] == level]
    ids = {d["id"] for d in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids]
    return coco


def tool_map(results: list, gt: dict, copy_inputs: bool = True) -> dict:
    """rpctool's mAP50 and mmAP (fractions) through its own pycocotools wrapper.

    Its ``loadRes`` adds keys to the result dicts; ``copy_inputs=False`` (benchmarks, inputs
    copied beforehand) skips the copies so that only the tool's own work is timed.
    """
    if copy_inputs:
        results, gt = copy.deepcopy(results), copy.deepcopy(gt)
    ids = {i["id"] for i in gt["images"]}
    res = [d for d in results if d["image_id"] in ids]  # as evaluateByJson filters them
    with contextlib.redirect_stdout(io.StringIO()):
        out = evalMap(gt, res)
    return {k: float(v) for k, v in out.items()}


def printed(key: str, fraction: float) -> str:
    """A figure as rpctool prints it (4-decimal rounding, then percent or 2 decimals)."""
    if key in ("cAcc", "mCIoU"):
        return f"{round(round(fraction, 4) * 100, 2)}%"
    if key in ("mAP50", "mmAP"):
        return f"{round(fraction * 100, 2)}%"
    if key == "thre":
        return str(round(fraction, 2))
    return str(round(round(fraction, 4), 2))
