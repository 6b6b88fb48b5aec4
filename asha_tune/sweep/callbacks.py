"""Driver-side Tune callbacks: MLflow child runs, and the progress line (sweep/progress.py).

Logging happens on the driver, so trial workers need no access to the tracking store. Child
runs are keyed by the Optuna trial number, which a trial keeps across retries and resumes, so
a resumed sweep finds its runs again instead of duplicating them.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from asha_tune.display import count
from asha_tune.spaces import SearchSpace
from asha_tune.spaces.space import CONFIGURATION_KEY
from asha_tune.sweep import progress
from asha_tune.sweep.disk import CHECK_EVERY_S, stop_if_full
from asha_tune.sweep.keys import (
    FAILED_KEY,
    FAILURE_KEY,
    NODE_KEY,
    TRIAL_NUMBER_KEY,
    VALUES_KEY,
    DriverState,
)
from asha_tune.sweep.progress import Best
from asha_tune.sweep.ray_compat import reported_result
from asha_tune.sweep.settings import Extension, extension_of
from asha_tune.sweep.study import StudyHandle
from asha_tune.sweep.writer import WRITE_EVERY_S, RecordWriter, close_writer, writer_for
from asha_tune.tracking import Tracker
from asha_tune.tracking.tags import (
    COMPLETED,
    DEVICE_PARAM,
    DURATION_TAG,
    EPOCHS_RUN_TAG,
    EXTENSION_TAG,
    FAILED,
    FAILURE_TAG,
    FINAL_STATUSES,
    GPU_UTILIZATION_METRIC,
    MODE_TAG,
    NODE_TAG,
    NODES_TAG,
    PRUNED,
    RAY_TRIAL_TAG,
    REHEARSAL_TAG,
    RESUMED_FROM_TAG,
    RESUMED_ON_DEVICE_TAG,
    RETRIES_TAG,
    RUNNING,
    STARTED_AT_TAG,
    STATUS_TAG,
    TRIAL_NUMBER_TAG,
    is_epoch_metric,
)
from asha_tune.tracking.trials import trial_tags
from asha_tune.trial import selection
from asha_tune.trial.selection import DEVICE_KEY


def trial_status(result: dict[str, Any], max_epochs: int) -> str:
    """How a trial that ended without a crash ended: diverged, stopped early, or ran through."""
    if result.get(FAILED_KEY):
        return FAILED
    return PRUNED if result.get("epoch", 0) < max_epochs else COMPLETED


def run_duration(wall_s: float, result: dict[str, Any]) -> float:
    """A run's duration in seconds: the wall time since it started (millisecond stamps), never less
    than the compute its own timings report (`time_total`, across retries and resumes)."""
    return round(max(wall_s, float(result.get("time_total") or 0.0)), 3)


def error_reason(trial: Any) -> str:
    """The last line of the trial's error file, e.g. 'DataError: cannot read image ...'."""
    path = trial.error_file
    if path and Path(path).is_file():
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:2000]
    return "the trial raised an error (no error file)"


def failure_line(trial: Any, result: dict[str, Any] | None) -> str:
    """One line per failed trial for the terminal; tracebacks stay in files."""
    number = int(trial.config[TRIAL_NUMBER_KEY])
    if result and result.get(FAILED_KEY):
        return f"trial {number} failed: {result.get(FAILURE_KEY)} (not retried: it would fail again)"
    n = trial.num_failures - 1  # Tune counts the failure that ended it
    retries = f" after {count(n, 'retry', 'retries')}" if n > 0 else ""
    where = f" (traceback: {trial.error_file})" if trial.error_file else ""
    return f"trial {number} failed{retries}: {error_reason(trial)}{where}"


