"""No function of the package is over 60 lines: one that grows past it is split into named helpers
that read at a glance (ruff's C901 and PLR0915, in pyproject.toml, keep their branches and
statements few; this keeps their length). Read without importing: each file is parsed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "asha_tune"
MAX_LINES = 60


def long_functions(source: str) -> list[tuple[str, int]]:
    """(name, lines) of each function or method over MAX_LINES, from its `def` to its last line."""
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_over_60_lines(path):
    assert not long_functions(path.read_text()), (
        f"split into named helpers: {long_functions(path.read_text())}"
    )


def test_a_long_function_or_method_is_found_and_a_short_one_is_not():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    source = f"def short():\n    pass\n\n\ndef long():\n{body}\n\nclass C:\n    def method(self):\n{body.replace('    ', '        ')}"
    assert long_functions(source) == [("long", MAX_LINES + 1), ("method", MAX_LINES + 1)]
