"""MLflow runs read back as records: the one reader of what sweeps stored (DomainBed's
`load_records`). Reports, comparisons, warm starts and the sweep's own ending are computed from
what it returns, never from a running sweep's memory (STYLE.md).

- a trial's run as a TrialRecord; the trials of a sweep (`sweep_trials`)
- a sweep by name: its parent run, or its replicates' (`find_parent`, `sweep_runs`)
- a sweep whole, as `compare` reads it: a Sweep of TrialRuns with its confirmations (`read_sweeps`)

Every search reads every page (Tracker.search_runs).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from asha_tune.display import count
from asha_tune.errors import ConfigError
from asha_tune.spaces import SearchSpace
from asha_tune.spaces.space import CONFIGURATION_KEY
from asha_tune.tracking.client import PARENT_RUN_TAG, Tracker, local_store
from asha_tune.tracking.tags import (
    COMPLETED,
    CONFIRMATION_KIND,
    CONFIRMS_TRIAL_TAG,
    DEVICE_PARAM,
    DEVICE_TIME_METRICS,
    EPOCHS_RUN_TAG,
    FAILED,
    FAILURE_TAG,
    FINAL_STATUSES,
    GPU_UTILIZATION_METRIC,
    KIND_TAG,
    REHEARSAL_TAG,
    REPLICATE_KIND,
    REPLICATE_OF_TAG,
    REPLICATE_SEEDS_TAG,
    REPLICATE_TAG,
    REPLICATES_TAG,
    RESUMED_ON_DEVICE_TAG,
    SPACE_ARTIFACT,
    STATUS_TAG,
    STUDY_URL_TAG,
    SWEEP_TAG,
    TRIAL_NUMBER_TAG,
    WARM_START_ADDED_TAG,
    WARM_START_TAG,
)
from asha_tune.trial.selection import CHANCE_PREFIX, SIZE_PREFIX, VAL_ACC

# The settings a trial's run logs as params that `compare`'s slice plots and heat maps read.
P0 = "shaping.p0"
CONVS = "shaping.convs"


@dataclass(frozen=True)
class TrialRecord:
    number: int
    run_id: str
    status: str  # completed | pruned | failed | running | interrupted
    epochs: int
    values: dict[str, Any]
    metrics: dict[str, float]  # the last value of every metric
    constants: dict[str, float] = field(default_factory=dict)  # n_<set>, chance_<set> (logged as params)


def all_failed(trials: Iterable[Any]) -> bool:
    """Every trial of a sweep failed (and it had some): its parent run ends failed, the command
    that ran it exits 1 (cli.sweep_exit)."""
    statuses = [t.status for t in trials]
    return bool(statuses) and all(s == FAILED for s in statuses)


def all_failed_text(n: int, noun: str = "trial") -> str:
    """`all 3 trials failed`: why a sweep whose every trial failed ended failed."""
    return f"all {count(n, noun)} failed"


def constants_from_params(params: dict[str, Any]) -> dict[str, float]:
    """n_<set> and chance_<set> as numbers (MLflow keeps params as strings)."""
    out = {}
    for key, value in params.items():
        if key.startswith((SIZE_PREFIX, CHANCE_PREFIX)):
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                pass
    return out


def sweep_trials(tracker: Tracker, experiment_id: str, parent_run_id: str) -> list[TrialRecord]:
    """The sweep's trial runs; runs nested under it that are not trials (a confirmation's parent
    run, tagged with its kind) are left out."""
    runs = tracker.child_runs(experiment_id, parent_run_id)
    return sorted(
        (trial_record(run) for run in runs if KIND_TAG not in run.data.tags), key=lambda r: r.number
    )


def trial_record(run: Any) -> TrialRecord:
    """A trial's MLflow run as a TrialRecord (an MLflow Run object)."""
    tags, params = run.data.tags, run.data.params
    return TrialRecord(
        number=int(tags.get(TRIAL_NUMBER_TAG, -1)),
        run_id=run.info.run_id,
        status=tags.get(STATUS_TAG, "unknown"),
        epochs=int(tags.get(EPOCHS_RUN_TAG, run.data.metrics.get("epoch", 0))),
        values=json.loads(params.get("search", "{}")),
        metrics=dict(run.data.metrics),
        constants=constants_from_params(params),
    )


