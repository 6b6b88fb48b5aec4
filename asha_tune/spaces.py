"""Search spaces: YAML files validated with pydantic, sampled define-by-run.

A space fixes the data, the recipe and the search settings, and names each searched parameter
once, by its TrialConfig path (`shaping.p0`, `shaping.convs`, `train.lr`, ...). Conversion to
Optuna's distributions happens here and nowhere else; `suggest` works on any object with
Optuna's `suggest_*` methods, so it serves the sweep, the grid enumeration and the dry run.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config import (
    DOMAINS,
    SHAPEABLE_CONVS,
    DataConfig,
    SelectionConfig,
    ShapingConfig,
    TrainConfig,
    TrialConfig,
    check_convs,
    is_cross_field,
    validation_problems,
)
from .errors import ConfigError

SPACES_ENV = "ASHA_TUNE_SPACES"
# The shipped spaces: asha_tune/search_spaces in an installed wheel, search_spaces/ in a checkout.
_HERE = Path(__file__).resolve().parent
PACKAGE_SPACES = next((p for p in (_HERE / "search_spaces", _HERE.parent / "search_spaces") if p.is_dir()),
                      _HERE / "search_spaces")


class Suggester(Protocol):
    """What `suggest` needs of an Optuna trial."""

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...


def _encode(choice: Any) -> Any:
    """Optuna's categorical choices must be scalars: lists (conv sets) become JSON text."""
    return json.dumps(choice) if isinstance(choice, (list, dict)) else choice


def _matches(value: Any, wanted: Any) -> bool:
    return value in wanted if isinstance(wanted, list) else value == wanted


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # Only sample this parameter when earlier values match, e.g. {shaping.mode: random}.
    when: dict[str, Any] = {}

    def active(self, values: dict[str, Any]) -> bool:
        return all(_matches(values.get(k), v) for k, v in self.when.items())

    def optuna_params(self, name: str, value: Any) -> dict[str, Any]:
        """The Optuna parameters that make `suggest` return `value` (for enqueued grid points)."""
        return {name: _encode(value)}


class Fixed(_Param):
    type: Literal["fixed"]
    value: Any
    pinned: bool = False  # set by `--set` on a parameter the file searches (shown by --dry-run)

    def suggest(self, trial: Suggester, name: str) -> Any:
        return self.value

    def choices(self) -> list[Any]:
        return [self.value]

    corners = choices

    def optuna_params(self, name: str, value: Any) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        return f"fixed {self.value!r}" + (" (pinned by --set: not searched)" if self.pinned else "")


