"""A running sweep, seen and stopped from anywhere through its records: the driver's heartbeat
and `asha-tune stop`.

While a sweep runs, a thread of its driver (`Control`) refreshes HEARTBEAT_TAG on the sweep's
parent run (and on its replicated search's) every HEARTBEAT_S, and reads STOP_REQUEST_TAG every
POLL_S. `asha-tune stop` sets that tag (`request_stop`); the driver then stops as Ctrl-C stops
it: it sends itself SIGINT, Tune's own graceful stop saves its state (a checkpoint being written
is finished first), and the records are closed as interrupted, to be resumed. A signal reaches a
driver on this machine only; the store reaches every driver, wherever it runs (a detached one on
a cluster's head, one in a terminal on another server).

Why a heartbeat: a driver on another machine, or in a Ray job, cannot be seen by its pid, and
the records of one that was SIGKILLed still say running. A heartbeat younger than SILENT_AFTER_S
says it is alive, from any machine whose clock roughly agrees (NTP); on the driver's own
machine its pid says it at once (`driver_seen`).

Nothing here imports Ray: `asha-tune status` and `stop` use it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asha_tune.sweep.settings import SweepSettings
from asha_tune.tracking import Tracker
from asha_tune.tracking.tags import HEARTBEAT_TAG, STOP_REQUEST_TAG

HEARTBEAT_S = 15.0
POLL_S = 2.0
SILENT_AFTER_S = 4 * HEARTBEAT_S  # no heartbeat for this long: the driver is taken to be gone


def beat() -> dict[str, Any]:
    """This driver's heartbeat: now, and where it runs."""
    return {"at": round(time.time(), 1), "host": socket.gethostname(), "pid": os.getpid()}


class _Control(threading.Thread):
    """The driver's thread: heartbeats out, stop requests in. A failed read or write is tried
    again at the next turn: the sweep never fails for it."""

    def __init__(self, tracking_uri: str, run_ids: list[str]):
        super().__init__(name="asha-tune control", daemon=True)
        self.tracking_uri, self.run_ids = tracking_uri, run_ids
        self.done = threading.Event()
        self.requested: dict[str, Any] | None = None
        self.tracker: Tracker | None = None

    def run(self) -> None:
        try:
            self.tracker = Tracker(self.tracking_uri)  # its own client
        except Exception:
            return
        # A request that this driver's records still hold was for a driver before it (killed
        # before it read it): not for this one. `asha-tune stop` asks again if it meets a
        # driver that just started.
        self._clear()
        next_beat = 0.0
        while True:
            if time.monotonic() >= next_beat:
                self._beat()
                next_beat = time.monotonic() + HEARTBEAT_S
            if self.requested is None:
                self._poll()
            if self.done.wait(POLL_S):
                return

    def _beat(self) -> None:
        assert self.tracker is not None
        text = json.dumps(beat())
        for run_id in self.run_ids:
            try:
                self.tracker.set_tags(run_id, {HEARTBEAT_TAG: text})
            except Exception:
                pass

    def _poll(self) -> None:
        assert self.tracker is not None
        for run_id in self.run_ids:
            try:
                request = self.tracker.tags(run_id).get(STOP_REQUEST_TAG)
            except Exception:
                continue
            if request:
                self.requested = _parsed(request)
                by = self.requested.get("by", "another terminal")
                print(f"asha-tune stop (from {by}): stopping the sweep as Ctrl-C does", flush=True)
                os.kill(os.getpid(), signal.SIGINT)  # Tune's graceful stop, or KeyboardInterrupt
                return

    def _clear(self) -> None:
        assert self.tracker is not None
        for run_id in self.run_ids:
            try:
                self.tracker.delete_tag(run_id, STOP_REQUEST_TAG)
            except Exception:
                pass


def _parsed(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def watched_runs(settings: SweepSettings) -> list[str]:
    """The parent runs a driver heartbeats on and takes stop requests from: its sweep's, and a
    replicate's replicated search's (`asha-tune stop SEARCH` stops the replicate that runs)."""
    runs = [settings.run_id]
    if settings.replicate_of and settings.nested_under:
        runs.append(settings.nested_under)
    return runs


class Control:
    """The heartbeat and the stop requests of one sweep's run on Ray: `start` once the driver
    has claimed the sweep (never before: another driver's records are its own), `stop` however
    the run ends. A request it acted on is removed, so the records hold no stale one."""

    def __init__(self, settings: SweepSettings):
        self.settings = settings
        self.thread: _Control | None = None

    def start(self) -> None:
        self.thread = _Control(self.settings.tracking_uri, watched_runs(self.settings))
        self.thread.start()

    def stop(self) -> None:
        thread, self.thread = self.thread, None
        if thread is None:
            return
        thread.done.set()
        thread.join(timeout=10)
        if thread.requested is not None and thread.tracker is not None:
            thread._clear()


# --- from another terminal or machine ------------------------------------------------------------


def request_stop(tracker: Tracker, run_id: str) -> None:
    """`asha-tune stop`: the request the driver reads within POLL_S."""
    by = f"{socket.gethostname()} pid {os.getpid()}"
    tracker.set_tags(run_id, {STOP_REQUEST_TAG: json.dumps({"at": round(time.time(), 1), "by": by})})


def process_alive(pid: int) -> bool | None:
    """Whether `pid` is an asha-tune process on this machine: True, False (no such process), or
    None for a process that does not name asha-tune (a reused pid, or a script that calls the
    Python API): its heartbeat must tell."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return None
    return True if b"asha" in command else None


@dataclass(frozen=True)
class Seen:
    """What the records say of a running sweep's driver."""

    alive: bool | None  # None: cannot tell from here
    host: str | None
    text: str  # e.g. "alive (pid 42 on node-3; heard from 4 s ago)"
    by_pid: bool = False  # judged by its process on this machine (certain), not by its heartbeat


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def driver_seen(
    driver: Mapping[str, Any] | None, heartbeat: Mapping[str, Any] | None, now: float | None = None
) -> Seen:
    """Whether a running sweep's driver is alive, and where: on this machine by its pid; elsewhere
    by its heartbeat's age; a sweep from before heartbeats only by where it was recorded."""
    now = time.time() if now is None else now
    source = heartbeat or driver or {}
    host, pid = source.get("host"), source.get("pid")
    where = f"pid {pid} on {host}" if pid is not None else f"on {host}"
    here = host is not None and host == socket.gethostname() and pid != os.getpid()
    if here and isinstance(pid, int) and (alive := process_alive(pid)) is not None:
        return Seen(alive, host, f"{'alive' if alive else 'gone'} ({where})", by_pid=True)
    if heartbeat is not None and isinstance(heartbeat.get("at"), (int, float)):
        age = now - float(heartbeat["at"])
        if age <= SILENT_AFTER_S:
            return Seen(True, host, f"alive ({where}; heard from {_ago(age)} ago)")
        return Seen(False, host, f"silent for {_ago(age)} ({where}): taken to be gone")
    if host is None:
        return Seen(None, None, "not recorded")
    return Seen(None, host, f"recorded as running {where}; no heartbeat tells whether it is alive")