def recorded_space(tracker: Tracker, parent_run_id: str) -> dict[str, Any] | None:
    """The space a sweep recorded on its parent run (SPACE_ARTIFACT), or None if it has none."""
    tree = tracker.load_dict(parent_run_id, SPACE_ARTIFACT)
    return tree if isinstance(tree, dict) else None


# --- a confirmation's runs --------------------------------------------------------------------------
# `asha-tune confirm` re-runs trial N of a sweep as the listed configuration `trial-N` (its values
# without its seed) crossed with new seeds: what it runs (sweep/confirm.py) and what its report
# reads back (analysis/confirmation.py) name them so.

SEED = "train.seed"


def configuration_id(record: TrialRecord) -> str:
    return f"trial-{record.number}"


def trial_values(space: SearchSpace, record: TrialRecord) -> dict[str, Any]:
    """A trial's settings by path (a listed configuration's resolved), without its seed."""
    values = dict(record.values)
    if CONFIGURATION_KEY in values:
        values = {**space.configuration(values.pop(CONFIGURATION_KEY)).values, **values}
    values.pop(SEED, None)
    return values


# --- a sweep, found by name --------------------------------------------------------------------------


def store_there(uri: str) -> None:
    """A sqlite store to read sweeps from that is not there is one line, not a new store."""
    db = local_store(uri)
    if db is not None and not db.is_file():
        raise ConfigError(f"no MLflow store at {db}: pass --tracking-uri (the store the sweeps used)")


def open_store(uri: str) -> Tracker:
    """The store to read sweeps from (`store_there`)."""
    store_there(uri)
    return Tracker(uri)


def is_sweep_tags(tags: Mapping[str, str]) -> bool:
    """A sweep's parent run, by its tags: a sweep of its own, a replicated search, or one of its
    replicates."""
    if tags.get(KIND_TAG) == REPLICATE_KIND:
        return True
    return KIND_TAG not in tags and PARENT_RUN_TAG not in tags


def is_sweep(run: Any) -> bool:
    """A sweep's parent run (an MLflow Run): `is_sweep_tags`."""
    return is_sweep_tags(run.data.tags)


def no_sweep_error(name: str, uri: str, known: Iterable[str]) -> ConfigError:
    """No sweep `name` in store `uri`: one line naming the sweeps it holds (`known`)."""
    names = sorted(set(known))
    hint = f" (sweeps there: {', '.join(names)})" if names else " (it holds no sweep)"
    return ConfigError(f"no sweep named {name} in {uri}{hint}")


def find_parent(tracker: Tracker, name: str) -> Any:
    """Sweep `name`'s parent run (an MLflow Run), or one line naming the sweeps the store holds."""
    ids = tracker.experiment_ids()
    runs = [r for r in tracker.search_runs(ids, f"tags.`{SWEEP_TAG}` = '{name}'") if is_sweep(r)]
    if not runs:
        every = tracker.search_runs(ids, f"tags.`{SWEEP_TAG}` != ''")
        raise no_sweep_error(
            name, tracker.uri, (r.data.tags[SWEEP_TAG] for r in every if PARENT_RUN_TAG not in r.data.tags)
        )
    return runs[0]


def rehearsal_refusal(name: str) -> str:
    """Why a rehearsal (`launch --rehearse`: simulated scores) is never read as results."""
    return (
        f"sweep {name} is a rehearsal (launch --rehearse: simulated trials): its scores are not "
        "results, so compare, report, confirm and warm starts refuse it"
    )


def replicate_parents(tracker: Tracker, parent: Any) -> list[Any]:
    """The replicates' parent runs of a replicated search, by number; else the sweep itself."""
    if REPLICATES_TAG not in parent.data.tags:
        return [parent]
    nested = tracker.child_runs(parent.info.experiment_id, parent.info.run_id, {KIND_TAG: REPLICATE_KIND})
    return sorted(nested, key=lambda r: int(r.data.tags.get(REPLICATE_TAG, 0)))


def sweep_parents(tracker: Tracker, name: str) -> list[Any]:
    """The parent runs whose trials make up sweep `name`: its own, or its replicates'; one line
    for a rehearsal, whose scores are no results."""
    parent = find_parent(tracker, name)
    if parent.data.tags.get(REHEARSAL_TAG) == "true":
        raise ConfigError(rehearsal_refusal(name))
    return replicate_parents(tracker, parent)


