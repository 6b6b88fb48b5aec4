"""The search space: fixed sections, the search and scheduler settings, and what is searched.

A space names each searched parameter once, by its TrialConfig path (`shaping.p0`,
`shaping.convs`, `train.lr`, ...), and turns a set of sampled values into a full TrialConfig.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from asha_tune.dotted import set_path
from asha_tune.spaces.params import Param, Suggester
from asha_tune.trial.config import (
    DOMAINS,
    DataConfig,
    SelectionConfig,
    ShapingConfig,
    TrainConfig,
    TrialConfig,
)
from asha_tune.trial.registry import PAPER_PROTOCOL, scored_by
from asha_tune.trial.score_info import SCORE_INFO, ScoreInfo
from asha_tune.trial.selection import TARGET_ACC, domain_acc, label_free, score_key, target_of


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # list: the space's explicit `configurations` (each crossed with any grid parameters), in order.
    algorithm: Literal["optuna", "random", "grid", "list"] = "optuna"
    num_trials: int | None = Field(default=None, ge=1)
    # Run only the configurations whose id matches one of these patterns (fnmatch: "da-*").
    only: list[str] = []
    max_concurrent: int = Field(default=2, ge=1)
    seed: int = 0
    max_failures: int = Field(default=1, ge=0)  # retries of a crashed trial, from its checkpoint
    # One trial at a time, so every proposal and every stopping decision sees the same history:
    # two runs of the sweep then agree exactly (on the same device).
    reproducible: bool = False
    # Independent runs of the whole search (sweep/replicated.py), each with its own sampler, trial
    # and split seeds (sweep/replicated.py replicate_seeds): the winner's spread, not one draw.
    replicates: int = Field(default=1, ge=1)

    @property
    def concurrency(self) -> int:
        return 1 if self.reproducible else self.max_concurrent


# What a protocol other than oracle never lets the scheduler or the search optimise (PACS'; for
# any dataset: is_reported_target_metric).
REPORTED_TARGET_METRICS = frozenset({"target_acc", *(f"acc_{d}" for d in DOMAINS)})


def is_reported_target_metric(metric: str) -> bool:
    """target_acc or an acc_<domain>: a trial reports acc_ only for its targets, whatever the
    dataset (a source's accuracy is source_acc, its held-out images' val_acc)."""
    return metric == TARGET_ACC or target_of(metric) is not None


def target_metrics(data: DataConfig) -> set[str]:
    """acc_<target> for each target a configuration names (the defaults resolved where the
    dataset names its domains; `folder`'s are known only from the data root)."""
    targets = data.target_domains or ()
    return {domain_acc(t) for t in targets}


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


CONFIGURATION_KEY = "configuration"  # in a trial's values: the id of its explicit configuration


class Configuration(BaseModel):
    """One explicit trial of a list space: trial settings by path, and reference figures if any.

    `published` holds figures someone else reported for this configuration (e.g. the paper's), by
    metric name (`acc_cartoon`, ...): reference data for comparison, never our results.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[A-Za-z0-9_.,+=-]+$")
    values: dict[str, Any] = {}  # TrialConfig paths, as in `parameters` (fixed values)
    published: dict[str, float] = {}
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
    def _label_free_defaults(cls, tree: Any) -> Any:
        """Under a label-free protocol the scheduler selects on its score by default, in the
        score's direction (entropy: min), unless the space says otherwise (then checked below)."""
        if not isinstance(tree, dict):
            return tree
        info = label_free(str(_protocol_of(tree)))
        scheduler = tree.get("scheduler", {})
        if info is None or not isinstance(scheduler, dict):
            return tree
        filled = {"metric": info.metric, **scheduler}
        filled.setdefault("mode", info.direction if score_of(str(filled["metric"])) else "max")
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
        metrics |= target_metrics(self.data)
        metrics |= {i.metric for i in SCORE_INFO.values()}
        metrics |= {score_key(name, t) for name in SCORE_INFO for t in self.data.target_domains or ()}
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
        for pattern in self.search.only:
            if not fnmatch.filter(ids, pattern):
                raise ValueError(f"search.only: {pattern!r} matches no configuration (ids: {', '.join(ids)})")

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