class FloatRange(_Param):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatRange:
        if self.low >= self.high:
            raise ValueError(f"empty range: low {self.low} is not below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step:
            raise ValueError("a log range cannot have a step")
        return self

    def suggest(self, trial: Suggester, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def corners(self) -> list[float]:
        return [self.low, self.high]

    def choices(self) -> list[float]:
        if self.step is None:
            raise ValueError("a float range without step cannot be enumerated for a grid")
        n = int(round((self.high - self.low) / self.step))
        return [round(self.low + i * self.step, 10) for i in range(n + 1)]

    def describe(self) -> str:
        extra = " log" if self.log else f" step {self.step}" if self.step else ""
        return f"float [{self.low}, {self.high}]{extra}"


class IntRange(_Param):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntRange:
        if self.low >= self.high:
            raise ValueError(f"empty range: low {self.low} is not below high {self.high}")
        return self

    def suggest(self, trial: Suggester, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def corners(self) -> list[int]:
        return [self.low, self.high]

    def choices(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def describe(self) -> str:
        return f"int [{self.low}, {self.high}]" + (f" step {self.step}" if self.step > 1 else "")


class Categorical(_Param):
    type: Literal["categorical", "grid"]
    values: list[Any] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _distinct(cls, values: list[Any]) -> list[Any]:
        encoded = [_encode(v) for v in values]
        if len(set(map(str, encoded))) != len(encoded):
            raise ValueError("a value is listed twice")
        return values

    def suggest(self, trial: Suggester, name: str) -> Any:
        encoded = [_encode(v) for v in self.values]
        return self.values[encoded.index(trial.suggest_categorical(name, encoded))]

    def choices(self) -> list[Any]:
        return list(self.values)

    corners = choices

    def describe(self) -> str:
        return f"{self.type} {self.values}"


class ConvSubset(_Param):
    """A set of convs: its size, then which convs of that size (one categorical per size)."""

    type: Literal["conv_subset"]
    allowed: list[int] = list(SHAPEABLE_CONVS)
    min_size: int = Field(default=1, ge=1)
    max_size: int = Field(default=1, ge=1)

    @field_validator("allowed")
    @classmethod
    def _allowed(cls, allowed: list[int]) -> list[int]:
        return check_convs(allowed)

    @model_validator(mode="after")
    def _sizes(self) -> ConvSubset:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} is above max_size {self.max_size}")
        if self.max_size > len(self.allowed):
            raise ValueError(f"max_size {self.max_size} is above the {len(self.allowed)} allowed convs")
        return self

    def _of_size(self, size: int) -> list[str]:
        return [",".join(map(str, c)) for c in itertools.combinations(self.allowed, size)]

    def suggest(self, trial: Suggester, name: str) -> list[int]:
        size = self.min_size
        if self.max_size > self.min_size:
            size = trial.suggest_int(f"{name}.size", self.min_size, self.max_size)
        options = self._of_size(size)
        pick = options[0] if len(options) == 1 else trial.suggest_categorical(f"{name}.size{size}", options)
        return [int(c) for c in pick.split(",")]

    def optuna_params(self, name: str, value: list[int]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.max_size > self.min_size:
            params[f"{name}.size"] = len(value)
        if len(self._of_size(len(value))) > 1:
            params[f"{name}.size{len(value)}"] = ",".join(map(str, value))
        return params

    def choices(self) -> list[list[int]]:
        return [list(c) for k in range(self.min_size, self.max_size + 1)
                for c in itertools.combinations(self.allowed, k)]

    def corners(self) -> list[list[int]]:
        return [self.allowed[:self.min_size], self.allowed[-self.max_size:]]

    def describe(self) -> str:
        return f"conv subset of {self.allowed}, size {self.min_size}..{self.max_size}"


Param = Annotated[Fixed | FloatRange | IntRange | Categorical | ConvSubset, Field(discriminator="type")]
PARAM_TYPES = ("fixed", "float", "int", "categorical", "grid", "conv_subset")


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    algorithm: Literal["optuna", "random", "grid"] = "optuna"
    num_trials: int | None = Field(default=None, ge=1)
    max_concurrent: int = Field(default=2, ge=1)
    seed: int = 0
    max_failures: int = Field(default=1, ge=0)  # retries of a crashed trial, from its checkpoint
    # One trial at a time, so every proposal and every stopping decision sees the same history:
    # two runs of the sweep then agree exactly (on the same device).
    reproducible: bool = False

    @property
    def concurrency(self) -> int:
        return 1 if self.reproducible else self.max_concurrent


# What a protocol other than oracle never lets the scheduler or the search optimise.
REPORTED_TARGET_METRICS = frozenset({"target_acc", *(f"acc_{d}" for d in DOMAINS)})


class SchedulerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(default=1, ge=1)
    reduction_factor: float = Field(default=3, gt=1)
    metric: str = "val_acc"  # the selection metric (selection.py); also what the search optimises
    mode: Literal["max", "min"] = "max"


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cpu: float = Field(default=1, gt=0)
    gpu: float = Field(default=0, ge=0, le=1)  # a share of one GPU; a trial never uses more


def _fixed_shorthand(value: Any) -> Any:
    """`shaping.mode: random` in `parameters` means a fixed value."""
    if isinstance(value, dict) and "type" in value:
        return value
    return {"type": "fixed", "value": value}


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    shaping: dict[str, Any] = {}  # fixed shaping fields; checked with the parameters below
    # One split for every trial, never searched. Honest by default: a held-out part of the
    # source selects; a space that reproduces the paper says `selection: oracle`.
    selection: SelectionConfig = SelectionConfig(protocol="source_val")
    search: SearchSettings = SearchSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    resources: Resources = Resources()
    parameters: dict[str, Param] = {}

    @field_validator("parameters", mode="before")
    @classmethod
    def _shorthand(cls, params: Any) -> Any:
        return {k: _fixed_shorthand(v) for k, v in params.items()} if isinstance(params, dict) else params

    @field_validator("parameters")
    @classmethod
    def _known_paths(cls, params: dict[str, Any]) -> dict[str, Any]:
        known = trial_paths()
        for name, param in params.items():
            if name.split(".")[0] == "selection":
                raise ValueError(f"{name}: selection is fixed for a whole sweep (every trial selects "
                                 f"on the same split); set it in the selection section")
            if name not in known:
                raise ValueError(f"{name}: not a trial setting (known: {', '.join(sorted(known))})")
            for key in param.when:
                if key not in params:
                    raise ValueError(f"{name}: when refers to {key}, which is not a parameter")
        return params

    @model_validator(mode="after")
    def _schedule(self) -> SearchSpace:
        s, epochs = self.scheduler, self.train.epochs
        if s.kind == "asha" and s.grace_period > epochs:
            raise ValueError(f"scheduler.grace_period {s.grace_period} is above train.epochs {epochs}")
        metrics = {"val_acc", "target_acc", "train_loss", "source_acc"}
        metrics |= {f"acc_{t}" for t in self.data.targets}
        if s.metric not in metrics:
            raise ValueError(f"scheduler.metric {s.metric!r} is not reported; choose one of "
                             f"{', '.join(sorted(metrics))}")
        protocol = self.selection.protocol
        if protocol != "oracle" and s.metric in REPORTED_TARGET_METRICS:
            raise ValueError(f"scheduler.metric: {s.metric} is a reported target accuracy, which selection "
                             f"{protocol} keeps from the scheduler and the search; use val_acc (or "
                             f"selection: oracle to select on the target domain, as the paper)")
        if self.search.algorithm != "grid" and self.search.num_trials is None:
            raise ValueError(f"search.num_trials is needed for algorithm {self.search.algorithm}")
        return self

    # -- sampling --

    def suggest(self, trial: Suggester) -> dict[str, Any]:
        """Sample every active parameter in file order (define-by-run), fixed ones included."""
        values: dict[str, Any] = {}
        for name, param in self.parameters.items():
            if param.active(values):
                values[name] = param.suggest(trial, name)
        return values

    def grid(self) -> list[dict[str, Any]]:
        """Every configuration of a grid space, respecting `when` conditions."""
        points: list[dict[str, Any]] = [{}]
        for name, param in self.parameters.items():
            grown = []
            for point in points:
                if not param.active(point):
                    grown.append(point)
                    continue
                grown += [{**point, name: v} for v in param.choices()]
            points = grown
        return points

    def optuna_params(self, values: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, value in values.items():
            params.update(self.parameters[name].optuna_params(name, value))
        return params

    @property
    def num_trials(self) -> int:
        if self.search.algorithm == "grid":
            return self.search.num_trials or len(self.grid())
        return self.search.num_trials  # type: ignore[return-value]  # required by _schedule

    def trial_config(self, values: dict[str, Any]) -> TrialConfig:
        """The full trial configuration: the space's fixed sections with `values` set."""
        tree: dict[str, Any] = {
            "data": self.data.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
            "shaping": dict(self.shaping),
            "selection": self.selection.model_dump(mode="json"),
        }
        for path, value in values.items():
            set_path(tree, path, value)
        return TrialConfig.model_validate(tree)


def trial_paths() -> set[str]:
    """Every TrialConfig setting a parameter may search, as dotted paths."""
    paths = {f"{section}.{field}" for section, model in
             (("data", DataConfig), ("shaping", ShapingConfig), ("train", TrainConfig))
             for field in model.model_fields}
    return paths | {"shaping.p0.first", "shaping.p0.last"}


def set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, taking the longest existing key at each level.

    Longest-key matching lets `--set parameters.shaping.p0.high=0.5` reach the parameter named
    `shaping.p0` inside `parameters`.
    """
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


# --- loading ---------------------------------------------------------------------------------


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
        raise ConfigError(f"--space {name}: no space of that name in {where} "
                          f"(available: {', '.join(spaces) or 'none'})")
    return spaces[stem]


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text())
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
    raise ConfigError(f"--set {item}: unknown key {key}; valid keys: {listing}, "
                      f"parameters.NAME.FIELD")


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
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item}: cannot read value {text!r}") from None
        if not _pin(tree, key, value):
            set_path(tree, key, value)


_TAGS = set(PARAM_TYPES) | {"FloatRange", "IntRange", "Categorical", "ConvSubset", "Fixed"}


def _space_problems(err: ValidationError) -> list[str]:
    """pydantic's report as `yaml.path: problem` lines, without union tags in the path."""
    lines = []
    for problem in err.errors():
        parts = [str(p) for p in problem["loc"] if str(p) not in _TAGS and not str(p).startswith("function-")]
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "union_tag_invalid":
            message = f"unknown parameter type; use one of {', '.join(PARAM_TYPES)}"
        elif problem["type"] == "union_tag_not_found":
            message = "a parameter needs a type (one of " + ", ".join(PARAM_TYPES) + ")"
        elif problem["type"] not in ("value_error", "extra_forbidden", "missing") and "input" in problem:
            message += f" (got {problem['input']!r})"
        path = ".".join(parts)
        if problem["type"] == "value_error" and ":" in message and not parts:
            lines.append(message)  # a whole-space rule names its own fields
        elif problem["type"] == "value_error" and parts == ["parameters"]:
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
            for path, message in validation_problems(err):
                param = varied or None if is_cross_field(path) else owner(path, varied)
                if param:
                    line = f"parameters.{param}: {message}"
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
        problems.append(f"search.num_trials: the grid has {size} configurations; "
                        f"use {size} or leave num_trials out")
    return problems


def describe_selection(space: SearchSpace) -> str:
    """One line: which images select the sweep's configurations, and what the scheduler optimises."""
    s, d = space.selection, space.data
    held = f"{s.val_fraction:.0%} per class, split seed {s.split_seed}"
    where = {
        "oracle": f"the whole target domain ({', '.join(d.targets)}) selects and is reported, as the paper "
                  "(optimistic: selected on the test data)",
        "source_val": f"held-out {d.source} images ({held}, never trained on) select; the targets are "
                      "only reported",
        "target_val": f"held-out target images ({held}) select; the targets are reported on the rest",
    }[s.protocol]
    return f"{s.protocol}: {where}; the scheduler and the search optimise {space.scheduler.metric}"


def describe(space: SearchSpace) -> str:
    """The dry run's text: the resolved space, then what would run."""
    fixed = space.model_dump(mode="json", exclude={"parameters"})
    if fixed["train"]["batch_size"] is None:
        fixed["train"]["batch_size"] = "by mode (256 for mode target, else 128)"
    lines = [yaml.safe_dump(fixed, sort_keys=False, width=1000).rstrip()]
    lines.append("parameters:")
    for name, param in space.parameters.items():
        when = f"  (when {param.when})" if param.when else ""
        lines.append(f"  {name}: {param.describe()}{when}")
    if space.search.algorithm == "grid":
        points = space.grid()[:space.num_trials]
        lines.append(f"grid: {len(points)} configurations")
        lines += [f"  {i:4d}  " + ", ".join(f"{k}={v}" for k, v in p.items()) for i, p in enumerate(points)]
    else:
        lines.append(f"{space.search.algorithm} search: {space.num_trials} trials sampled "
                     "from the ranges above")
    lines.append(f"needs: {needs(space)}")
    if space.search.reproducible:
        lines.append("reproducible: one trial at a time, so a second run gives the same trials, "
                     "stops and metrics")
    return "\n".join(lines)


def needs(space: SearchSpace) -> str:
    """What running a space asks of a machine: `asha-tune spaces` and the dry run print it."""
    r = space.resources
    per_trial = f"{r.gpu:g} GPU + {r.cpu:g} CPU per trial" if r.gpu else f"{r.cpu:g} CPU per trial, no GPU"
    weights = sorted({str(v) for v in weight_choices(space)})
    budget = f"{space.num_trials} trials x {space.train.epochs} epochs"
    if space.scheduler.kind == "asha":
        budget += " (ASHA stops weak ones early)"
    return (f"{per_trial}, {space.search.concurrency} at once; weights {'/'.join(weights)}; "
            f"{budget}; {space.data.image_size} px")


def _choices(space: SearchSpace, path: str, fixed: Any) -> list[Any]:
    """Every value a trial setting can take: the fixed one, or an enumerable parameter's."""
    param = space.parameters.get(path)
    if param is None:
        return [fixed]
    try:
        return param.choices()
    except ValueError:
        return [fixed]


def weight_choices(space: SearchSpace) -> list[str]:
    return [str(w) for w in _choices(space, "train.weights", space.train.weights)]


def domain_choices(space: SearchSpace) -> set[str]:
    """Every PACS domain a trial of this space can read."""
    domains = set(_choices(space, "data.source", space.data.source))
    for targets in _choices(space, "data.targets", space.data.targets):
        domains |= {targets} if isinstance(targets, str) else set(targets)
    return domains
