"""Dotted paths in nested dicts: `train.lr` names tree["train"]["lr"]. A configuration is a tree,
while the CLI's flags, `--set`, a space's parameters and MLflow's params name its settings flat.

A key may itself hold dots (the parameter `shaping.p0` in a space's `parameters`): at each level
the longest key that is there is taken, so `parameters.shaping.p0.high` reaches that parameter.
"""

from __future__ import annotations

from typing import Any

from asha_tune.errors import ConfigError


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (MLflow params are flat); an empty dict is a value."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}: the tree that `set_path` builds from dotted paths."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        set_path(tree, path, value)
    return tree


def get_path(tree: dict[str, Any], path: str) -> tuple[bool, Any]:
    """(True, the value at `path`), or (False, None) where the tree has no such path."""
    node: Any = tree
    parts = path.split(".")
    while parts:
        if not isinstance(node, dict):
            return False, None
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if key in node:
                node, parts = node[key], parts[n:]
                break
        else:
            return False, None
    return True, node


def set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, making the sections it lacks."""
    parts = path.split(".")
    node = tree
    while len(parts) > 1:
        for n in range(len(parts) - 1, 0, -1):
            key = ".".join(parts[:n])
            if isinstance(node.get(key), dict):
                node, parts = node[key], parts[n:]
                break
        else:
            node = node.setdefault(parts[0], {})
            if not isinstance(node, dict):
                raise ConfigError(f"{path}: {parts[0]} is not a section")
            parts = parts[1:]
    node[parts[0]] = value
