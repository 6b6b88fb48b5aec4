"""Processes a command started, known by pid: start, identify, list sockets, stop.

Every service is started as the leader of a new session. What it spawns either stays in that
session (Ray's raylet and workers, the MLflow server's workers) or descends from it (PostgreSQL's
backends, which start sessions of their own), so "the leader's processes" are its session plus
its descendants. A pid is remembered with its start time, so a later process that reuses the pid
is never taken for ours. Stopping signals the leader, then kills whatever of its processes is
left: exactly what it started, nothing else on the machine (no `ray stop`, no kill by name).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

PROC = Path("/proc")


class Proc(BaseModel):
    """A started process: its pid and the start time that tells it from a later one."""

    pid: int
    start_ticks: int


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _start_ticks(fields: list[str]) -> int:
    return int(fields[19])  # field 22 of stat: start time in clock ticks since boot


def identify(pid: int) -> Proc | None:
    fields = _stat(pid)
    return Proc(pid=pid, start_ticks=_start_ticks(fields)) if fields else None


def alive(proc: Proc | None) -> bool:
    """True while this very process runs (a zombie or a reused pid is not it)."""
    if proc is None:
        return False
    fields = _stat(proc.pid)
    return fields is not None and fields[0] not in ("Z", "X") and _start_ticks(fields) == proc.start_ticks


def _table() -> dict[int, list[str]]:
    """Every live process: pid -> its stat fields."""
    table = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[0] not in ("Z", "X"):
            table[int(entry.name)] = fields
    return table


def family(proc: Proc) -> list[Proc]:
    """The leader's live processes: its session and its descendants, all started after it."""
    table = _table()
    if proc.pid in table and _start_ticks(table[proc.pid]) != proc.start_ticks:
        return []  # the pid now belongs to another process
    ours = {pid for pid, f in table.items() if int(f[3]) == proc.pid and _start_ticks(f) >= proc.start_ticks}
    if proc.pid in table:
        ours.add(proc.pid)
    children: dict[int, list[int]] = {}
    for pid, f in table.items():
        children.setdefault(int(f[1]), []).append(pid)
    todo = list(ours)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in ours and _start_ticks(table[child]) >= proc.start_ticks:
                ours.add(child)
                todo.append(child)
    return [Proc(pid=pid, start_ticks=_start_ticks(table[pid])) for pid in sorted(ours)]


def spawn(
    command: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> Proc:
    """Start `command` as a session leader, stdout and stderr appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            user=user,
            start_new_session=True,
        )
    proc = identify(child.pid)
    if proc is None:  # it died at once: the log says why
        child.wait()
        return Proc(pid=child.pid, start_ticks=-1)
    return proc


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop(proc: Proc, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Signal the leader, wait for its processes to end, SIGKILL what remains; returns how many."""
    members = family(proc)
    if alive(proc):
        _signal([proc.pid], sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in members):
        time.sleep(0.2)
    # Stragglers, and whatever they spawned meanwhile.
    left = {p.pid: p for m in members if alive(m) for p in [m, *family(m)]}
    _signal([p.pid for p in left.values() if alive(p)], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in left.values()):
        time.sleep(0.1)
    return len(members)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0