@dataclass
class _ChildRun:
    """A trial's child run as the driver knows it, and what waits to be written to it (the
    callback's lock guards the fields below `pending`)."""

    number: int
    values: dict[str, Any]
    started_at: float
    run_id: str | None = None  # None until the writer has created it
    final: bool = False  # ended in MLflow, or its end is queued
    params: dict[str, str] | None = None  # an existing run's params (resume); None for a new run
    logged: set[int] | None = None  # epochs already in MLflow; None: not read yet (a resumed run)
    nodes: list[str] = field(default_factory=list)
    device: str | None = None
    restarted: bool = False  # its trial (re)started and has reported nothing since
    described: bool = False  # its constants (sizes, split) are queued
    # pending: what the next write sends
    create: bool = False
    reopen: bool = False
    new_params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    epochs: dict[int, tuple[int, dict[str, float]]] = field(default_factory=dict)  # epoch -> (ms, metrics)
    finals: list[tuple[str, float, int, int]] = field(default_factory=list)
    end: str | None = None


class TrackingCallback(DriverState, Callback):
    """A child run per trial, written off Tune's event loop by the sweep's RecordWriter (writer.py):
    each event only notes what is to be written, so no trial waits in `report` on MLflow.

    A trial's run is created with its params and tags in one `log_batch`, its epochs go in
    batches, and its end in one more with the run's end: about four calls per trial on a tracking
    store, whatever its number of epochs. The child runs of a resumed sweep are read once, a page
    at a time, at the first event; an epoch already logged (a trial replayed from its checkpoint
    after a resume) keeps its first record."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        space: SearchSpace,
        configuration_tags: dict[str, dict[str, str]] | None = None,
        rehearsal: bool = False,
        records: str | None = None,
        extensions: list[Extension] | None = None,
    ):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.space = space
        self.configuration_tags = configuration_tags or {}  # extra child-run tags by configuration id
        self.rehearsal = rehearsal  # launch --rehearse: every child run is marked
        self.records = records or parent_run_id  # the sweep's writer (shared with the searcher)
        self.extensions = extensions or []  # asha-tune extend: its trials' runs are tagged
        self._reset()

    def _reset(self) -> None:
        self._tracker: Tracker | None = None
        self._writes: Any = None  # the writer's Tracker (in the records process, if any)
        self._runs: dict[int, _ChildRun] | None = None  # trial number -> its run; None: not read yet
        self._lock = threading.Lock()

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.tracking_uri)
        return self._tracker

    @property
    def writer(self) -> RecordWriter:
        return writer_for(self.records, self.space.num_trials)

    # -- the event loop's side: note what is to be written --------------------------------------------

    def _known(self) -> dict[int, _ChildRun]:
        """The sweep's child runs so far, read once (a resumed sweep's; a new sweep has none)."""
        if self._runs is None:
            runs: dict[int, _ChildRun] = {}
            for run in self.tracker.child_runs(self.experiment_id, self.parent_run_id):
                number = run.data.tags.get(TRIAL_NUMBER_TAG)
                if number is None or not number.isdigit() or int(number) in runs:
                    continue
                tags, params = run.data.tags, dict(run.data.params)
                runs[int(number)] = _ChildRun(
                    number=int(number),
                    values={},
                    started_at=float(tags.get(STARTED_AT_TAG) or time.time()),
                    run_id=run.info.run_id,
                    final=tags.get(STATUS_TAG) in FINAL_STATUSES,
                    params=params,
                    nodes=[n for n in tags.get(NODES_TAG, "").split(",") if n],
                    device=params.get(DEVICE_PARAM),
                )
            self._runs = runs
        return self._runs

    def _child(self, trial: Any) -> _ChildRun:
        number = int(trial.config[TRIAL_NUMBER_KEY])
        runs = self._known()
        run = runs.get(number)
        if run is None:
            run = runs[number] = _ChildRun(number, trial.config[VALUES_KEY], time.time(), create=True)
        elif not run.values:
            run.values = trial.config[VALUES_KEY]
        return run

    def _queue(self, run: _ChildRun, wait_s: float = WRITE_EVERY_S, end: bool = False) -> None:
        self.writer.touch(run.number, "mlflow", lambda: self._write(run), wait_s, end=end)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run = self._child(trial)
        if run.final:
            return
        with self._lock:
            run.tags[RAY_TRIAL_TAG] = trial.trial_id
            run.reopen = run.run_id is not None or run.params is not None
            run.restarted = True
        self._queue(run)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run = self._child(trial)
        epoch = int(result.get("epoch", 0))
        failed = bool(result.get(FAILED_KEY))
        with self._lock:
            if run.restarted:
                run.restarted = False
                if epoch > 1:  # a retried or resumed trial went on from its checkpoint
                    run.tags[RESUMED_FROM_TAG] = epoch - 1
            node = result.get(NODE_KEY)
            if not run.final and node and (not run.nodes or run.nodes[-1] != node):
                run.nodes.append(node)  # where the trial ran (a retry or resume may move it)
                run.tags.update({NODE_TAG: node, NODES_TAG: ",".join(run.nodes)})
            device = result.get(DEVICE_KEY)
            if device and run.device != device and not failed:
                if run.device is None and DEVICE_PARAM not in (run.params or {}):
                    run.new_params[DEVICE_PARAM] = device  # params cannot change: a later one is a tag
                else:
                    run.tags[RESUMED_ON_DEVICE_TAG] = device
                run.device = device
            if run.final or failed:
                return
            constants = selection.constants_of(result)
            if constants and not run.described:  # once, as params (same values on resume)
                first = selection.FIRST_ATTEMPT_CONSTANTS & set(run.params or {})
                run.new_params.update({k: v for k, v in constants.items() if k not in first})
                run.described = True
            if epoch not in run.epochs:  # an epoch replayed after a resume keeps its first record
                metrics = {k: v for k, v in result.items() if is_epoch_metric(k)}
                run.epochs[epoch] = (int(time.time() * 1000), metrics)
        self._queue(run)

    def _finish(self, trial: Any, status: str, tags: dict[str, Any]) -> None:
        run = self._child(trial)
        if run.final:
            return
        result = trial.last_result or {}
        epoch = int(result.get("epoch", 0))
        now = int(time.time() * 1000)
        with self._lock:
            if status != FAILED:
                run.finals += [
                    (f"final_{k}", float(v), epoch, now)
                    for k, v in result.items()
                    if is_epoch_metric(k) and isinstance(v, (int, float))
                ]
            run.tags.update(
                {
                    **tags,
                    STATUS_TAG: status,
                    EPOCHS_RUN_TAG: epoch,
                    DURATION_TAG: run_duration(time.time() - run.started_at, result),
                    RETRIES_TAG: trial.num_failures,
                }
            )
            run.end, run.final = status, True
        self._queue(run, 0.0, end=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        status = trial_status(result, self.space.train.epochs)
        tags = {FAILURE_TAG: result[FAILURE_KEY]} if status == FAILED else {}
        self._finish(trial, status, tags)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, FAILED, {FAILURE_TAG: error_reason(trial)})

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.writer.check()  # a failed write stops the sweep at once

    def get_state(self) -> dict | None:
        """Tune asks before it saves its experiment snapshot (what `resume` restarts from): every
        record of what the snapshot holds is written first."""
        self.writer.flush()
        return None

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        close_writer(self.records)

    # -- the writer's side ------------------------------------------------------------------------------

    def _extension_tag(self, number: int) -> dict[str, str]:
        extension = extension_of(self.extensions, number)
        return {} if extension is None else {EXTENSION_TAG: str(extension)}

    def _write(self, run: _ChildRun) -> None:
        """One trial's pending records, in one `log_batch` where they fit (writer thread)."""
        with self._lock:
            create, reopen, end = run.create, run.reopen, run.end
            params, tags, epochs, finals = run.new_params, run.tags, run.epochs, run.finals
            run.create = run.reopen = False
            run.end = None
            run.new_params, run.tags, run.epochs, run.finals = {}, {}, {}, []
        if self._writes is None:
            self._writes = self.writer.made(self.tracker, Tracker, self.tracking_uri)
        tracker = self._writes
        if create or (run.params is not None and "search" not in run.params):
            config = self.space.trial_config(run.values)
            params = {**self._trial_params(run.values, config), **params}
            if run.params is not None:  # the driver died between creating the run and filling it
                run.params["search"] = params["search"]
        if create:
            run.run_id = tracker.start_run(
                self.experiment_id,
                name=f"trial-{run.number:03d}",
                parent_run_id=self.parent_run_id,
                tags={
                    TRIAL_NUMBER_TAG: str(run.number),
                    STARTED_AT_TAG: f"{run.started_at:.3f}",
                    MODE_TAG: config.shaping.mode,
                    **trial_tags(config, self.space.scheduler.metric, self.space.scheduler.mode),
                    **self.configuration_tags.get(str(run.values.get(CONFIGURATION_KEY, "")), {}),
                    **({REHEARSAL_TAG: "true"} if self.rehearsal else {}),
                    **self._extension_tag(run.number),
                },
            )
            run.logged = set()
        assert run.run_id is not None
        if run.logged is None:  # a resumed run: what it logged before
            run.logged = tracker.logged_steps(run.run_id, self.space.scheduler.metric)
        if reopen:
            tracker.reopen(run.run_id)
        metrics = []
        for epoch in sorted(epochs):
            if epoch in run.logged:
                continue
            stamp, values = epochs[epoch]
            metrics += [(k, float(v), epoch, stamp) for k, v in values.items() if isinstance(v, (int, float))]
            run.logged.add(epoch)
        tracker.write(run.run_id, params=params, tags=tags, metrics=metrics + finals, end=end)

    def _trial_params(self, values: dict[str, Any], config: Any) -> dict[str, Any]:
        params = {**config.resolved_dump(), "search": json.dumps(values)}
        if CONFIGURATION_KEY in values:  # a listed configuration's id, a column in MLflow's UI
            params[CONFIGURATION_KEY] = values[CONFIGURATION_KEY]
        return params


