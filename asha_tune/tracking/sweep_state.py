"""A sweep's state as its records tell it, for `asha-tune status` and `list`: its parent run, and
of each trial only what the state needs (status, times, failure, a few last metric values).

`status` must answer in well under a second on a sweep of 1,000 trials, while it runs and long
after, from any machine that reaches the store. Importing MLflow and opening its store alone take
seconds, so the state is computed from `SweepRecords`, a narrow read of the records with two
implementations: `MlflowRecords` (through the Tracker: MLflow's own search, the reference) and
tracking/reader.py (MLflow's tables or its REST API read without importing MLflow, what `status`
and `list` use). tests/unit/tracking/test_reader.py checks that both give the same state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from asha_tune.environ import scoped_environ
from asha_tune.errors import ConfigError
from asha_tune.spaces import SearchSpace
from asha_tune.tracking.client import PARENT_RUN_TAG, Tracker
from asha_tune.tracking.records import is_sweep_tags, no_sweep_error
from asha_tune.tracking.tags import (
    DURATION_TAG,
    FAILURE_TAG,
    GPU_UTILIZATION_METRIC,
    KIND_TAG,
    REHEARSAL_TAG,
    REPLICATE_KIND,
    REPLICATE_OF_TAG,
    REPLICATE_TAG,
    REPLICATES_TAG,
    SPACE_ARTIFACT,
    STARTED_AT_TAG,
    STATUS_TAG,
    SWEEP_TAG,
    TRIAL_NUMBER_TAG,
)
from asha_tune.trial.selection import VAL_ACC, se_key

# What `status` reads of each trial's run: its tags below, and the last value of a few metrics.
TRIAL_TAGS = (
    TRIAL_NUMBER_TAG,
    STATUS_TAG,
    STARTED_AT_TAG,
    DURATION_TAG,
    FAILURE_TAG,
    KIND_TAG,
)
# A command that only looks asks a tracking server once and waits 10 s, not MLflow's four minutes
# of retries (what a sweep's driver wants: a restarted server loses nothing).
IMPATIENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextmanager
def impatient() -> Iterator[None]:
    with scoped_environ(IMPATIENT, keep_existing=True):
        yield


@dataclass(frozen=True)
class TrialRow:
    """One trial of a sweep, as status reads it (`number`, `status`, `metrics`: what
    tracking.best ranks)."""

    number: int
    run_id: str
    status: str
    started_s: float | None  # when it (first) started, the driver's clock
    ended_ms: int | None
    duration_s: float | None  # on an ended trial: its wall time across retries and resumes
    failure: str | None
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepState:
    """A sweep's parent run and its trials; for a replicated search, its replicates instead."""

    name: str
    run_id: str
    experiment_id: str
    started_ms: int
    ended_ms: int | None
    tags: Mapping[str, str]
    params: Mapping[str, str]
    num_trials: int | None  # the trials its space asks for
    metrics: Mapping[str, float] = field(default_factory=dict)  # the parent run's (best_<metric>, ...)
    trials: list[TrialRow] = field(default_factory=list)
    replicates: list[SweepState] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.tags.get(STATUS_TAG, "unknown")

    @property
    def rehearsal(self) -> bool:
        return self.tags.get(REHEARSAL_TAG) == "true"

    @property
    def is_search(self) -> bool:
        return REPLICATES_TAG in self.tags

    @property
    def metric(self) -> str:
        return self.params.get("scheduler.metric", VAL_ACC)

    @property
    def mode(self) -> str:
        return self.params.get("scheduler.mode", "max")

    @property
    def protocol(self) -> str:
        return self.params.get("selection.protocol", "unknown")


def metrics_read(metric: str) -> list[str]:
    """The metrics status reads of each trial: the selection metric, its SE, GPU utilisation."""
    return [metric, se_key(metric), GPU_UTILIZATION_METRIC]


# --- the records read -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """A sweep's parent run, whole: what MLflow's Run holds that a state reads."""

    run_id: str
    experiment_id: str
    name: str | None
    start_ms: int
    end_ms: int | None
    tags: Mapping[str, str]
    params: Mapping[str, str]
    metrics: Mapping[str, float]  # the last value of each


class SweepRecords(Protocol):
    """What a sweep's state is read from: its parent runs whole, its trials narrowly."""

    uri: str

    def sweep_runs(self, name: str | None = None) -> list[RunRecord]:
        """Every run tagged with a sweep's name (that name, if given), in active experiments."""
        ...

    def nested_runs(self, experiment_id: str, parent_run_id: str, kind: str) -> list[RunRecord]:
        """The runs nested under `parent_run_id` whose KIND_TAG is `kind`."""
        ...

    def trial_rows(self, experiment_id: str, parent_run_id: str, metrics: list[str]) -> list[TrialRow]:
        """The runs nested under `parent_run_id` that are trials (no KIND_TAG), in any order."""
        ...

    def load_dict(self, run: RunRecord, artifact_file: str) -> Any:
        """A JSON artifact of a run, or None if it has none."""
        ...


def newest_first(runs: list[RunRecord]) -> list[RunRecord]:
    """MLflow's search order: the latest started first, then by run id."""
    return sorted(runs, key=lambda r: (-r.start_ms, r.run_id))


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def trial_row(
    run_id: str, tags: Mapping[str, str], ended_ms: int | None, metrics: Mapping[str, float]
) -> TrialRow | None:
    """A trial's row from its run's tags, end time and last metric values; None for a run nested
    under a sweep that is no trial (a confirmation, tagged with its kind)."""
    if KIND_TAG in tags:
        return None
    number = tags.get(TRIAL_NUMBER_TAG, "")
    return TrialRow(
        number=int(number) if number.isdigit() else -1,
        run_id=run_id,
        status=tags.get(STATUS_TAG, "unknown"),
        started_s=_number(tags.get(STARTED_AT_TAG)),
        ended_ms=ended_ms or None,
        duration_s=_number(tags.get(DURATION_TAG)),
        failure=tags.get(FAILURE_TAG) or None,
        metrics=dict(metrics),
    )


