"""benchmarks/bench_unseen_world.py: per-round rows from a distillation report, the control check,
and bad options (the chain itself is what `make demo` and the pipeline tests run)."""

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_unseen_world")


def _figures(cacc, map50=90.0):
    return {"count_guided_off": {"cAcc": cacc, "mAP50": map50, "mmAP": 60.0, "ACD": 1.0}}


REPORT = {
    "rounds": [
        {"round": 0, "score_threshold": 0.6, "figures": _figures(40.0)},
        {
            "round": 1,
            "score_threshold": 0.7,
            "figures": _figures(45.0),
            "control": {"figures": _figures(42.0, 91.0)},
        },
        {
            "round": 2,
            "score_threshold": 0.7,
            "figures": _figures(41.0),
            "control": {"figures": _figures(44.0)},
        },
    ]
}


def test_rows_carry_the_control_and_the_gain(bench):
    rows = bench.round_rows(REPORT)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert "gain_cAcc" not in rows[0]
    assert rows[1]["gain_cAcc"] == pytest.approx(3.0)
    assert rows[1]["control_mAP50"] == 91.0
    assert rows[2]["gain_cAcc"] == pytest.approx(-3.0)


def test_check_flags_rounds_below_their_control(bench):
    worlds = [{"world_seed": 11, "rounds": bench.round_rows(REPORT)}]
    assert bench.check(worlds, 2.0) == ["world 11 round 2: -3.0"]
    assert bench.check(worlds, 3.5) == []


@pytest.mark.parametrize(
    "argv", [["--num-products", "0"], ["--num-products", "3", "--lookalike-pairs", "2"]]
)
def test_bad_options_exit_2(bench, argv, tmp_path, capsys):
    assert bench.main([*argv, "--output-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error:")
