"""Driver-side Tune callbacks: MLflow child runs, and a live progress line in the terminal.

Logging happens on the driver, so trial workers need no access to the tracking store. Child
runs are keyed by the Optuna trial number, which a trial keeps across retries and resumes, so
a resumed sweep finds its runs again instead of duplicating them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from asha_tune.display import count, metric_text
from asha_tune.spaces import SearchSpace
from asha_tune.spaces.space import CONFIGURATION_KEY
from asha_tune.sweep.disk import CHECK_EVERY_S, stop_if_full
from asha_tune.sweep.keys import (
    FAILED_KEY,
    FAILURE_KEY,
    NODE_KEY,
    TRIAL_NUMBER_KEY,
    VALUES_KEY,
    DriverState,
)
from asha_tune.tracking import Tracker
from asha_tune.tracking.records import trial_run_of
from asha_tune.tracking.tags import (
    COMPLETED,
    DURATION_TAG,
    EPOCHS_RUN_TAG,
    FAILED,
    FAILURE_TAG,
    FINAL_STATUSES,
    MODE_TAG,
    NODE_TAG,
    NODES_TAG,
    PRUNED,
    RAY_TRIAL_TAG,
    RESUMED_FROM_TAG,
    RETRIES_TAG,
    RUNNING,
    STARTED_AT_TAG,
    STATUS_TAG,
    TRIAL_NUMBER_TAG,
    is_epoch_metric,
)
from asha_tune.tracking.trials import log_constants, trial_tags
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


class TrackingCallback(DriverState, Callback):
    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        space: SearchSpace,
        configuration_tags: dict[str, dict[str, str]] | None = None,
    ):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.space = space
        self.configuration_tags = configuration_tags or {}  # extra child-run tags by configuration id
        self._reset()

    def _reset(self) -> None:
        self._tracker: Tracker | None = None
        self._runs: dict[int, str] = {}  # trial number -> child run id
        self._logged: dict[str, set[int]] = {}  # child run id -> epochs already logged
        self._final: set[str] = set()  # child runs that already ended
        self._restarted: set[str] = set()  # child runs whose trial (re)started, no result yet
        self._described: set[str] = set()  # child runs whose constants (sizes, split) are logged
        self._nodes: dict[str, list[str]] = {}  # child run id -> the Ray nodes it ran on
        self._devices: dict[str, str] = {}  # child run id -> the device last logged for it

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.tracking_uri)
        return self._tracker

    def child_run(self, trial: Any) -> str:
        number = int(trial.config[TRIAL_NUMBER_KEY])
        if number in self._runs:
            return self._runs[number]
        existing = trial_run_of(self.tracker, self.experiment_id, self.parent_run_id, number)
        values = trial.config[VALUES_KEY]
        config = self.space.trial_config(values)
        params = {**config.resolved_dump(), "search": json.dumps(values)}
        if CONFIGURATION_KEY in values:  # a listed configuration's id, a column in MLflow's UI
            params[CONFIGURATION_KEY] = values[CONFIGURATION_KEY]
        if existing is not None:  # a resumed sweep: the trial's run is continued, never duplicated
            run = existing
            run_id = run.info.run_id
            if "search" not in run.data.params:  # the driver died between creating and filling it
                self.tracker.log_params(run_id, params)
            self._logged[run_id] = self.tracker.logged_steps(run_id, self.space.scheduler.metric)
            if run.data.tags.get(STATUS_TAG) in FINAL_STATUSES:
                self._final.add(run_id)
        else:
            run_id = self.tracker.start_run(
                self.experiment_id,
                name=f"trial-{number:03d}",
                parent_run_id=self.parent_run_id,
                params=params,
                tags={
                    TRIAL_NUMBER_TAG: str(number),
                    STARTED_AT_TAG: f"{time.time():.3f}",
                    MODE_TAG: config.shaping.mode,
                    **trial_tags(config, self.space.scheduler.metric, self.space.scheduler.mode),
                    **self.configuration_tags.get(values.get(CONFIGURATION_KEY), {}),
                },
            )
            self._logged[run_id] = set()
        self._runs[number] = run_id
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self.child_run(trial)
        if run_id not in self._final:
            self.tracker.reopen(run_id)
            self.tracker.set_tags(run_id, {RAY_TRIAL_TAG: trial.trial_id})
            self._restarted.add(run_id)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self.child_run(trial)
        epoch = int(result.get("epoch", 0))
        if run_id in self._restarted:
            self._restarted.discard(run_id)
            if epoch > 1:  # a retried or resumed trial went on from its checkpoint
                self.tracker.set_tags(run_id, {RESUMED_FROM_TAG: epoch - 1})
        if run_id not in self._final:
            self._tag_node(run_id, result.get(NODE_KEY))
        device = result.get(DEVICE_KEY)
        if device and self._devices.get(run_id) != device and not result.get(FAILED_KEY):
            self.tracker.log_device(run_id, device)
            self._devices[run_id] = device
        if run_id in self._final or epoch in self._logged[run_id] or result.get(FAILED_KEY):
            return  # an epoch replayed after a resume keeps its first record
        constants = selection.constants_of(result)
        if constants and run_id not in self._described:  # once, as params (same values on resume)
            log_constants(self.tracker, run_id, constants)
            self._described.add(run_id)
        metrics = {k: v for k, v in result.items() if is_epoch_metric(k)}
        self.tracker.log_metrics(run_id, metrics, step=epoch)
        self._logged[run_id].add(epoch)

    def _tag_node(self, run_id: str, node: str | None) -> None:
        """NODE_TAG and NODES_TAG: where the trial ran (a retry or resume may move it)."""
        if not node:
            return
        if run_id not in self._nodes:
            recorded = self.tracker.tags(run_id).get(NODES_TAG, "")
            self._nodes[run_id] = [n for n in recorded.split(",") if n]
        nodes = self._nodes[run_id]
        if nodes and nodes[-1] == node:
            return
        nodes.append(node)
        self.tracker.set_tags(run_id, {NODE_TAG: node, NODES_TAG: ",".join(nodes)})

    def _finish(self, trial: Any, status: str, tags: dict[str, Any]) -> None:
        run_id = self.child_run(trial)
        if run_id in self._final:
            return
        result = trial.last_result or {}
        final = {f"final_{k}": v for k, v in result.items() if is_epoch_metric(k)}
        if status != FAILED and final:
            self.tracker.log_metrics(run_id, final, step=int(result.get("epoch", 0)))
        started = float(self.tracker.tags(run_id).get(STARTED_AT_TAG, time.time()))
        tags = {
            **tags,
            EPOCHS_RUN_TAG: int(result.get("epoch", 0)),
            DURATION_TAG: run_duration(time.time() - started, result),
            RETRIES_TAG: trial.num_failures,
        }
        self.tracker.finish(run_id, status, tags)
        self._final.add(run_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        status = trial_status(result, self.space.train.epochs)
        tags = {FAILURE_TAG: result[FAILURE_KEY]} if status == FAILED else {}
        self._finish(trial, status, tags)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, FAILED, {FAILURE_TAG: error_reason(trial)})


class ProgressCallback(DriverState, Callback):
    """One line whenever the sweep's picture changes: counts by state and the best epoch so far.

    The best *epoch* (any trial, any epoch) is what can be known while trials run; the final
    answer is the best trial by its last epoch, and says so.
    """

    def __init__(self, metric: str, mode: str, num_trials: int, max_epochs: int):
        self.metric, self.mode = metric, mode
        self.num_trials, self.max_epochs = num_trials, max_epochs
        self._reset()

    def _reset(self) -> None:
        self._start = time.time()
        self._best: tuple[float, int, int] | None = None
        self._last_line = ""

    def _better(self, value: float) -> bool:
        if self._best is None:
            return True
        return value > self._best[0] if self.mode == "max" else value < self._best[0]

    def _state(self, trial: Any, ending: Any, failed: bool, starting: Any) -> str:
        """A trial's state; Tune updates a trial's status only after it tells callbacks."""
        if trial is starting:
            return RUNNING
        if trial is ending:
            return FAILED if failed else trial_status(trial.last_result or {}, self.max_epochs)
        if trial.status == "TERMINATED":
            return trial_status(trial.last_result or {}, self.max_epochs)
        return {"ERROR": FAILED, "RUNNING": RUNNING}.get(trial.status, "pending")

    def _print(self, trials: list, ending: Any = None, failed: bool = False, starting: Any = None) -> None:
        states = [self._state(t, ending, failed, starting) for t in trials]
        count = {s: states.count(s) for s in (RUNNING, PRUNED, COMPLETED, FAILED)}
        best = ""
        if self._best:
            value, number, epoch = self._best
            best = f" · best epoch so far: {metric_text(self.metric, value)} (trial {number}, epoch {epoch})"
        line = (
            f"trials {len(trials)}/{self.num_trials} · running {count['running']} · "
            f"stopped early {count['pruned']} · finished {count['completed']} · "
            f"failed {count['failed']}{best}"
        )
        if line != self._last_line:
            print(f"[{time.time() - self._start:6.0f}s] {line}", file=sys.stdout, flush=True)
            self._last_line = line

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(trials, starting=trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and self._better(value):
            self._best = (float(value), int(trial.config[TRIAL_NUMBER_KEY]), int(result.get("epoch", 0)))
        self._print(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if (trial.last_result or {}).get(FAILED_KEY):
            print(failure_line(trial, trial.last_result), flush=True)
        self._print(trials, ending=trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(failure_line(trial, None), flush=True)
        self._print(trials, ending=trial, failed=True)


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