class ProgressCallback(DriverState, Callback):
    """The sweep's progress line (sweep/progress.py: in place on a terminal, else a line at most
    every few seconds): counts by state, the ETA, the sweep's mean GPU use, the best epoch so far.

    The best *epoch* (any trial, any epoch) is what can be known while trials run; the final
    answer is the best trial by its last epoch, and says so. The counts are kept as trials start
    and end (every trial's state is read once, at the first event): an event costs the same in
    a sweep's 10,000th trial as in its first.
    """

    def __init__(
        self,
        metric: str,
        mode: str,
        num_trials: int,
        max_epochs: int,
        study: StudyHandle | None = None,
        first_trial: int = 0,
    ):
        self.metric, self.mode = metric, mode
        self.num_trials, self.max_epochs = num_trials, max_epochs
        # Where a resumed sweep's trials that ended unknown to Tune are counted (StudyHandle.ended_beyond).
        self.study, self.first_trial = study, first_trial
        self._reset()

    def _reset(self) -> None:
        self._start = time.monotonic()
        self._best: Best | None = None
        self._states: dict[int, str] | None = None  # id(trial) -> its state, once read
        self._count: dict[str, int] = {}
        self._started = 0  # trials Tune has created
        self._beyond = 0  # the sweep's trials that ended unknown to Tune (after its last snapshot)
        self._timings = progress.Timings()
        self._gpu = (0.0, 0)  # sum and number of the epochs' GPU utilisation reported
        self._out: progress.LiveLine | progress.Lines | None = None

    def _better(self, value: float) -> bool:
        if self._best is None:
            return True
        return value > self._best.value if self.mode == "max" else value < self._best.value

    def _state(self, trial: Any) -> str:
        """A trial's state as Tune has it (read once per trial, at the first event)."""
        if trial.status == "TERMINATED":
            return trial_status(reported_result(trial), self.max_epochs)
        return {"ERROR": FAILED, "RUNNING": RUNNING}.get(trial.status, "pending")

    def _set(self, trials: list, trial: Any | None = None, state: str | None = None) -> None:
        """Tune updates a trial's status only after it tells callbacks: the event says it."""
        if self._states is None:
            self._states = {}
            for t in trials:
                self._states[id(t)] = self._state(t)
                self._count[self._states[id(t)]] = self._count.get(self._states[id(t)], 0) + 1
                self._timings.moved(t, None, self._states[id(t)], reported_result(t))
            self._count_beyond(trials)
        self._started = len(trials) + self._beyond
        if trial is not None and state is not None:
            old = self._states.get(id(trial))
            if old is not None:
                self._count[old] -= 1
            self._states[id(trial)] = state
            self._count[state] = self._count.get(state, 0) + 1
            self._timings.moved(trial, old, state, reported_result(trial))
        self._timings.slots = max(self._timings.slots, self._count.get(RUNNING, 0))

    def _count_beyond(self, trials: list) -> None:
        """Once, at the first event: a resumed sweep's trials that ended after Tune's last snapshot
        are not run again, and Tune never hears of them; the records have them, and so does the line."""
        study = getattr(self, "study", None)  # a sweep saved before this attribute existed has none
        if study is None:
            return
        ended = study.ended_beyond({t.trial_id for t in trials}, getattr(self, "first_trial", 0))
        for state, n in ended.items():
            self._count[state] = self._count.get(state, 0) + n
        self._beyond = sum(ended.values())

    def _output(self) -> progress.LiveLine | progress.Lines:
        if self._out is None:
            self._out = progress.output()
        return self._out

    def _picture(self, now: float) -> progress.Picture:
        ended = sum(self._count.get(s, 0) for s in FINAL_STATUSES)
        to_start = max(self.num_trials - ended - self._count.get(RUNNING, 0), 0)
        total, n = self._gpu
        return progress.Picture(
            self._started,
            self.num_trials,
            dict(self._count),
            self._best,
            total / n if n else None,
            self._timings.eta(to_start, now),
        )

    def _print(self, final: bool = False) -> None:
        now = time.monotonic()
        out, picture = self._output(), self._picture(now)
        if final:
            out.end(now - self._start, picture, now)
        else:
            out.show(now - self._start, picture, now)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._set(trials, trial, RUNNING)
        self._print()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._set(trials, trial, "pending")  # a retry: it starts again

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._set(trials)
        self._timings.reported(trial, result)
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and self._better(value):
            se = result.get(selection.se_key(self.metric))
            se = float(se) if isinstance(se, (int, float)) and math.isfinite(se) else None
            number, epoch = int(trial.config[TRIAL_NUMBER_KEY]), int(result.get("epoch", 0))
            self._best = Best(self.metric, float(value), se, number, epoch)
        gpu = result.get(GPU_UTILIZATION_METRIC)
        if isinstance(gpu, (int, float)) and math.isfinite(gpu):
            self._gpu = (self._gpu[0] + gpu, self._gpu[1] + 1)
        self._print()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if (trial.last_result or {}).get(FAILED_KEY):
            self._output().say(failure_line(trial, trial.last_result))
        self._set(trials, trial, trial_status(trial.last_result or {}, self.max_epochs))
        self._print()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._output().say(failure_line(trial, None))
        self._set(trials, trial, FAILED)
        self._print()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Time goes on between events: the live line's clock, a change a line had to hold back."""
        if self._out is not None and self._out.due(time.monotonic()):
            self._print()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """The last picture, always, before the sweep's summary."""
        self._set(trials)
        self._print(final=True)


class SpaceGuard(DriverState, Callback):
    """Checks the disk under the sweep's folder every few seconds while Tune runs, and stops the
    sweep cleanly when it is all but full (sweep/disk.py)."""

    def __init__(self, sweep_dir: str):
        self.sweep_dir = sweep_dir
        self._reset()

    def _reset(self) -> None:
        self._checked = 0.0
        self._tripped = False

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if self._tripped or now - self._checked < CHECK_EVERY_S:
            return
        self._checked = now
        self._tripped = stop_if_full(Path(self.sweep_dir))