@dataclass(frozen=True)
class SweepRun:
    """A sweep's parent run as reading its trials needs it."""

    name: str
    run_id: str
    experiment_id: str


def sweep_runs(tracker: Tracker, name: str) -> list[SweepRun]:
    """The sweeps whose trials make up sweep `name`: itself, or each replicate of a replicated search."""
    return [
        SweepRun(p.data.tags[SWEEP_TAG], p.info.run_id, p.info.experiment_id)
        for p in sweep_parents(tracker, name)
    ]


# --- a sweep whole, as compare reads it --------------------------------------------------------------


@dataclass(frozen=True)
class TrialRun:
    record: TrialRecord
    ended_ms: int
    device_s: float  # sum over its logged epochs of time_train + time_eval
    configuration: str | None
    n: dict[str, int]  # evaluation set sizes (n_<domain>), from the run's params
    mode: str | None = None  # its shaping mode (baseline, random, ...), from the run's params
    settings: dict[str, Any] = field(default_factory=dict)  # shaping.p0 and shaping.convs it ran with
    gpu_use: tuple[float, ...] = ()  # each logged epoch's GPU utilisation, %; none without a GPU


@dataclass
class Sweep:
    name: str
    parent_run_id: str
    experiment_id: str
    protocol: str
    algorithm: str
    trials: list[TrialRun]  # ended trials, in order of completion
    published: dict[str, dict[str, float]]  # configuration id -> published figures (its space)
    confirmations: dict[int, list[dict[str, float]]] = field(default_factory=dict)  # trial -> runs
    metric: str = VAL_ACC  # the scheduler's (and the search's) selection metric
    mode: str = "max"
    family: str = ""  # a replicate's replicated search; "" for a sweep of its own
    family_run_id: str | None = None  # that search's parent run
    replicate: int = 0
    seeds: str = ""  # a replicate's seeds, as its parent run says
    study_url: str | None = None
    warm_start: str | None = None  # the sweep whose trials its study received first
    warm_added: int = 0

    @property
    def lists_configurations(self) -> bool:
        """A sweep of listed configurations (search.algorithm list), such as the paper's grid
        replayed: compare's baseline, not a search."""
        return self.algorithm == "list"

    @property
    def search(self) -> str:
        """The search this sweep is one run of: its replicated search's name, or its own."""
        return self.family or self.name

    @property
    def gpu_percent(self) -> float | None:
        """Its mean GPU utilisation over every epoch its ended trials logged; None without GPUs."""
        epochs = [u for t in self.trials for u in t.gpu_use]
        return sum(epochs) / len(epochs) if epochs else None


def read_sweeps(tracker: Tracker, name: str) -> list[Sweep]:
    """A sweep, or every replicate of a replicated search (NAME.r0, NAME.r1, ...)."""
    return [_read(tracker, parent) for parent in sweep_parents(tracker, name)]


def _device_seconds(tracker: Tracker, run: Any) -> float:
    history = tracker.client.get_metric_history
    return sum(m.value for key in DEVICE_TIME_METRICS for m in history(run.info.run_id, key))


def _gpu_use(tracker: Tracker, run: Any) -> tuple[float, ...]:
    """Its epochs' GPU utilisation; read only where it logged any (a CPU trial costs no call)."""
    if GPU_UTILIZATION_METRIC not in run.data.metrics:
        return ()
    history = tracker.client.get_metric_history(run.info.run_id, GPU_UTILIZATION_METRIC)
    return tuple(m.value for m in sorted(history, key=lambda m: m.step))


def _settings(params: dict[str, str]) -> dict[str, Any]:
    """shaping.p0 (a number, where it is one) and shaping.convs, as the run logged them."""
    out: dict[str, Any] = {}
    try:
        out[P0] = float(params[P0])
    except (KeyError, ValueError):
        pass
    try:
        convs = json.loads(params.get(CONVS, "null"))
        if isinstance(convs, list) and convs:
            out[CONVS] = convs
    except ValueError:
        pass
    return out


