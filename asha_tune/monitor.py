"""`asha-tune status`, `list` and `stop`: a sweep seen and stopped from any machine that reaches its
MLflow store, while it runs and long after.

They read the records only (tracking/sweep_state.py: the parent run and a narrow read of its
trials). `status` and `list` read them without MLflow (tracking/reader.py: its tables, or its REST
API), so they import neither MLflow, torch, Ray nor Optuna (tests/unit/test_light_commands.py) and
answer in a fraction of a second; `stop`, which writes, goes through MLflow. Each asks a tracking
server once instead of retrying for minutes. Whether a driver is alive is told by
sweep/control.py (its pid on this machine, else its heartbeat); `stop` leaves a request there
that the driver acts on within seconds, as on Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asha_tune import defaults
from asha_tune.analysis.status import Driver, list_lines, status_lines, status_record
from asha_tune.errors import AshaTuneError, ConfigError, first_line
from asha_tune.sweep.control import POLL_S, driver_seen, request_stop
from asha_tune.sweep.jobs import RUNNING_JOB, DashboardError, Detached, latest_job
from asha_tune.sweep.settings import SweepSettings
from asha_tune.tracking import Tracker
from asha_tune.tracking.reader import open_records
from asha_tune.tracking.records import open_store
from asha_tune.tracking.sweep_state import (
    MlflowRecords,
    SweepRecords,
    SweepState,
    impatient,
    latest_sweep,
    recorded_json,
    state_of,
    sweep_state,
    top_sweeps,
)
from asha_tune.tracking.tags import (
    DRIVER_TAG,
    HEARTBEAT_TAG,
    INTERRUPTED,
    RESULTS_DIR_TAG,
    RUNNING,
    STATUS_TAG,
    STOP_REQUEST_TAG,
)

STOP_WAIT_S = 120.0  # stop: how long to wait for the driver to close the records


class NotRunningError(AshaTuneError):
    """`asha-tune stop` of a sweep that no driver runs."""


@dataclass(frozen=True)
class Store:
    """The MLflow store a command reads, and how its commands name it."""

    uri: str
    given: bool  # named by --tracking-uri (the commands it prints repeat it)

    @property
    def flag(self) -> str:
        return f" --tracking-uri {self.uri}" if self.given else ""


def store_of(name: str | None, tracking_uri: str | None, results_dir: Path | None) -> Store:
    """--tracking-uri, else the store the sweep's sweep.json names (in --results-dir), else
    ./mlflow.db."""
    if tracking_uri:
        return Store(tracking_uri, True)
    if name is not None:
        try:
            uri = SweepSettings.load(name, results_dir or defaults.results_dir()).tracking_uri
        except (ConfigError, ValueError, OSError):
            uri = None
        if uri is not None:
            return Store(uri, uri != defaults.tracking_uri())
    return Store(defaults.tracking_uri(), False)


def _tracker(store: Store) -> Tracker:
    with impatient():
        return open_store(store.uri)


def _records(store: Store) -> SweepRecords:
    """The store read without MLflow where tracking/reader.py knows it."""
    return open_records(store.uri)


@contextmanager
def reading(store: Store) -> Iterator[None]:
    """Reads of the store that fail for a reason asha-tune does not name (a URI MLflow cannot
    open, a server that answers garbage) are one line too: nothing here writes but `stop`."""
    try:
        with impatient():
            yield
    except AshaTuneError:
        raise
    except Exception as err:
        raise AshaTuneError(f"cannot read the sweeps' records in {store.uri}: {first_line(err)}") from None


def _elsewhere(name: str, store: Store, results_dir: Path | None) -> str:
    """Where sweep `name` records, if its sweep.json names another store than `store`."""
    try:
        saved = SweepSettings.load(name, results_dir or defaults.results_dir())
    except (ConfigError, ValueError, OSError):
        return ""
    if saved.tracking_uri != store.uri:
        uri = saved.tracking_uri
        return f"; its sweep.json says it records to {uri}: pass --tracking-uri {uri}"
    return ""


def _find(records: SweepRecords, name: str, store: Store, results_dir: Path | None) -> SweepState:
    try:
        return sweep_state(records, name)
    except ConfigError as err:
        raise ConfigError(f"{err}{_elsewhere(name, store, results_dir)}") from None


def driver_of(state: SweepState) -> Driver | None:
    """What the records say of a running sweep's driver (a replicated search's: its running
    replicate's); of a detached one (launch --detach), running or interrupted: its Ray job's."""
    if state.status not in (RUNNING, INTERRUPTED):
        return None
    driver = recorded_json(state.tags, DRIVER_TAG)
    beat = recorded_json(state.tags, HEARTBEAT_TAG)
    for replicate in state.replicates:
        if replicate.status == RUNNING:
            driver = recorded_json(replicate.tags, DRIVER_TAG) or driver
            beat = recorded_json(replicate.tags, HEARTBEAT_TAG) or beat
    detached = Detached.from_record((driver or {}).get("detached"))
    if detached is not None:
        return detached_driver(detached, state.status == RUNNING)
    if state.status != RUNNING:
        return None
    seen = driver_seen(driver, beat)
    return Driver(seen.alive, seen.text, certain=seen.by_pid)


def detached_driver(detached: Detached, running: bool) -> Driver:
    """A detached driver, by its Ray job's state on the cluster's dashboard."""
    try:
        submission, found = latest_job(detached)
    except DashboardError as err:
        return Driver(
            None, f"Ray job {detached.submission_id}: cannot tell ({err})", resubmit=detached.command
        )
    job = f"Ray job {submission}"
    if found in RUNNING_JOB:
        return Driver(True, f"{job}: {found}", resubmit=detached.command)
    text = f"{job}: {found or 'unknown to the cluster (a new head?)'}"
    if running:
        text += f"; driver lost: resubmit with {detached.command}"
    return Driver(False, text, certain=True, resubmit=detached.command)


class NotDetachedError(AshaTuneError):
    """`asha-tune logs` of a sweep whose driver was not submitted as a Ray job."""


def detached_of(name: str, tracking_uri: str | None = None, results_dir: Path | None = None) -> Detached:
    """`asha-tune logs NAME`: the Ray job of the sweep's detached driver, from its records."""
    store = store_of(name, tracking_uri, results_dir)
    with reading(store):
        try:
            state = _find(_records(store), name, store, results_dir)
        except ConfigError as err:
            raise ConfigError(
                f"{err}; a detached driver that failed before it recorded anything: "
                f"asha-tune logs {name} --address HOST:PORT reads its job on that Ray cluster"
            ) from None
    records = [recorded_json(s.tags, DRIVER_TAG) for s in (state, *state.replicates)]
    found = [d for d in (Detached.from_record((r or {}).get("detached")) for r in records) if d]
    if found:
        return found[-1]
    last = next((r for r in reversed(records) if r), None)
    where = f" (pid {last.get('pid')} on {last.get('host')})" if last else ""
    raise NotDetachedError(
        f"sweep {name} was not launched with --detach: its driver{where} printed to the terminal that "
        f"ran it; asha-tune status {name}{store.flag} tells where it stands"
    )


