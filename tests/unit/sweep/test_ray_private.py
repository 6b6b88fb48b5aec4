"""Every private Ray call lives in sweep/ray_compat.py (behind its pinned test): no other module
imports Ray's private modules, reaches into a private attribute of a Ray object, or names one of
Ray's internal loggers or endpoints."""

from __future__ import annotations

import ast
import re

from tests.helpers.data import REPO

PRIVATE_MODULE = re.compile(r"^ray(\.\w+)*\.(_\w+)")  # ray._private, ray._raylet, ray.train._internal
PRIVATE_TEXT = ("ray.train._internal", "ray.tune.execution", "/nodes?view=", "._brackets", "._rungs")


def private_uses(path) -> list[str]:
    text = path.read_text()
    found = [f"names {t!r}" for t in PRIVATE_TEXT if t in text]
    for node in ast.walk(ast.parse(text)):
        modules = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found += [f"imports {m}" for m in modules if PRIVATE_MODULE.match(m)]
    return found


def test_no_module_but_ray_compat_uses_rays_private_api():
    offenders = {
        str(path.relative_to(REPO)): uses
        for path in (REPO / "asha_tune").rglob("*.py")
        if path.name != "ray_compat.py" and (uses := private_uses(path))
    }
    assert not offenders, offenders


def test_the_scan_sees_a_private_import():
    assert private_uses(REPO / "asha_tune" / "sweep" / "ray_compat.py")  # it does find them there