def _trial(tracker: Tracker, run: Any) -> TrialRun:
    record = trial_record(run)
    values, params = record.values, run.data.params
    n = {k[2:]: int(v) for k, v in params.items() if k.startswith("n_") and v.isdigit()}
    return TrialRun(
        record,
        int(run.info.end_time or 0),
        _device_seconds(tracker, run),
        values.get(CONFIGURATION_KEY),
        n,
        params.get("shaping.mode"),
        _settings(params),
        _gpu_use(tracker, run),
    )


def _confirmations(tracker: Tracker, experiment_id: str, parent_run_id: str) -> dict[int, list[dict]]:
    """Confirmation runs nested under the sweep's parent: the last metrics of each repeat, by trial."""
    found: dict[int, list[dict[str, float]]] = {}
    for confirmation in tracker.child_runs(experiment_id, parent_run_id, {KIND_TAG: CONFIRMATION_KIND}):
        for run in tracker.child_runs(experiment_id, confirmation.info.run_id):
            number = run.data.tags.get(CONFIRMS_TRIAL_TAG)
            if number is not None and run.data.tags.get(STATUS_TAG) == COMPLETED:
                found.setdefault(int(number), []).append(dict(run.data.metrics))
    return found


def _read(tracker: Tracker, parent: Any) -> Sweep:
    name = parent.data.tags[SWEEP_TAG]
    pid, experiment_id = parent.info.run_id, parent.info.experiment_id
    trials = [
        _trial(tracker, r)
        for r in tracker.child_runs(experiment_id, pid)  # ended trials; not a nested confirmation
        if KIND_TAG not in r.data.tags and r.data.tags.get(STATUS_TAG) in FINAL_STATUSES
    ]
    trials.sort(key=lambda t: (t.ended_ms, t.record.number))
    space = recorded_space(tracker, pid) or {}
    published = {c["id"]: dict(c.get("published") or {}) for c in space.get("configurations", [])}
    params, tags = parent.data.params, parent.data.tags
    return Sweep(
        name,
        pid,
        experiment_id,
        params.get("selection.protocol", "unknown"),
        params.get("search.algorithm", "unknown"),
        trials,
        published,
        _confirmations(tracker, experiment_id, pid),
        metric=params.get("scheduler.metric", VAL_ACC),
        mode=params.get("scheduler.mode", "max"),
        family=tags.get(REPLICATE_OF_TAG, ""),
        family_run_id=tags.get(PARENT_RUN_TAG) if REPLICATE_OF_TAG in tags else None,
        replicate=int(tags.get(REPLICATE_TAG, 0)),
        seeds=tags.get(REPLICATE_SEEDS_TAG, ""),
        study_url=tags.get(STUDY_URL_TAG),
        warm_start=tags.get(WARM_START_TAG),
        warm_added=int(tags.get(WARM_START_ADDED_TAG, 0)),
    )


# --- a sweep's provenance (asha-tune report) ----------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """A sweep's parent run and its trials' runs, as recorded (tracking reads them)."""

    started_ms: int | None = None
    ended_ms: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    space: Mapping[str, Any] = field(default_factory=dict)  # space.json
    devices: Mapping[str, str] = field(default_factory=dict)  # trial run id -> where it computed
    failures: Mapping[str, str] = field(default_factory=dict)  # trial run id -> why it failed


def read_provenance(tracker: Tracker, sweep: Sweep) -> Provenance:
    """A sweep's parent run (tags, params, dates, space.json) and its trials' devices and failures."""
    run = tracker.client.get_run(sweep.parent_run_id)
    children = tracker.child_runs(sweep.experiment_id, sweep.parent_run_id)
    devices, failures = {}, {}
    for child in children:
        params, tags = child.data.params, child.data.tags
        device = tags.get(RESUMED_ON_DEVICE_TAG) or params.get(DEVICE_PARAM)
        if device:
            first = params.get(DEVICE_PARAM)
            devices[child.info.run_id] = device if first in (None, device) else f"{first}, then {device}"
        if tags.get(FAILURE_TAG):
            failures[child.info.run_id] = tags[FAILURE_TAG]
    return Provenance(
        run.info.start_time,
        run.info.end_time,
        dict(run.data.tags),
        dict(run.data.params),
        tracker.load_dict(sweep.parent_run_id, SPACE_ARTIFACT) or {},
        devices,
        failures,
    )
