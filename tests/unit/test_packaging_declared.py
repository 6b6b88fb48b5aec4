"""Every third-party package the code imports is declared in pyproject.toml (directly, not only
through another package that happens to bring it)."""

from __future__ import annotations

import ast
import sys
import tomllib

from tests.helpers.data import REPO

# Import name -> distribution name, where they differ.
DISTRIBUTION = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "flask_wtf": "mlflow",
    "psycopg": "psycopg",
    "pynvml": "nvidia-ml-py",
}


def imported_packages() -> set[str]:
    names = set()
    for path in (REPO / "asha_tune").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("asha_tune", "__future__")}


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [
        d for extra in project["optional-dependencies"].values() for d in extra
    ]
    return {spec.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for spec in specs}


def test_every_imported_package_is_declared():
    missing = {DISTRIBUTION.get(n, n).lower() for n in imported_packages()} - declared()
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
