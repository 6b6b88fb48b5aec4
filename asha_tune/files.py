"""How asha-tune writes the files it owns: atomically and durably (what a later command reads
back, after a reboot too: sweep.json, cluster.json), and privately (secrets: tokens, passwords,
credentials); and whether a folder can be written at all, asked before a command records anything
(a folder under a file, under /proc, on a read-only or full file system), in words a user acts on."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` so that a reader, a kill mid-write or a power cut sees the old file or the new
    one, never half of one: a temporary file beside it, on disk (fsync) before it is renamed over
    the file, then the folder synced so that the rename itself is on disk (`resume` reads these
    files after a reboot). SQLite and Ray Tune make their own files durable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:  # a full disk mid-write: the old file stays whole, no half copy beside it
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


class DamagedFileError(Exception):
    """A file asha-tune wrote cannot be read back; `str(err)` names it and what is wrong."""


def read_saved(path: Path, model: type[Model]) -> Model:
    """A file asha-tune wrote (sweep.json, cluster.json) read back into its model. A damaged one
    (truncated, empty, not text, edited, or of another version's fields) raises `DamagedFileError`
    naming the file and what is wrong, in one line (its reader adds what to do), never a JSON
    error or a pydantic dump."""
    try:
        text = path.read_bytes().decode("utf-8")
        return model.model_validate(json.loads(text))
    except OSError as err:
        problem = f"it cannot be read ({err.strerror})"
    except UnicodeDecodeError:
        problem = "it is not text"
    except json.JSONDecodeError as err:
        where = f"{err.msg}, line {err.lineno} column {err.colno}"
        problem = (
            "it is empty" if not err.doc.strip() else f"it is not whole JSON ({where}: cut short or edited)"
        )
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "its top level"
        more = f", and {err.error_count() - 1} more" if err.error_count() > 1 else ""
        problem = (
            f"it does not hold what this version of asha-tune writes ({field}: {first['msg'].lower()}"
            f"{more}: written by another version, or edited)"
        )
    raise DamagedFileError(f"{path} is damaged: {problem}")


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


# --- can a folder be written ------------------------------------------------------------------


@dataclass(frozen=True)
class WriteProblem:
    """Why files cannot be written somewhere, in words (`text`); `full`: its file system is full
    (freeing space fixes it)."""

    text: str
    full: bool = False


def write_problem(err: OSError, path: Path | str | None = None) -> WriteProblem:
    """An OSError of a write, in words: what is wrong with `path` (else the error's own file)."""
    where = path if path is not None else err.filename
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(err):
        return WriteProblem(
            "its file system is full" if code != errno.EDQUOT else "the disk quota is used up", True
        )
    if code in (errno.ENOTDIR, errno.EEXIST):
        return WriteProblem(f"{where} is a file, not a folder" if where else "a file is in the way")
    if code == errno.EROFS:
        return WriteProblem("its file system is read-only")
    if code in (errno.EACCES, errno.EPERM):
        return WriteProblem(f"permission denied{f' on {where}' if where else ''}")
    if code == errno.ENOENT:
        return WriteProblem(f"no folder can be created at {where}" if where else "no such folder")
    return WriteProblem(err.strerror or str(err))


def folder_problem(folder: Path) -> WriteProblem | None:
    """Why files cannot be written in `folder`, or None. Probed for real, as the command would
    write: the folder (and its missing parents) created, a temporary file written to disk in it,
    then both removed again, so that asking leaves nothing behind."""
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return WriteProblem(f"{existing} is a file, not a folder")
    missing = [p for p in [folder, *folder.parents] if p != existing and existing in p.parents]
    created: list[Path] = []
    try:
        for p in reversed(missing):
            try:
                p.mkdir()
            except OSError as err:
                return write_problem(err, p)
            created.append(p)
        try:
            with tempfile.TemporaryFile(dir=folder) as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            return write_problem(err, folder)
        return None
    finally:
        for p in reversed(created):
            with contextlib.suppress(OSError):
                p.rmdir()


def unwritable(folder: Path, flag: str, what: str = "") -> str | None:
    """`folder_problem` as the one line that refuses it, naming the flag, the folder (or `what`
    the flag gave) and the fix; None where the folder can be written."""
    problem = folder_problem(folder)
    if problem is None:
        return None
    fix = f"free space there or choose another {flag}" if problem.full else f"choose another {flag}"
    return f"{flag} {what or folder} cannot be written ({problem.text}): {fix}"


def sqlite_file_problem(db: Path, flag: str, url: str, example: str) -> str | None:
    """The line that refuses a sqlite store's file before anything is written to it (a folder
    where the file should be, or a folder that cannot be written: a file in the way, /proc, a
    full disk); None where the file can be made or written."""
    if db.is_dir():
        return f"{flag} {url}: {db} is a folder; name the sqlite file, e.g. sqlite:///{db / example}"
    return unwritable(db.parent, flag, what=url)


def sqlite_write_ahead(engine: Any) -> None:
    """A SQLite store asha-tune writes (a sweep's study, its MLflow records) writes ahead to a log
    synced at its checkpoints, not at each commit (journal_mode WAL, synchronous NORMAL): a commit
    costs no disk sync and no journal file made and deleted. MLflow's create, log_batch and end of
    a trial then take 20 ms instead of 28-38 (benchmarks/RESULTS.md). A killed driver loses nothing
    committed; a power cut may cost the last commits. The log (NAME.db-wal) is folded back into
    the database when its last connection closes. `engine`: a SQLAlchemy engine on the file."""
    from sqlalchemy import event

    if not event.contains(engine, "connect", _write_ahead):
        event.listen(engine, "connect", _write_ahead)
        engine.dispose()  # connections opened before (creating the tables) get the pragmas too


def _write_ahead(connection: Any, record: Any) -> None:
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error:  # a read-only file keeps its journal: reading it needs none
        pass
    finally:
        cursor.close()
