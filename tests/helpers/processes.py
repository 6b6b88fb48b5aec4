"""Processes a test started, found and stopped exactly, and what they listen on.

Ray's processes (raylet, GCS, workers) inherit the environment of whoever started them, so a
per-test marker variable finds exactly this test's processes: other Ray instances on the same
machine (another test run, a user's cluster) are never touched, unlike `ray stop --force`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from asha_tune.cluster import processes

if TYPE_CHECKING:  # the GPU machine runs these helpers without the cluster's packages
    from asha_tune.cluster.state import ClusterState

# Ray's processes (raylet, GCS, workers) inherit the environment of whoever started them, so a
# per-test marker variable finds exactly this test's processes: other Ray instances on the same
# machine (another test run, a user's cluster) are never touched, unlike `ray stop --force`.
PROCESS_TAG_ENV = "ASHA_TUNE_TEST_PROCESS_TAG"


def tagged_processes(tag: str, fragment: str = "") -> list[int]:
    """Pids whose environment carries `tag` (and whose command line contains `fragment`)."""
    marker = f"{PROCESS_TAG_ENV}={tag}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if fragment and fragment not in (entry / "cmdline").read_bytes().decode(errors="ignore"):
                continue
        except OSError:
            continue
        pids.append(int(entry.name))
    return pids


def kill_tagged(tag: str) -> None:
    for pid in tagged_processes(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    """The predicate's first truthy value, or a failed test after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def driver_process(command: list[str], cwd: Path, env: dict, log: Path) -> Iterator[subprocess.Popen]:
    """A driver started as from a terminal of its own (a session of its own, its output in
    `log`), killed if the test leaves it running."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in (processes.PROC / str(pid) / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _address(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return ip, int(port, 16)


def listening(pids: list[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket these processes listen on."""
    owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = (processes.PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[9]) in owner:  # state 0A: LISTEN
                ip, port = _address(parts[1])
                found.append((ip, port, owner[int(parts[9])]))
    return found


def is_loopback(ip: str) -> bool:
    return ip == "::1" or ip.startswith("127.") or ip.startswith("::ffff:127.")


def started_pids(state: ClusterState) -> list[int]:
    """Every live process the local cluster's services started (their sessions)."""
    return [p.pid for s in state.services.values() if s.proc for p in processes.family(s.proc)]


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM a server's process group; on a loaded machine its workers may need a while."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
