"""How asha-tune writes the files it owns: atomically (what a later command reads back: sweep.json,
cluster.json), and privately (secrets: tokens, passwords, credentials)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write `text` so that a reader (or a kill mid-write) sees the old file or the new one, never
    half of one: a temporary file beside it, renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 0600, in a folder made 0700 if new)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
