"""Dotted paths in nested dicts (dotted.py): the one reading of `a.b.c` that flags, `--set`, a
space's parameters, MLflow's params and warm start share."""

from __future__ import annotations

import pytest

from asha_tune.dotted import flatten, get_path, nested, set_path
from asha_tune.errors import ConfigError


def test_flatten_and_nested_undo_each_other():
    tree = {"train": {"lr": 0.01, "epochs": 3}, "data": {"targets": ["cartoon"]}, "seed": None}
    flat = flatten(tree)
    assert flat == {"train.lr": 0.01, "train.epochs": 3, "data.targets": ["cartoon"], "seed": None}
    assert nested(flat) == tree
    assert flatten({"a": {}, "b": {"c": {}}}) == {"a": {}, "b.c": {}}  # an empty section is a value


def test_a_key_with_dots_is_reached_by_the_longest_key_there():
    space = {"parameters": {"shaping.p0": {"low": 0.1, "high": 0.9}}}
    set_path(space, "parameters.shaping.p0.high", 0.5)
    assert space == {"parameters": {"shaping.p0": {"low": 0.1, "high": 0.5}}}
    assert get_path(space, "parameters.shaping.p0.low") == (True, 0.1)
    assert get_path({"shaping.p0": 0.3}, "shaping.p0") == (True, 0.3)


def test_get_path_says_when_the_tree_has_no_such_path():
    tree = {"train": {"lr": 0.01}}
    assert get_path(tree, "train.epochs") == (False, None)
    assert get_path(tree, "train.lr.value") == (False, None)  # below a value
    assert get_path(tree, "train") == (True, {"lr": 0.01})
    assert get_path({"x": None}, "x") == (True, None)  # a None value is there


def test_set_path_makes_missing_sections_but_never_overwrites_a_value_with_one():
    tree: dict = {}
    set_path(tree, "data.targets", ["sketch"])
    assert tree == {"data": {"targets": ["sketch"]}}
    with pytest.raises(ConfigError, match="train.lr.value: lr is not a section"):
        set_path({"train": {"lr": 0.01}}, "train.lr.value", 1)
