"""Records written off Tune's event loop: one background thread per sweep, batched by trial.

A trial waits in `ray.tune.report` until the driver has handled its result, so every MLflow or Optuna
call made on Tune's event loop holds a trial back. The driver's callbacks and searcher instead
keep what is to be written in buffers of their own, by trial, and `touch` the trial here; this
thread drains a trial's buffers in one go. What a running trial reports waits up to `WRITE_EVERY_S`
(so that its epochs go in one batch; the tracking UI is that much behind); a trial's end, and
anything `flush` or `after` asks for, is written at once, in the order the trials were touched.
What may not happen before a trial's records are written (emptying its older checkpoints) is
queued behind them with `after`.

Nothing is lost on the way: Tune saves its experiment snapshot (what `resume` restarts from) only
after `flush` has written everything queued (the callbacks and the searcher flush when Tune asks for
their state, before the snapshot is synced to the sweep's folder), and at the end of a sweep, however
it ends. What a SIGKILL loses was queued after the last snapshot, so the trials that produced it run
those epochs again on resume, and the logged-steps check writes each epoch once. The first error a
write raises (a tracking server gone for good) is raised on Tune's event loop at the next event,
and the writes queued behind it wait there: the sweep stops, and resume writes them again. The
queue is bounded: when `max_pending` trials wait to be written, the event loop waits too.

A sweep of `RECORDS_PROCESS_FROM` trials or more (or any, or none, as `$ASHA_TUNE_RECORDS_PROCESS`
says) calls MLflow and Optuna from a process of its own (records_process.py): the same writes, in
the same order, off the driver's CPU and GIL. Jobs due together go there as one batch: the writer
syncs (waits for the process to have run them) when no other job is due, every `MAX_BATCH`
jobs, and before a job's actions.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from asha_tune.defaults import RECORDS_PROCESS_ENV, RECORDS_PROCESS_FROM
from asha_tune.errors import first_line

log = logging.getLogger(__name__)

MAX_PENDING = 2000  # trials with records waiting to be written before the event loop waits
WRITE_EVERY_S = 5.0  # how long a running trial's reports may wait to be written in one batch
MAX_BATCH = 64  # jobs written before their records-process calls are run, when more are due


@dataclass
class _Job:
    due: float
    writes: dict[Hashable, Callable[[], None]] = field(default_factory=dict)  # by owner, in order
    # Written only after the trial's end is (`end`), or on a flush: Optuna's end of a trial, which
    # a resume counts, never lands before the trial's last records in MLflow.
    held: dict[Hashable, Callable[[], None]] = field(default_factory=dict)
    ended: bool = False
    then: list[Callable[[], None]] = field(default_factory=list)


class RecordWriter:
    def __init__(self, name: str, max_pending: int = MAX_PENDING, process: bool = False):
        self.name = name
        self.max_pending = max_pending
        self._process: Any = None
        if process:
            from asha_tune.sweep.records_process import RecordsProcess

            self._process = RecordsProcess()
            self._process.start_soon()
        self._jobs: OrderedDict[Hashable, _Job] = OrderedDict()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._error: BaseException | None = None
        self._raised = False
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=f"records {self.name}", daemon=True)
            self._thread.start()

    def touch(
        self,
        trial: Hashable,
        owner: Hashable,
        write: Callable[[], None],
        wait_s: float = 0.0,
        *,
        end: bool = False,
        hold: bool = False,
    ) -> None:
        """`write()` will run on the writer's thread within `wait_s`, once however often it is
        touched before it runs (it drains its owner's buffer of `trial`); trials are written in
        the order they were first touched since they were last written. `end`: this write ends
        the trial's records; `hold`: this write waits for that end (or a flush), and follows it."""
        self.check()
        with self._cond:
            while len(self._jobs) >= self.max_pending and self._error is None and trial not in self._jobs:
                self._cond.wait(0.5)  # backpressure: the writer is that far behind
            job = self._job(trial, time.monotonic() + wait_s)
            (job.held if hold else job.writes).setdefault(owner, write)
            job.ended = job.ended or end
            self._start()
            self._cond.notify_all()

    def _job(self, trial: Hashable, due: float) -> _Job:
        """The trial's pending job, made if need be, due by `due` at the latest (lock held)."""
        job = self._jobs.get(trial)
        if job is None:
            job = self._jobs[trial] = _Job(due)
        job.due = min(job.due, due)
        return job

    def after(self, trial: Hashable, action: Callable[[], None]) -> None:
        """`action()` once the records of `trial` touched so far are written (at once)."""
        self.check()
        with self._cond:
            self._job(trial, 0.0).then.append(action)
            self._start()
            self._cond.notify_all()

    def _next(self) -> tuple[Hashable, _Job] | None:
        """The first job that is due, or None (lock held)."""
        now = time.monotonic()
        for trial, job in self._jobs.items():
            if job.due <= now:
                del self._jobs[trial]
                return trial, job
        return None

    def _run(self) -> None:
        batched = 0  # jobs written since the records process last ran what they sent
        while True:
            found = self._claim()
            if found is None:
                return
            trial, job = found
            try:
                self._write(trial, job)
                batched += 1
                if batched >= MAX_BATCH or not self._due():  # else the next job joins the batch
                    self._sync()
                    batched = 0
            except BaseException as err:  # kept for the event loop to raise
                with self._cond:
                    self._error = err
                    self._busy = False
                    self._cond.notify_all()
                return
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _due(self) -> bool:
        """Whether a job is due now (the writer's thread then writes it before syncing)."""
        now = time.monotonic()
        with self._cond:
            return self._error is None and any(job.due <= now for job in self._jobs.values())

    def _sync(self) -> None:
        """What the writes sent the records process, run there (no-op without one)."""
        if self._process is not None:
            self._process.sync()

    def _claim(self) -> tuple[Hashable, _Job] | None:
        """Wait for the next due job and mark the writer busy; None once it is to stop."""
        with self._cond:
            while True:
                if self._error is not None or (self._closed and not self._jobs):
                    return None
                found = self._next()
                if found is not None:
                    self._busy = True
                    return found
                soonest = min((j.due for j in self._jobs.values() if j.due < float("inf")), default=None)
                self._cond.wait(None if soonest is None else max(0.0, soonest - time.monotonic()))

    def _write(self, trial: Hashable, job: _Job) -> None:
        """One job's writes, its held writes once the trial has ended, then its actions."""
        for write in job.writes.values():
            write()
        if job.ended:
            for write in job.held.values():
                write()
        elif job.held:  # back in the queue, until the trial's end is written
            with self._cond:
                later = self._job(trial, float("inf"))
                for owner, write in job.held.items():
                    later.held.setdefault(owner, write)
        if job.then:
            self._sync()  # the actions follow the trial's records, written
        for action in job.then:
            action()

    def made(self, local: Any, cls: type, *args: Any) -> Any:
        """What the writes call: `cls(*args)` made in the records process where the sweep has one
        (its exposed methods run there), else `local`, this process's own."""
        return local if self._process is None else self._process.make(cls, *args)

    def check(self) -> None:
        """Raise the first error a write raised, once (on the caller's thread)."""
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def flush(self) -> None:
        """Write everything touched so far, and wait for it (a write's error is raised here)."""
        with self._cond:
            for job in self._jobs.values():
                job.due, job.ended = 0.0, True
            if self._jobs:
                self._start()
                self._cond.notify_all()
            while (self._jobs or self._busy) and self._error is None:
                self._cond.wait(0.5)
        self.check()

    def close(self) -> None:
        """Write what is queued, then stop the thread and the records process; raises a write's
        error not raised yet."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if self._process is not None:
                if self._thread is not None:
                    self._thread.join(timeout=30)
                self._process.close()
                PROCESS_CPU_S[self.name] = self._process.cpu_s

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._jobs) + self._busy


_WRITERS: dict[str, RecordWriter] = {}
_LOCK = threading.Lock()
PROCESS_CPU_S: dict[str, float] = {}  # CPU seconds each closed writer's records process spent


def in_process(num_trials: int) -> bool:
    """Whether a sweep of `num_trials` writes its records from a process of its own: from
    `RECORDS_PROCESS_FROM` trials on, where the driver's saving outgrows the process's start
    (about 2 s of CPU against some 40 ms per trial), unless the environment says yes or no."""
    forced = os.environ.get(RECORDS_PROCESS_ENV, "").strip().lower()
    if forced in ("1", "yes", "true"):
        return True
    if forced in ("0", "no", "false"):
        return False
    return num_trials >= RECORDS_PROCESS_FROM


def writer_for(key: str, num_trials: int | None = None) -> RecordWriter:
    """The sweep's writer in this process (the callbacks and the searcher share it), made on first
    use, with a records process as `in_process(num_trials)` says; a closed one is replaced (a sweep
    run again in the same process: a resume in a notebook)."""
    with _LOCK:
        writer = _WRITERS.get(key)
        if writer is None or writer._closed:
            process = num_trials is not None and in_process(num_trials)
            writer = _WRITERS[key] = RecordWriter(key, process=process)
        return writer


def close_writer(key: str) -> None:
    """Write what the sweep's writer holds and stop it (the end of a sweep, however it ends)."""
    with _LOCK:
        writer = _WRITERS.pop(key, None)
    if writer is not None:
        writer.close()


def end_writer(key: str) -> None:
    """The driver's last word on a sweep's writer, however the sweep ended: one that Tune did not
    close (it raised before its end event) writes what it holds and stops, with its records
    process; a write's error is logged, the sweep's own error being the one the user sees."""
    try:
        close_writer(key)
    except Exception as err:
        log.warning("records not written at the end of the sweep: %s", first_line(err))
