"""A command run on a pseudo-terminal, as a user's terminal would run it, and the screen its
bytes leave: for the progress line that updates in place (sweep/progress.py)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path


def run_on_terminal(
    argv: list[str],
    cwd: Path | None = None,
    env: dict | None = None,
    columns: int = 200,
    timeout: float = 600,
) -> tuple[int, str]:
    """The exit status and every byte the command wrote to its terminal (stdout and stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    raw, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the command and every process it started closed the terminal
                    break
                if not chunk:
                    break
                raw += chunk
            elif process.poll() is not None:
                break
        else:
            process.kill()
        return process.wait(timeout=30), raw.decode(errors="replace")
    finally:
        os.close(master)


def screen(raw: str) -> list[str]:
    """The lines a terminal shows after `raw`: enough of one for rich's live line (carriage return,
    erase the line, newline; the cursor hidden and shown, colours)."""
    rows, row = [], ""
    for token in re.split(r"(\r\n|\r|\n|\x1b\[[0-9;?]*[A-Za-z])", raw):
        if token in ("\r\n", "\n"):
            rows.append(row)
            row = ""
        elif token == "\x1b[2K":
            row = ""
        elif token == "\r" or token.startswith("\x1b["):
            continue
        else:
            row += token
    return [*rows, row] if row else rows