def results_tail(state: SweepState) -> str:
    """` --results-dir DIR` where the commands that read sweep.json need it."""
    folder = state.tags.get(RESULTS_DIR_TAG)
    if not folder:
        return ""
    results = Path(folder).parent
    return "" if results == defaults.results_dir().resolve() else f" --results-dir {results}"


@dataclass(frozen=True)
class Status:
    lines: list[str]
    record: dict[str, Any]


def status(name: str | None, tracking_uri: str | None = None, results_dir: Path | None = None) -> Status:
    """One sweep's status (without a name: the sweep launched last in the store)."""
    store = store_of(name, tracking_uri, results_dir)
    with reading(store):
        records = _records(store)
        state = _find(records, name, store, results_dir) if name else state_of(records, latest_sweep(records))
    driver = driver_of(state)
    tail, flag = results_tail(state), store.flag
    return Status(status_lines(state, driver, tail, flag), status_record(state, driver, tail, flag))


def sweeps(tracking_uri: str | None = None) -> Status:
    """Every sweep of a store, newest first; a running one read whole (its trials so far)."""
    store = store_of(None, tracking_uri, None)
    found = []
    with reading(store):
        read = _records(store)
        for parent in top_sweeps(read):
            running = parent.tags.get(STATUS_TAG) == RUNNING
            state = state_of(read, parent, with_trials=running)
            found.append((state, driver_of(state)))
    records = [status_record(s, d, results_tail(s), store.flag) for s, d in found]
    return Status(list_lines(found, store.uri), {"store": store.uri, "sweeps": records})


def stop(
    name: str, tracking_uri: str | None = None, results_dir: Path | None = None, wait_s: float = STOP_WAIT_S
) -> str:
    """Ask a running sweep's driver to stop as Ctrl-C does, wait until its records are closed
    (at most `wait_s`), and say how it ended."""
    store = store_of(name, tracking_uri, results_dir)
    with reading(store):
        tracker = _tracker(store)
        state = _find(MlflowRecords(tracker), name, store, results_dir)
        tail = results_tail(state)
        if state.status != RUNNING:
            how = {"completed": "it finished", "failed": "it failed"}.get(
                state.status, f"it is {state.status}"
            )
            raise NotRunningError(f"sweep {name} is not running ({how}): nothing to stop")
        driver = driver_of(state)
        if driver is not None and driver.alive is False and driver.certain:
            again = driver.resubmit or f"asha-tune resume {name}{tail}"
            raise NotRunningError(
                f"sweep {name} is recorded as running, but its driver is {driver.text}: nothing to stop; "
                f"{again} continues it"
            )
        request_stop(tracker, state.run_id)
        if wait_s <= 0:
            return (
                f"sweep {name}: asked its driver to stop; "
                f"asha-tune status {name}{store.flag} tells when it has"
            )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            time.sleep(POLL_S / 2)
            tags = tracker.tags(state.run_id)
            if tags.get(STATUS_TAG) != RUNNING:
                # The driver clears the request it acted on before it closes its records: a
                # request asked again in between (below) is this command's to remove.
                if tags.get(STOP_REQUEST_TAG):
                    tracker.delete_tag(state.run_id, STOP_REQUEST_TAG)
                return _stopped_line(name, tags.get(STATUS_TAG, "unknown"), tail)
            if not tags.get(STOP_REQUEST_TAG):  # a driver that just started cleared it: ask again
                request_stop(tracker, state.run_id)
    raise AshaTuneError(
        f"asked sweep {name} to stop, but its records still say running after {wait_s:.0f} s "
        f"(its driver: {driver.text if driver else 'unknown'}); asha-tune status {name}{store.flag} "
        "tells whether it is alive"
    )


def _stopped_line(name: str, status_: str, tail: str) -> str:
    if status_ == "interrupted":
        return (
            f"sweep {name} stopped: its records are closed as interrupted; continue it with "
            f"asha-tune resume {name}{tail}"
        )
    return f"sweep {name} ended {status_} before it could stop: nothing to resume"
