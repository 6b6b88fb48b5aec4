"""Finding, reading, overriding and validating space files; every problem is one line naming its
YAML path, and nothing starts until a space is valid."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from asha_tune.defaults import SPACES_ENV
from asha_tune.dotted import set_path
from asha_tune.errors import ConfigError
from asha_tune.spaces.params import PARAM_TYPES
from asha_tune.spaces.space import CONFIGURATION_KEY, SearchSpace, trial_paths
from asha_tune.trial.config import is_cross_field, validation_problems

# The shipped spaces: asha_tune/search_spaces in an installed wheel, search_spaces/ in a checkout.
_PACKAGE = Path(__file__).resolve().parents[1]
PACKAGE_SPACES = next(
    (p for p in (_PACKAGE / "search_spaces", _PACKAGE.parent / "search_spaces") if p.is_dir()),
    _PACKAGE / "search_spaces",
)


def space_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(SPACES_ENV, "").split(os.pathsep) if p]
    return [*extra, Path.cwd() / "search_spaces", PACKAGE_SPACES]


def list_spaces() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in space_dirs():
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


def find_space(name: str) -> Path:
    """`--space NAME` or `NAME.yaml` finds it on the search path; an existing file works too."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if os.sep in name:
        raise ConfigError(f"--space {name}: no such file")
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    spaces = list_spaces()
    if stem not in spaces:
        where = ", ".join(dict.fromkeys(str(d) for d in space_dirs()))
        raise ConfigError(
            f"--space {name}: no space of that name in {where} (available: {', '.join(spaces) or 'none'})"
        )
    return spaces[stem]


class _SpaceLoader(yaml.SafeLoader):
    """YAML as a space file may hold it: no aliases, no key given twice.

    An alias shares a node, so nine nested levels of nine aliases each (a "billion laughs") are
    387 million nodes for validation to walk; and a key given twice silently keeps the last value.
    Both are refused at the line where they happen.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                problem=f"alias *{event.anchor} (space files hold no aliases: write the value out)",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.MarkedYAMLError(
                    problem=f"key {key!r} is given twice (lines {seen[key]} and {line}): keep one",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """YAML text as a space file (or a `--set` value) may hold it (see _SpaceLoader)."""
    return yaml.load(text, Loader=_SpaceLoader)  # noqa: S506  (a SafeLoader)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        tree = load_yaml_text(path.read_text())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {err.problem}") from None
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a space file must be a mapping of sections (name, data, ...)")
    return tree


def settable_keys() -> list[str]:
    """What `--set` accepts (read off the schema), for the message that rejects an unknown key."""
    keys = []
    for name, field in SearchSpace.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            keys += [f"{name}.{sub}" for sub in model.model_fields]
        elif name not in ("shaping", "parameters"):
            keys.append(name)
    keys += sorted(p for p in trial_paths() if p.startswith("shaping."))
    return keys


def _check_key(item: str, key: str) -> None:
    head = key.split(".")[0]
    if key in settable_keys() or head == "parameters" and key.count(".") >= 2:
        return
    known = settable_keys()
    sections: dict[str, list[str]] = {}
    for k in known:
        section, _, field = k.partition(".")
        sections.setdefault(section, []).append(field)
    listing = ", ".join(f"{s}.{'|'.join(f)}" if f[0] else s for s, f in sections.items())
    raise ConfigError(f"--set {item}: unknown key {key}; valid keys: {listing}, parameters.NAME.FIELD")


def _pin(tree: dict[str, Any], key: str, value: Any) -> bool:
    """`--set` on a searched parameter fixes it and takes it out of the search."""
    params = tree.get("parameters")
    if not isinstance(params, dict):
        return False
    searched = [name for name in params if name == key or name.startswith(key + ".")]
    if not searched:
        return False
    for name in searched:
        del params[name]
    params[key] = {"type": "fixed", "value": value, "pinned": True}
    return True


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> None:
    """`--set key.path=value`; the value is read as YAML (3 -> int, [1, 7] -> list)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected key.path=value")
        _check_key(item, key)
        try:
            value = load_yaml_text(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item}: cannot read value {text!r}") from None
        if not _pin(tree, key, value):
            set_path(tree, key, value)


