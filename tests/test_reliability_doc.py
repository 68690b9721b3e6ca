"""docs/reliability.md names the test that holds each promise as ``path::test``: each must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"


def _tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_cited_test_exists():
    cited = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", DOC.read_text(encoding="utf-8"))
    assert len(cited) > 60
    missing = [f"{path}::{name}" for path, name in cited
               if not (ROOT / path).is_file() or name not in _tests(ROOT / path)]
    assert not missing, f"docs/reliability.md cites tests that do not exist: {missing}"


def test_every_rule_and_row_is_there():
    rules, matrix = DOC.read_text(encoding="utf-8").split("## The fault matrix")

    def numbers(text: str) -> list[int]:
        return [int(n) for n in re.findall(r"^\| (\d+) \|", text, flags=re.M)]

    assert numbers(rules) == list(range(1, 9)) and numbers(matrix) == list(range(1, 38))
