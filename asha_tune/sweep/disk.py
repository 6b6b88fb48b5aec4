"""The disk under --results-dir while a sweep runs: a reserve for Tune's own files, and a guard
that stops the sweep cleanly before the trials' next checkpoints no longer fit.

Nothing here imports Ray (the driver's guard is `callbacks.SpaceGuard`).

A disk that fills mid-sweep otherwise fails every trial's next checkpoint ("No space left on
device", trials FAILED and never resumed) and truncates the experiment state Tune syncs there,
which a resume then cannot read. So the driver holds a reserve file (preflight counts it) and
checks the free space every few seconds; when the disk is all but full (less free than
`LOW_BYTES`: no checkpoint fits any more), it deletes the reserve, so Tune can still save its state,
and stops the sweep as Ctrl-C does: the running trials stay resumable from
their last checkpoints, and `asha-tune resume` continues once space is freed. A trial whose
checkpoint upload hits the full disk first waits for that stop instead of failing
(`wait_for_the_stop`).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from asha_tune.errors import chain
from asha_tune.sweep.preflight import MARGIN_BYTES, free_bytes

LOW_BYTES = MARGIN_BYTES  # no trial checkpoint (~90 MB) fits in less; preflight leaves more at peak
RESERVE_FILE = ".asha-tune-reserve"
CHECK_EVERY_S = 2.0
# How long a trial whose checkpoint did not fit waits for the driver's stop before it fails: the
# guard checks every CHECK_EVERY_S; a disk the driver does not see full (the trial's own) fails it.
NO_SPACE_WAIT_S = 60.0
# Sweep folder -> the free bytes the guard saw when it stopped that sweep, in this driver process
# (the guard Tune runs may be the copy it restored with the experiment, not the one passed in).
_stopped: dict[str, int] = {}


def is_no_space(err: BaseException) -> bool:
    """An OSError of a full disk (ENOSPC), also as pyarrow words it, anywhere in the chain."""
    return any(
        isinstance(e, OSError) and (e.errno == errno.ENOSPC or "No space left on device" in str(e))
        for e in chain(err)
    )


def wait_for_the_stop(err: OSError) -> None:
    """In a trial: its checkpoint did not fit. The driver stops the sweep within seconds when the
    disk it sees is full, and this trial then resumes from its last checkpoint; re-raise only if
    that stop does not come."""
    time.sleep(NO_SPACE_WAIT_S)
    raise err


class Reserve:
    """A file of `size` bytes in the sweep's folder, held while the sweep runs."""

    def __init__(self, folder: Path, size: int):
        self.path, self.size = folder / RESERVE_FILE, size

    def hold(self) -> bool:
        """Allocate it (False where the disk has no room for it: preflight refused that case)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, self.size)
                except OSError as err:
                    if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    os.ftruncate(fd, 0)  # a filesystem without fallocate: write it
                    chunk = b"\0" * (1 << 20)
                    for _ in range(self.size // len(chunk)):
                        os.write(fd, chunk)
            finally:
                os.close(fd)
            return True
        except OSError:
            self.release()
            return False

    def held(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def stop_if_full(sweep_dir: Path) -> bool:
    """In the driver: when the disk under the sweep's folder is all but full (less free than
    `LOW_BYTES`, the reserve not counted), release the reserve and stop the sweep as Ctrl-C does
    (Tune's own graceful stop: it saves its state, the running trials stay resumable)."""
    free = free_bytes(sweep_dir)
    if free >= LOW_BYTES:
        return False
    _stopped[str(sweep_dir)] = free
    Reserve(sweep_dir, 0).release()  # room for Tune's last save of its state
    os.kill(os.getpid(), signal.SIGINT)
    return True


def stopped_for_space(sweep_dir: Path) -> int | None:
    """The free bytes the guard saw if it stopped this sweep (once: the record is taken)."""
    return _stopped.pop(str(sweep_dir), None)
