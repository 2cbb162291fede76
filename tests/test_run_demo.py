"""run_demo.py stage runner: finished stages are skipped; a changed one reruns with the rest."""

import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_demo():
    return runpy.run_path(str(ROOT / "tools" / "run_demo.py"), run_name="run_demo_under_test")


def _touch_cmd(path: Path, text: str) -> list[str]:
    return [sys.executable, "-c", f"open({str(path)!r}, 'a').write({text!r})"]


def test_finished_stages_are_skipped_and_changes_propagate(run_demo, tmp_path, capsys):
    runner_cls = run_demo["StageRunner"]
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"

    def run_all(arg_a: str):
        runner = runner_cls(tmp_path, env=None, rerun_from=None)
        runner.run(0, "world", _touch_cmd(a, arg_a), [a])
        runner.run(1, "masks", _touch_cmd(b, "b"), [b])

    run_all("a")
    assert a.read_text() == "a" and b.read_text() == "b"
    run_all("a")  # same commands, outputs present: nothing runs
    assert a.read_text() == "a" and b.read_text() == "b"
    assert "skipped" in capsys.readouterr().out
    run_all("A")  # first stage changed: it reruns, and so does the stage after it
    assert a.read_text() == "aA" and b.read_text() == "bb"
    b.unlink()  # a missing output reruns its stage
    run_all("A")
    assert a.read_text() == "aA" and b.read_text() == "b"


def test_from_stage_reruns_that_stage(run_demo, tmp_path):
    a = tmp_path / "a.txt"
    runner_cls = run_demo["StageRunner"]
    runner_cls(tmp_path, env=None, rerun_from=None).run(0, "world", _touch_cmd(a, "x"), [a])
    runner_cls(tmp_path, env=None, rerun_from="world").run(0, "world", _touch_cmd(a, "x"), [a])
    assert a.read_text() == "xx"


def test_a_failing_stage_stops_with_its_status(run_demo, tmp_path, capsys):
    runner = run_demo["StageRunner"](tmp_path, env=None, rerun_from=None)
    with pytest.raises(SystemExit) as exit_info:
        runner.run(2, "synthesize", [sys.executable, "-c", "raise SystemExit(3)"], [])
    assert exit_info.value.code == 3
    assert "[3/6] synthesize: failed (exit status 3)" in capsys.readouterr().out
