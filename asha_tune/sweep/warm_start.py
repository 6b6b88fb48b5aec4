"""Warm starts: a new sweep's study receives, before it searches, the finished trials of another
sweep whose values its space can express, with their results; the others are listed as skipped.

`past_trials` reads them from MLflow records (each trial's settings from its sweep's recorded
space and its sampled values, its value and per-epoch history of *this* sweep's metric), so a
search can be warm-started from a grid that optimised another metric (paper_search from a
replayed paper_grid: the grid's study holds val_acc, the search optimises acc_cartoon, which the
grid's records hold too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from asha_tune.display import count
from asha_tune.dotted import flatten, get_path
from asha_tune.errors import AshaTuneError, ConfigError, first_line
from asha_tune.spaces import SearchSpace
from asha_tune.sweep.study import (
    ENDED_AS,
    VALUES_ATTR,
    WARM_START_ATTR,
    UnexpressibleError,
    expressed,
    load_recorded,
)
from asha_tune.tracking import Tracker
from asha_tune.tracking.records import recorded_space, sweep_runs, sweep_trials
from asha_tune.tracking.tags import COMPLETED, FAILED, FINAL_STATUSES, SPACE_ARTIFACT
from asha_tune.trial.selection import target_of

__all__ = [
    "WARM_START_ATTR",
    "PastTrial",
    "WarmStart",
    "check_warm_start",
    "past_trials",
    "warm_start",
    "warm_start_from",
]

# A past trial's state as the study takes it: ended, and not failed (a failure says nothing of
# its configuration).
WARM_STATES = {name: state for state, name in ENDED_AS.items() if name != FAILED}


@dataclass(frozen=True)
class PastTrial:
    """A finished trial of another sweep, as a warm start reads it (from a study or records)."""

    source: str  # e.g. "paper_grid trial 3": shown, and kept on the added trial
    state: str  # completed | pruned | failed
    config: dict[str, Any]  # the full trial settings it ran with (TrialConfig.model_dump(mode="json"))
    metric: str  # what `value` and `intermediate` measure
    value: float | None
    intermediate: dict[int, float]  # epoch -> value


@dataclass(frozen=True)
class WarmStart:
    added: list[tuple[str, int]]  # (source, trial number in this study)
    skipped: list[tuple[str, str]]  # (source, why)

    def text(self) -> str:
        lines = [f"warm start: {count(len(self.added), 'trial')} added, {len(self.skipped)} skipped"]
        lines += [f"  added {source} as trial {number}" for source, number in self.added]
        lines += [f"  skipped {source}: {why}" for source, why in self.skipped]
        return "\n".join(lines)


def _values_for(space: SearchSpace, config: dict[str, Any]) -> dict[str, Any]:
    """The values of `space`'s parameters (those active, in file order) that a trial ran with."""
    values: dict[str, Any] = {}
    for name, param in space.parameters.items():
        if not param.active(values):
            continue
        found, value = get_path(config, name)
        if not found:
            raise UnexpressibleError(f"its settings have no {name}")
        values[name] = value
    return values


def _targets_differ(past: list[str], here: list[str], metric: str, split: str) -> str | None:
    """Why a trial's targets make its value another quantity here, if they do. A per-domain
    accuracy, or val_acc on held-out source images (`split`: the protocol's, ProtocolInfo.split),
    does not depend on the other targets."""
    if past == here:
        return None
    per_domain = target_of(metric) in here
    if set(here) <= set(past) and (per_domain or (metric == "val_acc" and split == "source")):
        return None
    ran, has = ", ".join(past), ", ".join(here)
    return f"it ran on targets {ran} (its {metric} depends on them); this space has {has}"


def _fit(space: SearchSpace, past: PastTrial, ignore: tuple[str, ...]) -> tuple[dict, dict, dict]:
    """(values, Optuna params, distributions) for a past trial in `space`, or UnexpressibleError."""
    values = _values_for(space, past.config)
    params, distributions = expressed(space, values)
    try:
        here = space.trial_config(values).model_dump(mode="json")
    except (ValueError, AshaTuneError) as err:
        raise UnexpressibleError(f"this space cannot run its values: {first_line(err)}") from None
    why = _targets_differ(
        past.config.get("data", {}).get("targets", []),
        here["data"]["targets"],
        past.metric,
        space.selection.info.split,
    )
    if why:
        raise UnexpressibleError(why)
    theirs, ours = flatten(past.config), flatten(here)
    for path in sorted(set(theirs) | set(ours)):
        if path in ignore or path == "data.targets" or theirs.get(path) == ours.get(path):
            continue
        raise UnexpressibleError(
            f"it ran with {path} {theirs.get(path)!r}; this space runs {ours.get(path)!r}"
        )
    return values, params, distributions


def _why_not(past: PastTrial, space: SearchSpace) -> str | None:
    if past.state not in WARM_STATES:
        return f"it {past.state}: no result to learn from"
    if past.metric != space.scheduler.metric:
        return f"its value is {past.metric}; this sweep optimises {space.scheduler.metric}"
    if past.state == "completed" and (past.value is None or not math.isfinite(past.value)):
        return "it completed without a finite value"
    if past.state == "pruned" and not any(math.isfinite(v) for v in past.intermediate.values()):
        return "it was stopped before reporting a value"
    return None


