"""The sweep's records written from a process of their own, so that they cost the driver nothing.

The records writer (writer.py) keeps its thread, its queue and its order; only the MLflow client
and the Optuna storage it calls live in a child process, reached through `multiprocessing`'s
managers: each call is sent there and waited for, and its error is raised on the writer's thread
as before. The driver keeps its CPU and its one GIL for Tune's event loop; the child spends the
records' CPU beside it (about 2 s to start: MLflow's import and store).

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
PARENT_WATCH_S = 0.2  # how often the child looks for its driver


class RecordsProcessLostError(AshaTuneError):
    """The records process ended before the sweep did (killed, out of memory)."""


class _Served:
    """In the child: one object of an exposed class; `call` runs one of its exposed methods."""

    def __init__(self, cls: type, *args: Any):
        self._methods = EXPOSED[cls]
        self._obj = cls(*args)

    def call(self, method: str, args: tuple, kwargs: dict) -> Any:
        if method not in self._methods:
            raise AttributeError(f"{method} is not written from the records process")
        try:
            return getattr(self._obj, method)(*args, **kwargs)
        except Exception as err:
            try:  # raised in the driver as itself where it survives the trip
                pickle.loads(pickle.dumps(err))
            except Exception:
                raise RuntimeError(f"{type(err).__name__}: {first_line(err)}") from None
            raise


class _Remote:
    """In the driver: the exposed methods of a `_Served`, called in the child and waited for."""

    def __init__(self, proxy: Any, process: RecordsProcess):
        self._proxy, self._process = proxy, process

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return self._proxy.call(method, args, kwargs)
            except (EOFError, OSError) as err:  # the child is gone, or its connection
                raise self._process.lost(err) from None

        return call


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class _Manager(BaseManager):
    pass


_Manager.register("served", _Served)
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
        self._starting = threading.Lock()
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
        try:
            return _Remote(self._started().served(cls, *args), self)  # type: ignore[attr-defined]
        except (EOFError, OSError) as err:
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
