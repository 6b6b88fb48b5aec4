"""A sweep's state as its records tell it, for `asha-tune status` and `list`: its parent run, and
of each trial only what the state needs (status, times, failure, a few last metric values).

`status` must answer in well under a second on a sweep of 1,000 trials, while it runs and long
after, from any machine that reaches the store. Reading every trial's whole run (Tracker.child_runs,
every param, tag and metric: about 3 s of CPU for 1,000 trials in MLflow's sqlalchemy store) is
too slow for that, so on a database store (sqlite, PostgreSQL) the trials' rows are read with
three narrow queries on MLflow's own tables (`_sql_rows`: tens of milliseconds); on a tracking
server, or if those tables ever change shape, through MLflow's search (`_searched_rows`, the same
rows). tests/unit/tracking/test_sweep_state.py checks that both give the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from asha_tune.environ import scoped_environ
from asha_tune.errors import ConfigError
from asha_tune.spaces import SearchSpace
from asha_tune.tracking.client import PARENT_RUN_TAG, Tracker
from asha_tune.tracking.records import find_parent, is_sweep, recorded_space, replicate_parents
from asha_tune.tracking.tags import (
    DURATION_TAG,
    FAILURE_TAG,
    GPU_UTILIZATION_METRIC,
    KIND_TAG,
    REHEARSAL_TAG,
    REPLICATE_OF_TAG,
    REPLICATES_TAG,
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


# --- the trials' rows ----------------------------------------------------------------------------


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _row(
    run_id: str, tags: Mapping[str, str], ended_ms: int | None, metrics: Mapping[str, float]
) -> TrialRow:
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


def _sql_store(tracker: Tracker) -> Any | None:
    """MLflow's sqlalchemy store behind the tracker, if it is one (not a tracking server)."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = tracker.client._tracking_client.store
    except Exception:
        return None
    return store if isinstance(store, SqlAlchemyStore) else None


def _sql_rows(store: Any, parent_run_id: str, metrics: list[str]) -> list[TrialRow]:
    """The trials' rows in three queries on MLflow's tables (runs, tags, latest_metrics): the
    runs nested under the parent, not deleted. MLflow's own ORM models name the tables."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlRun, SqlTag
    from sqlalchemy import select

    children: Any = select(SqlTag.run_uuid).where(SqlTag.key == PARENT_RUN_TAG, SqlTag.value == parent_run_id)
    with store.ManagedSessionMaker() as session:
        runs = session.execute(
            select(SqlRun.run_uuid, SqlRun.end_time).where(
                SqlRun.run_uuid.in_(children), SqlRun.lifecycle_stage == "active"
            )
        ).all()
        tags = session.execute(
            select(SqlTag.run_uuid, SqlTag.key, SqlTag.value).where(
                SqlTag.run_uuid.in_(children), SqlTag.key.in_(TRIAL_TAGS)
            )
        ).all()
        values = session.execute(
            select(SqlLatestMetric.run_uuid, SqlLatestMetric.key, SqlLatestMetric.value).where(
                SqlLatestMetric.run_uuid.in_(children), SqlLatestMetric.key.in_(metrics)
            )
        ).all()
    tags_of: dict[str, dict[str, str]] = {}
    for run_id, key, value in tags:
        tags_of.setdefault(run_id, {})[key] = value
    metrics_of: dict[str, dict[str, float]] = {}
    for run_id, key, value in values:
        metrics_of.setdefault(run_id, {})[key] = float(value)
    return [
        _row(run_id, tags_of.get(run_id, {}), ended, metrics_of.get(run_id, {}))
        for run_id, ended in runs
        if KIND_TAG not in tags_of.get(run_id, {})  # a nested confirmation is no trial
    ]


def _searched_rows(
    tracker: Tracker, experiment_id: str, parent_run_id: str, metrics: list[str]
) -> list[TrialRow]:
    """The same rows through MLflow's search (a tracking server): every page of child runs."""
    return [
        _row(
            run.info.run_id,
            run.data.tags,
            run.info.end_time,
            {k: v for k, v in run.data.metrics.items() if k in metrics},
        )
        for run in tracker.child_runs(experiment_id, parent_run_id)
        if KIND_TAG not in run.data.tags
    ]


def trial_rows(
    tracker: Tracker, experiment_id: str, parent_run_id: str, metrics: list[str], fast: bool = True
) -> list[TrialRow]:
    """A sweep's trials, by number (`fast` False: always through MLflow's search)."""
    store = _sql_store(tracker) if fast else None
    rows = None
    if store is not None:
        try:
            rows = _sql_rows(store, parent_run_id, metrics)
        except Exception:  # MLflow's tables changed shape: its search still works
            rows = None
    if rows is None:
        rows = _searched_rows(tracker, experiment_id, parent_run_id, metrics)
    return sorted(rows, key=lambda r: (r.number, r.run_id))


# --- a sweep -------------------------------------------------------------------------------------


def num_trials(tracker: Tracker, parent: Any) -> int | None:
    """The trials a sweep's space asks for: its recorded space (space.json), else the param
    `launch` logged."""
    tree = recorded_space(tracker, parent.info.run_id)
    if tree is not None:
        try:
            return SearchSpace.model_validate(tree).num_trials
        except Exception:  # a space recorded by an older asha-tune that this one no longer reads
            pass
    value = parent.data.params.get("search.num_trials", "")
    return int(value) if value.isdigit() else None


def state_of(tracker: Tracker, parent: Any, with_trials: bool = True) -> SweepState:
    """A sweep's state from its parent run (an MLflow Run); a replicated search's with its
    replicates'. Without `with_trials`, only the parent run's own record."""
    tags, params = dict(parent.data.tags), dict(parent.data.params)
    run_id, experiment_id = parent.info.run_id, parent.info.experiment_id
    trials: list[TrialRow] = []
    replicates: list[SweepState] = []
    if with_trials and REPLICATES_TAG in tags:
        replicates = [state_of(tracker, r) for r in replicate_parents(tracker, parent)]
    elif with_trials:
        metric = params.get("scheduler.metric", VAL_ACC)
        trials = trial_rows(tracker, experiment_id, run_id, metrics_read(metric))
    return SweepState(
        name=tags.get(SWEEP_TAG, parent.info.run_name or run_id),
        run_id=run_id,
        experiment_id=experiment_id,
        started_ms=int(parent.info.start_time or 0),
        ended_ms=parent.info.end_time or None,
        tags=tags,
        params=params,
        num_trials=num_trials(tracker, parent) if with_trials else None,
        metrics=dict(parent.data.metrics),
        trials=trials,
        replicates=replicates,
    )


def sweep_state(tracker: Tracker, name: str) -> SweepState:
    """Sweep `name`'s state, or one line naming the sweeps the store holds."""
    return state_of(tracker, find_parent(tracker, name))


def top_sweeps(tracker: Tracker) -> list[Any]:
    """Every sweep of the store that is not a replicate of another (those are listed with
    their search), newest first: their parent runs."""
    runs = tracker.search_runs(tracker.experiment_ids(), f"tags.`{SWEEP_TAG}` != ''")
    top = [r for r in runs if is_sweep(r) and REPLICATE_OF_TAG not in r.data.tags]
    return sorted(top, key=lambda r: -(r.info.start_time or 0))


def latest_sweep(tracker: Tracker) -> Any:
    """The sweep launched last in the store (`asha-tune status` without a name)."""
    top = top_sweeps(tracker)
    if not top:
        raise ConfigError(
            f"no sweep in {tracker.uri}: launch one, or pass --tracking-uri (the store a sweep used)"
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
