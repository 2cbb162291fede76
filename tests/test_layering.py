"""dpsnet's packages import one way only: no module imports from a layer above its own.

The layers, lowest first (a package may import from its own layer's package and any lower one,
never from a peer of its layer or from above):

    0  utils                       file I/O, checkpoint fields: no other dpsnet import
    1  compat, config              detectron2 shims, dpsnet's config keys
    2  data                        datasets, mapper, density targets, catalogue, dataset views
    3  modeling, evaluation        the models (built from a config) and the RPC metrics
    4  engine                      config loading, the Trainer, multi-process launch
    5  synthesis, recognition,     the applications built on the engine: scene synthesis, the
       distill, checkout           open-set recogniser, distillation rounds, the checkout
    6  dpsnet (the package root)   imports what registers

``tools/``, ``demo/`` and ``benchmarks/`` sit above all of them. Every import counts: at module
level, inside a function (a lazy import is still a dependency) and under ``TYPE_CHECKING``. The
module graph must also have no cycle (two modules importing each other, directly or not).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dpsnet"

LAYERS = (
    ("dpsnet.utils",),
    ("dpsnet.compat", "dpsnet.config"),
    ("dpsnet.data",),
    ("dpsnet.modeling", "dpsnet.evaluation"),
    ("dpsnet.engine",),
    ("dpsnet.synthesis", "dpsnet.recognition", "dpsnet.distill", "dpsnet.checkout"),
    ("dpsnet",),
)

# Known back-edges, each to be removed by the owner of its file: (importer, imported) modules.
ALLOWED: frozenset[tuple[str, str]] = frozenset()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a dpsnet module (``from a import f`` -> ``a``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import sub`` imports the submodule when there is one.
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "dpsnet" or name.startswith("dpsnet."):
                target = _resolve(name, modules)
                if target and target != module:
                    found.add(target)
                    found.update(_packages_run_by(module, target))
    return found


def _packages_run_by(importer: str, target: str) -> set[str]:
    """The packages whose ``__init__`` runs when ``importer`` imports ``target`` from outside
    them (``dpsnet.a.b.c`` runs ``dpsnet.a`` and ``dpsnet.a.b``; the root is left out: every
    import runs it, and it only gathers what registers)."""
    parts = target.split(".")
    packages = {".".join(parts[:i]) for i in range(2, len(parts))}
    return {p for p in packages if importer != p and not importer.startswith(p + ".")}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _layer(module: str) -> tuple[int, str]:
    """(layer index, package) of a module: its longest matching package in ``LAYERS``."""
    best = None
    for index, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                if best is None or len(package) > len(best[1]):
                    best = (index, package)
    assert best is not None, f"{module} is in no layer: add its package to LAYERS"
    return best


def test_every_package_has_a_layer():
    for module in _modules():
        _layer(module)


def test_no_module_imports_from_a_peer_or_a_layer_above():
    wrong = []
    for importer, targets in _graph().items():
        layer, package = _layer(importer)
        for target in sorted(targets):
            t_layer, t_package = _layer(target)
            if t_package == package or (importer, target) in ALLOWED:
                continue
            if t_layer > layer or (t_layer == layer and package != "dpsnet"):
                wrong.append(f"{importer} (layer {layer}) imports {target} (layer {t_layer})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_cycle():
    graph = _graph()
    cycles, state, stack = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if (module, target) in ALLOWED:
                continue
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from dpsnet.data import datasets", {"dpsnet.data.datasets", "dpsnet.data"}),
        ("from dpsnet.engine import load_config", {"dpsnet.engine"}),
        ("def f():\n    import dpsnet.engine.setup", {"dpsnet.engine.setup", "dpsnet.engine"}),
        ("from ..utils.io import load_json", {"dpsnet.utils.io", "dpsnet.utils"}),
        ("from . import receipt", {"dpsnet.checkout.receipt"}),
    ],
)
def test_the_walker_sees_every_kind_of_import(tmp_path, source, expected):
    modules = _modules()
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert _imports("dpsnet.checkout.probe", path, modules) == expected
