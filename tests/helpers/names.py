"""Names the docs and the package's prose point at, read without importing: the checkout's
modules and what they define (`asha_tune.api.launch`), and the MLflow tags tracking/tags.py
defines (`asha_tune.status`). Shared by tests/unit/test_docs.py and test_module_names.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from asha_tune.tracking import tags

REPO = Path(__file__).resolve().parents[2]
DOTTED = re.compile(r"asha_tune(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def defined_tags() -> set[str]:
    return {value for name, value in vars(tags).items() if name.endswith("_TAG") and isinstance(value, str)}


def module_names(path: Path) -> set[str]:
    """The top-level names a module defines or imports, read without importing it."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def resolves(dotted: str) -> bool:
    """`asha_tune.a.b[.name]` is a module or package of the checkout, or a name defined in one."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:n])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            rest = parts[n:]
            return not rest or (len(rest) == 1 and rest[0] in module_names(module))
    return False
