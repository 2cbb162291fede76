"""Every script: imports dpsnet before detectron2 (the shims must come first) and has --help."""

import ast
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    p
    for folder in ("tools", "demo", "datasets", "benchmarks")
    for p in (ROOT / folder).glob("*.py")
    if not p.name.startswith("_")
)


def _imported_modules(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_dpsnet_is_imported_before_detectron2(script):
    modules = list(_imported_modules(ast.parse(script.read_text())))
    d2 = [i for i, m in enumerate(modules) if m.split(".")[0] == "detectron2"]
    if not d2:
        return
    ours = [i for i, m in enumerate(modules) if m.split(".")[0] == "dpsnet"]
    assert ours and ours[0] < d2[0], f"{script.name}: import dpsnet before detectron2"


@pytest.mark.parametrize(
    "script",
    [p for p in SCRIPTS if p.parent.name in ("tools", "demo", "datasets")],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_help(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()
