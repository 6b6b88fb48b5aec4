"""Finding, reading, overriding and validating space files; every problem is one line naming its
YAML path, and nothing starts until a space is valid."""

from __future__ import annotations

import os
import reprlib
import stat
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from asha_tune.defaults import SPACES_ENV
from asha_tune.dotted import set_path
from asha_tune.errors import ConfigError, first_line
from asha_tune.spaces.params import MAX_TRIALS, PARAM_TYPES
from asha_tune.spaces.space import (
    CONFIGURATION_KEY,
    Configuration,
    SearchSpace,
    accuracy_metrics,
    trial_paths,
)
from asha_tune.trial.config import TrialConfig, is_cross_field, validation_problems
from asha_tune.trial.datasets import DATASETS
from asha_tune.trial.selection import ACC_PREFIX

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
    if path.is_dir():
        raise ConfigError(
            f"--space {name}: a folder, not a space file: give one of its .yaml files, or add the "
            f"folder to ${SPACES_ENV} and give a space's name"
        )
    if path.exists():
        raise ConfigError(f"--space {name}: not a regular file (a space is a YAML file)")
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


# A space file is a page of settings: the largest shipped one is 12 KB. A file of megabytes
# (a 50 MB categorical) is refused before it is read, not parsed for minutes.
MAX_SPACE_BYTES = 1024 * 1024
# Nesting a space never needs (a parameter's `when` list of conv sets is 6 deep); deeper
# structures would exhaust Python's recursion while YAML composes them.
MAX_DEPTH = 50
_SHORT = reprlib.Repr()
_SHORT.maxstring = 40


class _SpaceLoader(yaml.SafeLoader):
    """YAML as a space file may hold it: no aliases, no key given twice, keys that are plain
    values, nesting no deeper than MAX_DEPTH.

    An alias shares a node, so nine nested levels of nine aliases each (a "billion laughs") are
    387 million nodes for validation to walk; a key given twice silently keeps the last value; a
    list or mapping as a key (`? [a, b]`, `{epochs: 4}: 30`) is no setting's name. Each is
    refused at the line where it happens.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                problem=f"alias *{event.anchor} (space files hold no aliases: write the value out)",
                problem_mark=event.start_mark,
            )
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.MarkedYAMLError(
                    problem=f"nested more than {MAX_DEPTH} levels deep (a space needs a few)",
                    problem_mark=self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        """A scalar YAML resolves but Python cannot build (a 5,000-digit integer, the date
        2001-13-45) is refused at its line, as a malformed value."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as err:
            kind = str(node.tag).rpartition(":")[2]
            raise yaml.MarkedYAMLError(
                problem=f"cannot read {_SHORT.repr(node.value)} as {kind}: {first_line(err).split(';')[0]}",
                problem_mark=node.start_mark,
            ) from None

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                raise yaml.MarkedYAMLError(
                    problem=f"a {kind} as a key: a key is a plain name, such as epochs or train.lr",
                    problem_mark=key_node.start_mark,
                )
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.MarkedYAMLError(
                    problem=f"key {key!r} is given twice (lines {seen[key]} and {line}): keep one",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """YAML text as a space file (or a `--set` value) may hold it (see _SpaceLoader), or a
    yaml.YAMLError (`yaml_problem` says it in one line)."""
    return yaml.load(text, Loader=_SpaceLoader)  # _SpaceLoader is a SafeLoader


def yaml_problem(err: yaml.YAMLError, text: str) -> tuple[str, str]:
    """Where a YAML error is ("line 3, column 14", or "") and what it is, in one line: PyYAML's
    reader (a control character, a NUL) names a character position in "<unicode string>" instead."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark
        return (f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""), str(err.problem)
    if isinstance(err, yaml.reader.ReaderError):
        line, column = _line_column(text, err.position)
        code = err.character if isinstance(err.character, int) else ord(err.character)
        return (
            f"line {line}, column {column}",
            f"non-printable character U+{code:04X} is not allowed: remove it",
        )
    return "", first_line(err)


def _line_column(text: str, position: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, position) + 1
    return text.count("\n", 0, position) + 1, position - line_start + 1


def _decode(data: bytes) -> str:
    """UTF-8 (a byte-order mark is fine), or a ConfigError-ready line saying what the file is."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError("UTF-16 text: save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line, column = _line_column(data.decode("utf-8", errors="replace"), err.start)
        raise ValueError(
            f"not UTF-8 text (byte 0x{data[err.start]:02x} at line {line}, column {column}; "
            "Latin-1 or Windows-1252?): save it as UTF-8"
        ) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """A space file's YAML tree; any problem with the file is one line naming it (and the line in it)."""
    try:
        info = path.stat()
        if path.is_dir():
            raise ValueError("a folder, not a space file")
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > MAX_SPACE_BYTES:
            raise ValueError(
                f"{info.st_size:,} bytes; a space file holds at most {MAX_SPACE_BYTES:,} "
                "(a long categorical belongs in a range, or in several spaces)"
            )
        text = _decode(path.read_bytes())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or first_line(err)}") from None
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    try:
        tree = load_yaml_text(text)
    except yaml.YAMLError as err:
        where, problem = yaml_problem(err, text)
        raise ConfigError(f"{path}: malformed YAML{f' at {where}' * bool(where)}: {problem}") from None
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
    kept = dict(params)  # the pin takes the searched one's place: a `when` below may read it
    params.clear()
    for name, param in kept.items():
        if name == searched[0]:
            params[key] = {"type": "fixed", "value": value, "pinned": True}
        elif name not in searched:
            params[name] = param
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
        except yaml.YAMLError as err:
            raise ConfigError(
                f"--set {item}: cannot read value {text!r}: {yaml_problem(err, text)[1]}"
            ) from None
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
    """Every parameter enumerable, and the grid no larger than a sweep: counted, never built."""
    problems = []
    for name, param in space.parameters.items():
        try:
            param.size()
        except ValueError as err:
            problems.append(f"parameters.{name}: {err}")
    if problems:
        return problems
    try:
        size = space.grid_size(limit=MAX_TRIALS)
    except ValueError as err:
        return [str(err)]
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
            config = space.trial_config(values)
        except ValidationError as err:
            for path, _, message in validation_problems(err):
                where = "" if not path or is_cross_field(path) else f"{path}: "
                problems.append(f"configurations.{values[CONFIGURATION_KEY]}: {where}{message}")
            continue
        problems += _check_published(space.configuration(values[CONFIGURATION_KEY]), config)
        fingerprint = config.fingerprint()
        if fingerprint in seen:
            problems.append(
                f"configurations: {seen[fingerprint]} and {label} are the same trial; list it once"
            )
        seen.setdefault(fingerprint, label)
    return list(dict.fromkeys(problems))


def _check_published(listed: Configuration, config: TrialConfig) -> list[str]:
    """A published figure is an accuracy a trial of its dataset reports, to be set beside ours
    (its value, a percentage, is checked by the schema): a misspelt metric (acc_cartooon) would
    never be compared. `folder`'s domains are its data root's: any acc_<domain> may be one."""
    layout = DATASETS[config.data.dataset]
    reported = accuracy_metrics(layout.domains if layout.fixed_domains else None)
    return [
        f"configurations.{listed.id}.published: {metric} is not an accuracy a trial on "
        f"{config.data.dataset} reports (one of {', '.join(sorted(reported))})"
        for metric in listed.published
        if metric not in reported and (layout.fixed_domains or not metric.startswith(ACC_PREFIX))
    ]
