"""Aggregation of distillation runs over seeds, and tools/distill_seeds.py --aggregate-only."""

import importlib.util
import json
from pathlib import Path

import pytest

from dpsnet.distill.seeds import aggregate_reports, seeds_markdown, spread

ROOT = Path(__file__).resolve().parents[2]


def _report(r0, distilled, control):
    """A distill_report.json with round 0 and round 1 (cAcc figures only)."""

    def arm(cacc):
        return {"stage": "done", "figures": {"count_guided_off": {"cAcc": cacc, "mAP50": 50.0}}}

    return {
        "rounds": [
            {"round": 0, **arm(r0), "control": None},
            {"round": 1, **arm(distilled), "control": arm(control)},
        ]
    }


def test_spread():
    s = spread([1.0, None, 3.0])
    assert (s["mean"], s["std"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 1.0, 3.0, 2)
    assert spread([])["mean"] is None


def test_gain_counts_only_above_its_spread():
    steady = {1: _report(10, 20, 15), 2: _report(12, 22, 16), 3: _report(11, 21, 16)}
    agg = aggregate_reports(steady)
    r1 = agg["rounds"][1]
    assert r1["distilled"]["cAcc"]["mean"] == pytest.approx(21.0)
    assert r1["control"]["cAcc"]["min"] == 15.0 and r1["control"]["cAcc"]["max"] == 16.0
    assert r1["gain"]["cAcc"]["mean"] == pytest.approx(16 / 3)
    assert r1["gain_exceeds_spread"] and r1["gain_positive_every_seed"]
    assert agg["rounds"][0]["gain"]["cAcc"]["n"] == 0
    noisy = {1: _report(10, 30, 10), 2: _report(10, 10, 20), 3: _report(10, 20, 19)}
    r1 = aggregate_reports(noisy)["rounds"][1]
    assert not r1["gain_exceeds_spread"] and not r1["gain_positive_every_seed"]


def test_gain_intervals_counted_per_round():
    reports = {s: _report(10, 20, 15) for s in (1, 2, 3)}
    bounds = {1: (1.0, 9.0), 2: (-4.0, 6.0), 3: (-9.0, -1.0)}
    for s, (low, high) in bounds.items():
        reports[s]["rounds"][1]["gain_interval"] = {
            "count_guided_off": {"difference": 5.0, "low": low, "high": high}
        }
    del reports[3]["rounds"][1]["gain_interval"]["count_guided_off"]
    reports[3]["rounds"][1]["gain_interval"]["default"] = {"low": -9.0, "high": -1.0}
    agg = aggregate_reports(reports)
    assert agg["rounds"][1]["gain_intervals"] == {"n": 3, "above_zero": 1, "below_zero": 1}
    assert agg["rounds"][0]["gain_intervals"]["n"] == 0
    assert "- round 1: 1 of 3 seeds above zero, 1 below" in seeds_markdown(agg)
    assert "paired interval" not in seeds_markdown(aggregate_reports({1: _report(1, 2, 1)}))


def test_tool_aggregate_only(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("seeds_tool", ROOT / "tools" / "distill_seeds.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = ["--aggregate-only", "--seeds", "1", "2", "--output", str(tmp_path)]
    assert tool.main(args) == 2  # nothing to aggregate
    assert capsys.readouterr().err.startswith("error: ")
    run = tmp_path / "seed_1"
    run.mkdir()
    (run / "distill_report.json").write_text(json.dumps(_report(10, 20, 15)))
    assert tool.main(args) == 1  # seed 2 has no report: aggregated, but reported as missing
    agg = json.loads((tmp_path / "seeds_report.json").read_text())
    assert agg["seeds"] == [1] and agg["rounds"][1]["gain"]["cAcc"]["mean"] == 5.0
    md = (tmp_path / "seeds_report.md").read_text()
    assert "| 1 | gain (within spread) | 5.00 ± 0.00 [5.00, 5.00]" in md