_TAGS = set(PARAM_TYPES) | {"FloatRange", "IntRange", "Categorical", "ConvSubset", "Fixed"}


def _space_problems(err: ValidationError) -> list[str]:
    """pydantic's report as `yaml.path: problem` lines, without union tags in the path."""
    lines = []
    for path, kind, message in validation_problems(err, hidden=_TAGS, keep_indices=True):
        if kind == "union_tag_invalid":
            message = f"unknown parameter type; use one of {', '.join(PARAM_TYPES)}"
        elif kind == "union_tag_not_found":
            message = "a parameter needs a type (one of " + ", ".join(PARAM_TYPES) + ")"
        if kind == "value_error" and ":" in message and not path:
            lines.append(message)  # a whole-space rule names its own fields
        elif kind == "value_error" and path == "parameters":
            lines.append(f"parameters.{message}")
        else:
            lines.append(f"{path}: {message}" if path else message)
    return list(dict.fromkeys(lines))


def _check_trials(space: SearchSpace) -> list[str]:
    """Build trial configs from each parameter's extreme values, so a bad range fails now.

    A problem is reported at the parameter that sets the failing field, else at the parameter
    whose extreme value caused it, else at the fixed section.
    """

    def corner(overrides: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, param in space.parameters.items():
            if param.active(values):
                values[name] = overrides.get(name, param.corners()[0])
        return values

    def owner(path: str, varied: str) -> str | None:
        owners = [n for n in space.parameters if n == path or n.startswith(path + ".")]
        return varied if varied in owners else (owners[0] if owners else None)

    configs = [("", corner({}))]
    for name, param in space.parameters.items():
        configs += [(name, corner({name: value})) for value in param.corners()[1:]]
    problems: dict[str, str] = {}  # message -> line: each problem is reported once
    for varied, values in configs:
        try:
            space.trial_config(values)
        except ValidationError as err:
            for path, _, message in validation_problems(err):
                owning = varied or None if is_cross_field(path) else owner(path, varied)
                if owning:
                    line = f"parameters.{owning}: {message}"
                else:
                    line = f"{path}: {message}" if path else message
                problems.setdefault(message, line)
    return list(problems.values())


def load_space(source: str | Path, overrides: list[str] | None = None) -> SearchSpace:
    """Read, override and validate a space; every problem is one line naming its YAML path."""
    path = find_space(str(source))
    tree = read_yaml(path)
    apply_overrides(tree, overrides or [])
    try:
        space = SearchSpace.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_space_problems(err)) from None
    if space.search.algorithm == "list":
        problems = _check_grid(space) or _check_listed(space)
    else:
        problems = _check_trials(space)
    if space.search.algorithm == "grid":
        problems += _check_grid(space)
    if problems:
        raise ConfigError(problems)
    return space


def _check_grid(space: SearchSpace) -> list[str]:
    problems = []
    for name, param in space.parameters.items():
        try:
            param.choices()
        except ValueError as err:
            problems.append(f"parameters.{name}: {err}")
    if problems:
        return problems
    size = len(space.grid())
    if space.search.num_trials not in (None, size):
        problems.append(
            f"search.num_trials: the grid has {size} configurations; use {size} or leave num_trials out"
        )
    return problems


def _check_listed(space: SearchSpace) -> list[str]:
    """Every listed configuration (with every grid point) must make a valid trial, and no two the
    same trial: a configuration that several tables share is listed once."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for values in space.grid():
        label = ", ".join(
            [values[CONFIGURATION_KEY]] + [f"{k}={v}" for k, v in values.items() if k != CONFIGURATION_KEY]
        )
        try:
            fingerprint = space.trial_config(values).fingerprint()
        except ValidationError as err:
            for path, _, message in validation_problems(err):
                where = "" if not path or is_cross_field(path) else f"{path}: "
                problems.append(f"configurations.{values[CONFIGURATION_KEY]}: {where}{message}")
            continue
        if fingerprint in seen:
            problems.append(
                f"configurations: {seen[fingerprint]} and {label} are the same trial; list it once"
            )
        seen.setdefault(fingerprint, label)
    return list(dict.fromkeys(problems))
