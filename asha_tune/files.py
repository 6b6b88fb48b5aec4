"""How asha-tune writes the files it owns: atomically and durably (what a later command reads
back, after a reboot too: sweep.json, cluster.json), and privately (secrets: tokens, passwords,
credentials)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write `text` so that a reader, a kill mid-write or a power cut sees the old file or the new
    one, never half of one: a temporary file beside it, on disk (fsync) before it is renamed over
    the file, then the folder synced so that the rename itself is on disk (`resume` reads these
    files after a reboot). SQLite and Ray Tune make their own files durable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Put a folder's entries on disk (a file created or renamed in it): a file's fsync does not."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 0600, in a folder made 0700 if new)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
