"""The search space: fixed sections, the search and scheduler settings, and what is searched.

A space names each searched parameter once, by its TrialConfig path (`shaping.p0`,
`shaping.convs`, `train.lr`, ...), and turns a set of sampled values into a full TrialConfig.
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from asha_tune.dotted import set_path
from asha_tune.spaces.params import MAX_TRIALS, Fixed, Param, Suggester
from asha_tune.trial.config import (
    MODEL_CONFIG,
    Bool,
    DataConfig,
    Float,
    Int,
    Seed,
    SelectionConfig,
    ShapingConfig,
    TrainConfig,
    TrialConfig,
)
from asha_tune.trial.registry import PAPER_PROTOCOL, scored_by
from asha_tune.trial.score_info import SCORE_INFO, ScoreInfo
from asha_tune.trial.selection import TARGET_ACC, VAL_ACC, domain_acc, label_free, score_key, target_of


class SearchSettings(BaseModel):
    model_config = MODEL_CONFIG
    # list: the space's explicit `configurations` (each crossed with any grid parameters), in order.
    algorithm: Literal["optuna", "random", "grid", "list"] = "optuna"
    num_trials: Int | None = Field(default=None, ge=1, le=MAX_TRIALS)
    # Run only the configurations whose id matches one of these patterns (fnmatch: "da-*").
    only: list[str] = []
    max_concurrent: Int = Field(default=2, ge=1)
    seed: Seed = 0
    max_failures: Int = Field(default=1, ge=0)  # retries of a crashed trial, from its checkpoint
    # One trial at a time, so every proposal and every stopping decision sees the same history:
    # two runs of the sweep then agree exactly (on the same device).
    reproducible: Bool = False
    # Independent runs of the whole search (sweep/replicated.py), each with its own sampler, trial
    # and split seeds (sweep/replicated.py replicate_seeds): the winner's spread, not one draw.
    replicates: Int = Field(default=1, ge=1)

    @property
    def concurrency(self) -> int:
        return 1 if self.reproducible else self.max_concurrent


def is_reported_target_metric(metric: str) -> bool:
    """target_acc or an acc_<domain>: a trial reports acc_ only for its targets, whatever the
    dataset (a source's accuracy is source_acc, its held-out images' val_acc)."""
    return metric == TARGET_ACC or target_of(metric) is not None


class SchedulerSettings(BaseModel):
    model_config = MODEL_CONFIG
    kind: Literal["asha", "fifo"] = "asha"
    grace_period: Int = Field(default=1, ge=1)
    reduction_factor: Float = Field(default=3, gt=1)
    metric: str = "val_acc"  # the selection metric (selection.py); also what the search optimises
    mode: Literal["max", "min"] = "max"


class Resources(BaseModel):
    model_config = MODEL_CONFIG
    cpu: Float = Field(default=1, gt=0)
    gpu: Float = Field(default=0, ge=0, le=1)  # a share of one GPU; a trial never uses more


CONFIGURATION_KEY = "configuration"  # in a trial's values: the id of its explicit configuration


class Configuration(BaseModel):
    """One explicit trial of a list space: trial settings by path, and reference figures if any.

    `published` holds figures someone else reported for this configuration (e.g. the paper's), by
    metric name (`acc_cartoon`, ...): reference data for comparison, never our results.
    """

    model_config = MODEL_CONFIG
    id: str = Field(pattern=r"^[A-Za-z0-9_.,+=-]+$")
    values: dict[str, Any] = {}  # TrialConfig paths, as in `parameters` (fixed values)
    published: dict[str, Annotated[Float, Field(ge=0, le=100)]] = {}  # accuracies, in %
    source: str = ""  # where the published figures come from, e.g. "paper, Tables 3 and 4"
    note: str = ""  # e.g. "not in the paper"


def score_of(metric: str) -> ScoreInfo | None:
    """The label-free score a metric is (target_entropy, entropy_cartoon, ...), if any."""
    return next(
        (i for i in SCORE_INFO.values() if metric == i.metric or metric.startswith(f"{i.name}_")), None
    )


def _protocol_of(tree: dict[str, Any]) -> Any:
    selection = tree.get("selection")
    return selection.get("protocol") if isinstance(selection, dict) else selection


def metric_direction(metric: str) -> Literal["max", "min"]:
    """Which way a reported metric is better: a label-free score's own, a loss's min, an
    accuracy's max."""
    score = score_of(metric)
    if score is not None:
        return score.direction
    return "min" if metric == "train_loss" else "max"


def reported_metrics(data: DataConfig) -> set[str]:
    """What a trial of this data reports, by name: what a scheduler may optimise."""
    metrics = {"train_loss", *accuracy_metrics(data.target_domains)}
    metrics |= {i.metric for i in SCORE_INFO.values()}
    return metrics | {score_key(name, t) for name in SCORE_INFO for t in data.target_domains or ()}


def accuracy_metrics(targets: tuple[str, ...] | None) -> set[str]:
    """The accuracies (in %) a trial on these targets reports: what a published figure may be."""
    return {VAL_ACC, TARGET_ACC, "source_acc", *(domain_acc(t) for t in targets or ())}


def _check_when(name: str, param: Any, params: dict[str, Any]) -> None:
    """A `when` names a parameter drawn before this one (in file order), and values it can take:
    otherwise the condition never holds and the parameter is never searched. A value that `--set`
    pinned is exempt: pinning the mode rightly switches off the other mode's parameters."""
    order = list(params)
    for key, wanted in param.when.items():
        if key not in params:
            raise ValueError(f"{name}: when refers to {key}, which is not a parameter")
        if order.index(key) >= order.index(name):
            where = "itself" if key == name else f"{key}, which is listed below it"
            raise ValueError(
                f"{name}: when refers to {where}: parameters are drawn in file order, so {name} would "
                f"never be drawn; list {key} above {name}"
            )
        source = params[key]
        if isinstance(source, Fixed) and source.pinned:
            continue
        for value in wanted if isinstance(wanted, list) else [wanted]:
            if value is None and source.when:  # `key` itself not drawn
                continue
            if not source.can_take(value):
                alternatives = " (a list in when means any of its values)" * isinstance(wanted, list)
                raise ValueError(
                    f"{name}: when {key} is {value!r}, which {key} never takes "
                    f"({source.describe()}){alternatives}"
                )


def _fixed_shorthand(value: Any) -> Any:
    """`shaping.mode: random` in `parameters` means a fixed value."""
    if isinstance(value, dict) and "type" in value:
        return value
    return {"type": "fixed", "value": value}


class SearchSpace(BaseModel):
    model_config = MODEL_CONFIG
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
    configurations: list[Configuration] = []  # explicit trials (search.algorithm: list)

    @model_validator(mode="before")
    @classmethod
    def _list_defaults(cls, tree: Any) -> Any:
        """Explicit configurations mean a list search, run to full budget (no early stopping)."""
        if not isinstance(tree, dict) or not tree.get("configurations"):
            return tree
        tree = dict(tree)
        for section, key, value in (("search", "algorithm", "list"), ("scheduler", "kind", "fifo")):
            if isinstance(tree.get(section, {}), dict) and key not in tree.get(section, {}):
                tree[section] = {**tree.get(section, {}), key: value}
        return tree

    @model_validator(mode="before")
    @classmethod
    def _scheduler_defaults(cls, tree: Any) -> Any:
        """Under a label-free protocol the scheduler selects on its score by default; a metric's
        direction is its mode by default (entropy and train_loss: min), unless the space says
        otherwise (then checked below)."""
        if not isinstance(tree, dict):
            return tree
        info = label_free(str(_protocol_of(tree)))
        scheduler = tree.get("scheduler", {})
        if not isinstance(scheduler, dict) or (info is None and "metric" not in scheduler):
            return tree
        filled = {"metric": info.metric, **scheduler} if info else dict(scheduler)
        filled.setdefault("mode", metric_direction(str(filled["metric"])))
        return {**tree, "scheduler": filled}

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
                raise ValueError(
                    f"{name}: selection is fixed for a whole sweep (every trial selects "
                    f"on the same split); set it in the selection section"
                )
            if name not in known:
                raise ValueError(f"{name}: not a trial setting (known: {', '.join(sorted(known))})")
            _check_when(name, param, params)
        return params

    @model_validator(mode="after")
    def _schedule(self) -> SearchSpace:
        s, epochs = self.scheduler, self.train.epochs
        if s.kind == "asha" and s.grace_period > epochs:
            raise ValueError(f"scheduler.grace_period {s.grace_period} is above train.epochs {epochs}")
        metrics = reported_metrics(self.data)
        if s.metric not in metrics:
            unnamed = " (name data.targets to optimise one target's accuracy)" * (
                self.data.target_domains is None and s.metric.startswith("acc_")
            )
            raise ValueError(
                f"scheduler.metric {s.metric!r} is not reported; choose one of "
                f"{', '.join(sorted(metrics))}{unnamed}"
            )
        protocol = self.selection.protocol
        if not self.selection.info.selects_on_reported and is_reported_target_metric(s.metric):
            raise ValueError(
                f"scheduler.metric: {s.metric} is a reported target accuracy, which selection "
                f"{protocol} keeps from the scheduler and the search; use val_acc (or "
                f"selection: {PAPER_PROTOCOL} to select on the target domain, as the paper)"
            )
        self._check_label_free()
        direction = metric_direction(s.metric)
        if score_of(s.metric) is None and s.mode != direction:
            better = "lower" if direction == "min" else "higher"
            raise ValueError(
                f"scheduler.mode {s.mode} contradicts scheduler.metric {s.metric}: {better} {s.metric} "
                f"is better; use scheduler.mode: {direction} (or leave it out)"
            )
        for name in self.parameters:
            section, _, field = name.partition(".")
            field = field.split(".")[0]  # shaping.p0.first is shaping.p0
            if section == "shaping" and field in self.shaping:
                raise ValueError(
                    f"parameters.{name}: shaping.{field} is also fixed in the shaping section "
                    f"({self.shaping[field]!r}): set it in one place"
                )
        if self.search.algorithm not in ("grid", "list") and self.search.num_trials is None:
            raise ValueError(f"search.num_trials is needed for algorithm {self.search.algorithm}")
        seeded = "train.seed" in self.parameters or any("train.seed" in c.values for c in self.configurations)
        if self.search.replicates > 1 and seeded:
            raise ValueError(
                "search.replicates: this space sets train.seed (a parameter or a configuration's value), so "
                "every replicate would run the same seeds; replicates set train.seed themselves"
            )
        self._check_configurations()
        return self

    def _check_label_free(self) -> None:
        """A label-free protocol's scheduler selects on its own score, in its direction; no other
        protocol optimises a score of the unlabelled target images."""
        s, protocol = self.scheduler, self.selection.protocol
        info, score = label_free(protocol), score_of(s.metric)
        if info is not None and score is not info:
            better = "lower" if info.direction == "min" else "higher"
            raise ValueError(
                f"scheduler.metric {s.metric}: selection {protocol} selects on {info.metric} "
                f"({info.summary}; {better} is better): set scheduler.metric: {info.metric} and "
                f"scheduler.mode: {info.direction}"
            )
        if info is None and score is not None:
            its = scored_by(score.name)
            raise ValueError(
                f"scheduler.metric {s.metric} is the {its} protocol's score of unlabelled target "
                f"images, not what selection {protocol} selects on: use selection: {its}"
            )
        if score is not None and s.mode != score.direction:  # score is info: the protocol's own
            better = "lower" if score.direction == "min" else "higher"
            raise ValueError(
                f"scheduler.mode {s.mode} contradicts selection {protocol}: {better} {s.metric} is better "
                f"({score.summary}); use scheduler.mode: {score.direction}"
            )

    def _check_configurations(self) -> None:
        listed = self.search.algorithm == "list"
        if listed != bool(self.configurations):
            raise ValueError(
                "configurations: search.algorithm list runs the configurations listed "
                "here, and only it does: give both or neither"
            )
        if not listed:
            if self.search.only:
                raise ValueError("search.only: picks among explicit configurations; this space has none")
            return
        if self.scheduler.kind != "fifo":
            raise ValueError("scheduler.kind: listed configurations all run to full budget; use fifo")
        self._check_each_configuration()
        ids = [c.id for c in self.configurations]
        for pattern in self.search.only:
            if not fnmatch.filter(ids, pattern):
                raise ValueError(f"search.only: {pattern!r} matches no configuration (ids: {', '.join(ids)})")

    def _check_each_configuration(self) -> None:
        """Each listed configuration has its own id, and sets trial settings the search does not."""
        ids = [c.id for c in self.configurations]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"configurations: id {', '.join(twice)} is listed twice")
        known = trial_paths()
        for c in self.configurations:
            unknown = sorted(set(c.values) - known)
            if unknown:
                raise ValueError(f"configurations: {c.id}: {', '.join(unknown)} is not a trial setting")
            searched = sorted(set(c.values) & set(self.parameters))
            if searched:
                raise ValueError(f"configurations: {c.id}: {', '.join(searched)} is also a parameter")

    @property
    def active_configurations(self) -> list[Configuration]:
        """The listed configurations this sweep runs (all, or those `search.only` picks)."""
        only = self.search.only
        return [
            c
            for c in self.configurations
            if not only or any(fnmatch.fnmatchcase(c.id, pattern) for pattern in only)
        ]

    def configuration(self, config_id: str) -> Configuration:
        return next(c for c in self.configurations if c.id == config_id)

    # -- sampling --

    def suggest(self, trial: Suggester) -> dict[str, Any]:
        """Sample every active parameter in file order (define-by-run), fixed ones included.

        A list space first picks its configuration (enqueued in order, so never sampled).
        """
        values: dict[str, Any] = {}
        if self.configurations:
            ids = [c.id for c in self.active_configurations]
            values[CONFIGURATION_KEY] = trial.suggest_categorical(CONFIGURATION_KEY, ids)
        for name, param in self.parameters.items():
            if param.active(values):
                values[name] = param.suggest(trial, name)
        return values

    def grid(self) -> list[dict[str, Any]]:
        """Every configuration of a grid space, respecting `when` conditions."""
        points: list[dict[str, Any]] = [{}]
        if self.configurations:  # each listed configuration, crossed with the grid parameters
            points = [{CONFIGURATION_KEY: c.id} for c in self.active_configurations]
        for name, param in self.parameters.items():
            grown = []
            for point in points:
                if not param.active(point):
                    grown.append(point)
                    continue
                grown += [{**point, name: v} for v in param.choices()]
            points = grown
        return points

    def grid_size(self, limit: int | None = None) -> int:
        """How many points `grid()` has, counted without building them, or a ValueError naming
        the parameter whose values take the count past `limit` (load_space's MAX_TRIALS: a seed
        from 0 to 10^9 is refused by its count, never built).

        Points are counted in groups that agree on the values a later `when` reads: a parameter
        no `when` reads multiplies its groups' counts; one that a `when` reads splits them."""
        read = {key for param in self.parameters.values() for key in param.when}
        listed = len(self.active_configurations) if self.configurations else 1
        groups: list[tuple[dict[str, Any], int]] = [({}, listed)]
        for name, param in self.parameters.items():
            n = param.size()
            grown: list[tuple[dict[str, Any], int]] = []
            for values, count in groups:
                if not param.active(values):
                    grown.append((values, count))
                elif name in read and (limit is None or n <= limit):
                    grown += [({**values, name: v}, count) for v in param.choices()]
                else:
                    grown.append((values, count * n))
            groups = grown
            total = sum(count for _, count in groups)
            if limit is not None and total > limit:
                raise ValueError(
                    f"parameters.{name}: its {n:,} values make a grid of {total:,} configurations or "
                    f"more; a sweep runs at most {limit:,} trials: narrow its range, raise its step, or "
                    "search it (search.algorithm optuna or random)"
                )
        return sum(count for _, count in groups)

    def optuna_params(self, values: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for name, value in values.items():
            if name == CONFIGURATION_KEY:
                params[name] = value
            else:
                params.update(self.parameters[name].optuna_params(name, value))
        return params

    @property
    def num_trials(self) -> int:
        if self.search.algorithm in ("grid", "list"):
            return self.search.num_trials or self.grid_size()
        return self.search.num_trials  # type: ignore[return-value]  # required by _schedule

    def trial_config(self, values: dict[str, Any]) -> TrialConfig:
        """The full trial configuration: the space's fixed sections with `values` set."""
        tree: dict[str, Any] = {
            "data": self.data.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
            "shaping": dict(self.shaping),
            "selection": self.selection.model_dump(mode="json"),
        }
        if CONFIGURATION_KEY in values:
            listed = self.configuration(values[CONFIGURATION_KEY]).values
            values = {**listed, **{k: v for k, v in values.items() if k != CONFIGURATION_KEY}}
        for path, value in values.items():
            set_path(tree, path, value)
        return TrialConfig.model_validate(tree)


def trial_paths() -> set[str]:
    """Every TrialConfig setting a parameter may search, as dotted paths."""
    paths = {
        f"{section}.{field}"
        for section, model in (("data", DataConfig), ("shaping", ShapingConfig), ("train", TrainConfig))
        for field in model.model_fields
    }
    return paths | {"shaping.p0.first", "shaping.p0.last"}
