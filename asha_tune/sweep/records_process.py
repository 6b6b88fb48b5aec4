"""The sweep's records written from a process of their own, so that they cost the driver nothing.

The records writer (writer.py) keeps its thread, its queue and its order; only the MLflow client
and the Optuna storage it calls live in a child process, reached through `multiprocessing`'s
managers. The driver keeps its CPU and its one GIL for Tune's event loop; the child spends the
records' CPU beside it (about 2 s to start: MLflow's import and store).

Calls travel in batches: a write that returns nothing (DEFERRED) waits in the driver until a call
that returns something, or the writer's `sync`, sends every waiting call in one message, run there
in order; the first error is raised on the writer's thread as before. One message per call cost
a round trip each, and on a busy machine (2 cores, 32 trials at once) each round trip waited for
the scheduler: the records fell behind Tune, and Tune's snapshot, which waits for them, held the
sweep at a quarter of Ray Tune's trial rate (benchmarks/RESULTS.md).

The child exits within 0.2 s of the driver (a SIGKILL included), so it never writes after a
resume has started. It ignores the terminal's Ctrl-C and a job's SIGTERM, which the driver
answers by writing what is queued.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time
from multiprocessing.managers import BaseManager
from typing import Any

from asha_tune.errors import AshaTuneError, first_line
from asha_tune.sweep.study import StudyHandle
from asha_tune.tracking import Tracker

# What the writer's side calls on each (the rest stays in the driver).
EXPOSED: dict[type, tuple[str, ...]] = {
    Tracker: ("start_run", "logged_steps", "reopen", "write"),
    StudyHandle: ("write", "tell"),
}
# Of those, the writes that return nothing: they wait in the driver for the next message.
DEFERRED: dict[type, tuple[str, ...]] = {Tracker: ("write",), StudyHandle: ("write", "tell")}
MAX_BATCH = 256  # calls waiting in the driver before they are sent regardless
PARENT_WATCH_S = 0.2  # how often the child looks for its driver


class RecordsProcessLostError(AshaTuneError):
    """The records process ended before the sweep did (killed, out of memory)."""


class _Hub:
    """In the child: the objects made there, by key; `run` makes one or calls their exposed
    methods, a batch of calls in order."""

    def __init__(self) -> None:
        self._objects: dict[int, tuple[Any, tuple[str, ...]]] = {}

    def make(self, key: int, cls: type, args: tuple) -> None:
        self._objects[key] = (cls(*args), EXPOSED[cls])

    def run(self, calls: list[tuple[int, str, tuple, dict]]) -> Any:
        """Each call in order; the last one's result. The first error stops the batch."""
        result = None
        for key, method, args, kwargs in calls:
            obj, methods = self._objects[key]
            if method not in methods:
                raise AttributeError(f"{method} is not written from the records process")
            try:
                result = getattr(obj, method)(*args, **kwargs)
            except Exception as err:
                try:  # raised in the driver as itself where it survives the trip
                    pickle.loads(pickle.dumps(err))
                except Exception:
                    raise RuntimeError(f"{type(err).__name__}: {first_line(err)}") from None
                raise
        return result


class _Remote:
    """In the driver: the exposed methods of an object made in the child. A DEFERRED one waits
    for the next message; any other sends the waiting calls with it and returns its result."""

    def __init__(self, key: int, cls: type, process: RecordsProcess):
        self._key, self._deferred, self._process = key, DEFERRED.get(cls, ()), process

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if method in self._deferred:
                self._process.defer((self._key, method, args, kwargs))
                return None
            return self._process.send((self._key, method, args, kwargs))

        return call


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class _Manager(BaseManager):
    pass


_Manager.register("hub", _Hub)
_Manager.register("cpu_s", _cpu_s)


def _child_setup(parent: int) -> None:
    """In the child: die with the driver; leave signals sent to the whole job to the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_without, args=(parent,), name="parent watch", daemon=True).start()


def _exit_without(parent: int) -> None:
    """Exit once the driver is gone (a SIGKILL): the child is then some other process's. Linux's
    parent-death signal would not do: it fires when the thread that started the child ends."""
    while os.getppid() == parent:
        time.sleep(PARENT_WATCH_S)
    os._exit(0)


class RecordsProcess:
    """The child process and the objects made in it; started by `start_soon`, or else at the
    first `make`."""

    def __init__(self) -> None:
        self._manager: _Manager | None = None
        self._hub: Any = None
        self._starting = threading.Lock()
        self._calls: list[tuple[int, str, tuple, dict]] = []  # waiting for the next message
        self._sending = threading.Lock()
        self._made = 0
        self.cpu_s = 0.0  # the child's CPU time, read at `close`

    def start_soon(self) -> None:
        """Start the child in the background (its 2 s go by while Tune starts), not at the first
        write, which would then hold every record back that long."""
        threading.Thread(target=self._started, name="records process start", daemon=True).start()

    def _started(self) -> _Manager:
        with self._starting:
            if self._manager is None:
                manager = _Manager(ctx=multiprocessing.get_context("spawn"))
                manager.start(_child_setup, (os.getpid(),))
                self._manager = manager
            return self._manager

    def make(self, cls: type, *args: Any) -> Any:
        """`cls(*args)` made in the child: an object whose exposed methods (EXPOSED) run there."""
        with self._sending:
            if self._hub is None:
                try:
                    self._hub = self._started().hub()  # type: ignore[attr-defined]
                except (EOFError, OSError) as err:
                    raise self.lost(err) from None
            self._made += 1
            key = self._made
        self._call(lambda: self._hub.make(key, cls, args))
        return _Remote(key, cls, self)

    def defer(self, call: tuple[int, str, tuple, dict]) -> None:
        """A call that returns nothing, sent with the next message (at once past MAX_BATCH)."""
        with self._sending:
            self._calls.append(call)
            full = len(self._calls) >= MAX_BATCH
        if full:
            self.sync()

    def send(self, call: tuple[int, str, tuple, dict] | None = None) -> Any:
        """The waiting calls, then `call`, in one message; `call`'s result."""
        with self._sending:
            calls, self._calls = self._calls, []
        if call is not None:
            calls.append(call)
        return self._call(lambda: self._hub.run(calls)) if calls else None

    def sync(self) -> None:
        """Every waiting call run in the child (the writer's: before what must follow them)."""
        self.send()

    def _call(self, call: Any) -> Any:
        try:
            return call()
        except (EOFError, OSError) as err:  # the child is gone, or its connection
            raise self.lost(err) from None

    def lost(self, err: BaseException) -> RecordsProcessLostError:
        process = None if self._manager is None else self._manager._process  # type: ignore[attr-defined]
        code = None if process is None else process.exitcode
        how = f"exit status {code}" if code is not None else first_line(err)
        return RecordsProcessLostError(
            f"the sweep's records process ended before the sweep ({how}); what it wrote is kept: "
            "resume the sweep"
        )

    def close(self) -> None:
        with self._starting:
            manager, self._manager = self._manager, None
        if manager is None:
            return
        try:
            self.cpu_s = float(manager.cpu_s()._getvalue())  # type: ignore[attr-defined]
        except (EOFError, OSError):  # the child is gone: its time is lost, not the sweep's records
            pass
        manager.shutdown()