def warm_start(
    url: str, study_name: str, trials: list[PastTrial], ignore: tuple[str, ...] = ("train.seed",)
) -> WarmStart:
    """Give a sweep's study, before it searches, the finished trials of another sweep whose
    values its space (the one the study records) can express, with their results; list the
    others with a reason each.

    Expressible: the trial's settings give a value for every active parameter of this space,
    each inside its distribution (the space's own suggest calls decide: `RecordingSuggester`),
    every other setting equals what this space runs (except `ignore`: a seed is noise, not a
    setting the value depends on), its targets make its value the same quantity, and its value
    is of this sweep's metric. COMPLETE trials keep their value, PRUNED ones their epochs'
    values (TPE ranks a pruned trial by its last). Run again, it adds nothing twice.
    """
    study, space = load_recorded(url, study_name)
    why = _cannot_learn(space, study_name)
    if why:
        raise ConfigError(f"warm start: {why}")
    done = {
        t.user_attrs[WARM_START_ATTR]: t.number
        for t in study.get_trials(deepcopy=False)
        if WARM_START_ATTR in t.user_attrs
    }
    added, skipped = [], []
    for past in trials:
        if past.source in done:
            skipped.append((past.source, f"already added (trial {done[past.source]})"))
            continue
        try:
            why = _why_not(past, space)
            if why is None:
                values, params, distributions = _fit(space, past, ignore)
        except UnexpressibleError as err:
            why = str(err)
        if why is not None:
            skipped.append((past.source, why))
            continue
        steps = {int(k): float(v) for k, v in past.intermediate.items() if math.isfinite(v)}
        state = WARM_STATES[past.state]
        value = past.value if state == TrialState.COMPLETE else steps[max(steps)]
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=value,
                params=params,
                distributions=distributions,
                intermediate_values=steps,
                user_attrs={VALUES_ATTR: values, WARM_START_ATTR: past.source},
            )
        )
        number = len(study.trials) - 1
        done[past.source] = number
        added.append((past.source, number))
    return WarmStart(added, skipped)


# --- from MLflow records -----------------------------------------------------------------------------


def past_trials(tracker: Tracker, sweep: str, metric: str) -> tuple[list[PastTrial], list[tuple[str, str]]]:
    """Every ended trial of `sweep` (each replicate's, for a replicated search) as a PastTrial
    whose value is `metric`, from MLflow records: its settings from the space its sweep recorded
    (space.json) and its sampled values, its last value and per-epoch history of `metric`. Trials
    whose records cannot say are returned apart, with why."""
    found: list[PastTrial] = []
    skipped: list[tuple[str, str]] = []
    for parent in sweep_runs(tracker, sweep):
        name, pid = parent.name, parent.run_id
        tree = recorded_space(tracker, pid)
        if tree is None:
            raise ConfigError(
                f"--warm-start {sweep}: sweep {name} records no space ({SPACE_ARTIFACT}): cannot read it"
            )
        space = SearchSpace.model_validate(tree)
        for record in sweep_trials(tracker, parent.experiment_id, pid):
            source = f"{name} trial {record.number}"
            if record.status not in FINAL_STATUSES:
                skipped.append((source, f"it did not end (it is {record.status})"))
                continue
            try:
                config = space.trial_config(record.values).model_dump(mode="json")
            except (ValueError, AshaTuneError) as err:
                skipped.append((source, f"its recorded space cannot rebuild it: {first_line(err)}"))
                continue
            if record.status != FAILED and metric not in record.metrics:
                skipped.append((source, f"its records hold no {metric}"))
                continue
            history = tracker.metric_history(record.run_id, metric) if record.status != FAILED else {}
            value = record.metrics.get(metric) if record.status == COMPLETED else None
            found.append(PastTrial(source, record.status, config, metric, value, history))
    return found, skipped


def warm_start_from(tracker: Tracker, sweep: str, study_url: str, study_name: str) -> WarmStart:
    """`--warm-start SWEEP`: the study `study_name` (a new sweep's, before it searches) receives
    the ended trials of `sweep` its space can express, valued by its own scheduler metric."""
    _, space = load_recorded(study_url, study_name)
    trials, unreadable = past_trials(tracker, sweep, space.scheduler.metric)
    result = warm_start(study_url, study_name, trials)
    return WarmStart(result.added, unreadable + result.skipped)


def check_warm_start(space: SearchSpace, name: str, sweep: str) -> None:
    """What a warm start needs, checked before anything is written (one line if not)."""
    if sweep == name:
        raise ConfigError(f"--warm-start {sweep}: a sweep cannot be warm-started from itself")
    why = _cannot_learn(space, f"space {space.name}")
    if why:
        raise ConfigError(f"--warm-start {sweep}: {why}")


def _cannot_learn(space: SearchSpace, named: str) -> str | None:
    """Why the search of a space (`named`: the space, or the study that records it) cannot learn
    from earlier trials, if it cannot: the one wording of the refusal, from the CLI's check (a dry
    run's too) and from `warm_start` itself."""
    if space.search.algorithm not in ("grid", "list"):
        return None
    return (
        f"{named} runs a {space.search.algorithm} of configurations, whatever was run before; "
        "warm-start an optuna or random search"
    )
