"""The shape of the house (../shared/STYLE.md "The layers"), read from the imports.

dags/ on top; pipelines/ and training/ in the middle (pipelines never import training);
foundation/, model/ and storage_schemas/ at the bottom. No import cycle between modules, and
no source file over 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("foundation", "storage_schemas", "model", "pipelines", "training", "dags")
# package -> packages it may import
ALLOWED = {
    "storage_schemas": set(),
    "foundation": {"storage_schemas"},
    "model": set(),
    "pipelines": {"foundation", "storage_schemas", "model"},
    "training": {"foundation", "storage_schemas", "model", "pipelines"},
    "dags": {"foundation", "storage_schemas", "model", "pipelines", "training"},
}
MAX_LINES = 500


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """Absolute names of the project modules this file imports (anywhere in the file)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)  # `from pkg import x` runs pkg/__init__.py whatever x is
            out |= {f"{mod}.{a.name}" for a in node.names if _is_module(f"{mod}.{a.name}")}
    return {m for m in out if m.split(".")[0] in PACKAGES}


def test_imports_point_down_only():
    bad = []
    for path in _sources():
        pkg = path.relative_to(ROOT).parts[0]
        for mod in sorted(_imports(path)):
            top = mod.split(".")[0]
            if top != pkg and top not in ALLOWED[pkg]:
                bad.append(f"{path.relative_to(ROOT)} imports {mod} ({pkg} may import {sorted(ALLOWED[pkg])})")
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_modules():
    modules = {_module_name(p): p for p in _sources()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for mod in _imports(path):
            while mod and mod not in modules:  # `from pkg.mod import name` -> pkg.mod
                mod = mod.rpartition(".")[0]
            if mod and mod != name:
                deps.add(mod)
        graph[name] = deps
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_source_file_over_500_lines(pkg):
    long = [f"{p.relative_to(ROOT)}: {n}" for p in sorted((ROOT / pkg).rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, f"files over {MAX_LINES} lines: {long}"