def run_record(run: Any) -> RunRecord:
    """An MLflow Run as a RunRecord."""
    return RunRecord(
        run_id=run.info.run_id,
        experiment_id=str(run.info.experiment_id),
        name=run.info.run_name,
        start_ms=int(run.info.start_time or 0),
        end_ms=run.info.end_time or None,
        tags=dict(run.data.tags),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
    )


class MlflowRecords:
    """The records through MLflow's client (the Tracker): every search MLflow's own."""

    def __init__(self, tracker: Tracker):
        self.tracker, self.uri = tracker, tracker.uri

    def sweep_runs(self, name: str | None = None) -> list[RunRecord]:
        where = f"tags.`{SWEEP_TAG}` = '{name}'" if name is not None else f"tags.`{SWEEP_TAG}` != ''"
        return [run_record(r) for r in self.tracker.search_runs(self.tracker.experiment_ids(), where)]

    def nested_runs(self, experiment_id: str, parent_run_id: str, kind: str) -> list[RunRecord]:
        return [
            run_record(r) for r in self.tracker.child_runs(experiment_id, parent_run_id, {KIND_TAG: kind})
        ]

    def trial_rows(self, experiment_id: str, parent_run_id: str, metrics: list[str]) -> list[TrialRow]:
        rows = (
            trial_row(
                run.info.run_id,
                run.data.tags,
                run.info.end_time,
                {k: v for k, v in run.data.metrics.items() if k in metrics},
            )
            for run in self.tracker.child_runs(experiment_id, parent_run_id)
        )
        return [row for row in rows if row is not None]

    def load_dict(self, run: RunRecord, artifact_file: str) -> Any:
        return self.tracker.load_dict(run.run_id, artifact_file)


# --- a sweep -------------------------------------------------------------------------------------


def num_trials(records: SweepRecords, parent: RunRecord) -> int | None:
    """The trials a sweep's space asks for: its recorded space (space.json), else the param
    `launch` logged."""
    tree = records.load_dict(parent, SPACE_ARTIFACT)
    if isinstance(tree, dict):
        try:
            return SearchSpace.model_validate(tree).num_trials
        except Exception:  # a space recorded by an older asha-tune that this one no longer reads
            pass
    value = parent.params.get("search.num_trials", "")
    return int(value) if value.isdigit() else None


def replicates_of(records: SweepRecords, parent: RunRecord) -> list[RunRecord]:
    """The replicates' parent runs of a replicated search, by number (records.replicate_parents)."""
    nested = records.nested_runs(parent.experiment_id, parent.run_id, REPLICATE_KIND)
    return sorted(newest_first(nested), key=lambda r: int(r.tags.get(REPLICATE_TAG, 0)))


def state_of(records: SweepRecords, parent: RunRecord, with_trials: bool = True) -> SweepState:
    """A sweep's state from its parent run; a replicated search's with its replicates'. Without
    `with_trials`, only the parent run's own record."""
    tags, params = dict(parent.tags), dict(parent.params)
    trials: list[TrialRow] = []
    replicates: list[SweepState] = []
    if with_trials and REPLICATES_TAG in tags:
        replicates = [state_of(records, r) for r in replicates_of(records, parent)]
    elif with_trials:
        metric = params.get("scheduler.metric", VAL_ACC)
        rows = records.trial_rows(parent.experiment_id, parent.run_id, metrics_read(metric))
        trials = sorted(rows, key=lambda r: (r.number, r.run_id))
    return SweepState(
        name=tags.get(SWEEP_TAG, parent.name or parent.run_id),
        run_id=parent.run_id,
        experiment_id=parent.experiment_id,
        started_ms=parent.start_ms,
        ended_ms=parent.end_ms,
        tags=tags,
        params=params,
        num_trials=num_trials(records, parent) if with_trials else None,
        metrics=dict(parent.metrics),
        trials=trials,
        replicates=replicates,
    )


def find_sweep(records: SweepRecords, name: str) -> RunRecord:
    """Sweep `name`'s parent run, or one line naming the sweeps the store holds (records.find_parent)."""
    runs = [r for r in newest_first(records.sweep_runs(name)) if is_sweep_tags(r.tags)]
    if not runs:
        known = [r.tags[SWEEP_TAG] for r in records.sweep_runs() if PARENT_RUN_TAG not in r.tags]
        raise no_sweep_error(name, records.uri, known)
    return runs[0]


def sweep_state(records: SweepRecords, name: str) -> SweepState:
    """Sweep `name`'s state, or one line naming the sweeps the store holds."""
    return state_of(records, find_sweep(records, name))


def top_sweeps(records: SweepRecords) -> list[RunRecord]:
    """Every sweep of the store that is not a replicate of another (those are listed with
    their search), newest first: their parent runs."""
    runs = newest_first(records.sweep_runs())
    return [r for r in runs if is_sweep_tags(r.tags) and REPLICATE_OF_TAG not in r.tags]


def latest_sweep(records: SweepRecords) -> RunRecord:
    """The sweep launched last in the store (`asha-tune status` without a name)."""
    top = top_sweeps(records)
    if not top:
        raise ConfigError(
            f"no sweep in {records.uri}: launch one, or pass --tracking-uri (the store a sweep used)"
        )
    return top[0]


def recorded_json(tags: Mapping[str, str], key: str) -> dict[str, Any] | None:
    """A tag that holds a JSON object (the driver, its heartbeat, a stop request), or None."""
    text = tags.get(key)
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
