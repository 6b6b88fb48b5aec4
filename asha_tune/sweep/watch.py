"""The head watch: a process beside a sweep's driver that probes the head's GCS (a TCP connect)
every second and, once it has not answered for `lost_s`, closes the sweep's records, says so in
one line and ends the driver with exit status 3.

A process, not a thread of the driver: when the head is gone, Ray's driver blocks in calls that
hold Python's GIL until their own GCS timeout (seen: `remove_placement_group` in Tune's cleanup,
80 s), so no thread of the driver runs, and Ray's core then ends the process with a fatal log line
that Python cannot catch, leaving the records RUNNING. The watch freezes the driver (SIGSTOP) so
nothing writes meanwhile, closes the records (MLflow and Optuna need no Ray), prints the line on
the driver's terminal, then sends SIGQUIT, which the driver has bound to `_exit` at the C level
(no GIL needed): the driver exits with status SIGQUIT = 3, ClusterLostError's. A driver that ends
(or is killed) first ends the watch without a word. Nothing here imports Ray.

    python -m asha_tune.sweep.watch --gcs HOST:PORT --lost-s 30 --parent PID --sweep-file F ...
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from asha_tune import errors
from asha_tune.errors import ClusterLostError

POLL_S = 1.0
EXIT_SIGNAL = signal.SIGQUIT  # its number is the driver's exit status
assert ClusterLostError.exit_code == EXIT_SIGNAL


def answers(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def silent_for(host: str, port: int, lost_s: float, parent: int) -> float | None:
    """Probe until the head has not answered for `lost_s` (how long it was silent), or the
    driver is gone (None)."""
    silent_since: float | None = None
    while True:
        time.sleep(POLL_S)
        if not alive(parent):
            return None
        if answers(host, port, min(2.0, lost_s)):
            silent_since = None
            continue
        silent_since = silent_since or time.monotonic()
        if time.monotonic() - silent_since >= lost_s:
            return time.monotonic() - silent_since + POLL_S


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asha_tune.sweep.watch", description=__doc__.splitlines()[0])
    p.add_argument("--gcs", required=True, help="the head's GCS, HOST:PORT")
    p.add_argument("--lost-s", type=float, required=True)
    p.add_argument("--parent", type=int, required=True, help="the driver's pid")
    p.add_argument("--sweep-file", type=Path, required=True, help="the sweep's sweep.json")
    p.add_argument("--experiment", required=True, help="the sweep's MLflow experiment id")
    p.add_argument("--local", action="store_true", help="the driver's own local Ray, not a cluster")
    p.add_argument("--program", default="asha-tune", help="the command, as its errors name it")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    host, _, port = args.gcs.rpartition(":")
    silent = silent_for(host, int(port), args.lost_s, args.parent)
    if silent is None:
        return 0
    os.kill(args.parent, signal.SIGSTOP)  # nothing of the driver writes while the records close
    try:
        from asha_tune.sweep.records import head_lost

        message = head_lost(args.sweep_file, args.experiment, args.gcs, silent, args.local)
        print(f"{args.program}: error: {message}", file=sys.stderr, flush=True)
    finally:
        os.kill(args.parent, EXIT_SIGNAL)
        os.kill(args.parent, signal.SIGCONT)
    return 0


# --- in the driver -------------------------------------------------------------------------------


def _bind(signum: int, handler: ctypes.c_void_p | None) -> None:
    """Set `signum`'s C-level handler (None: the default action), from any thread."""
    libc = ctypes.CDLL(None)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.signal(signum, handler)


def _exit_on(signum: int) -> None:
    """Bind `signum` to libc's `_exit` (a C-level handler: it runs whatever the Python threads
    are doing), so that the signal ends the process with exit status `signum`."""
    _bind(signum, ctypes.cast(ctypes.CDLL(None)._exit, ctypes.c_void_p))


@contextmanager
def watching(
    gcs_address: str,
    lost_s: float,
    sweep_file: Path,
    experiment_id: str,
    local: bool,
    stderr_fd: int | None = None,
) -> Iterator[None]:
    """The watch process for the span of a sweep; its line goes to `stderr_fd` (the terminal)."""
    _exit_on(EXIT_SIGNAL)
    command = [
        *(sys.executable, "-m", "asha_tune.sweep.watch", "--gcs", gcs_address, "--lost-s", f"{lost_s:g}"),
        *("--parent", str(os.getpid()), "--sweep-file", str(sweep_file), "--experiment", experiment_id),
        *(["--local"] if local else []),
        *("--program", errors.program),
    ]
    watch = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr_fd)
    try:
        yield
    finally:
        watch.terminate()
        try:
            watch.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watch.kill()
            watch.wait()
        _bind(EXIT_SIGNAL, None)


if __name__ == "__main__":
    sys.exit(main())
