"""How asha-tune writes the files a later command reads back (asha_tune/files.py)."""

from __future__ import annotations

import os

from asha_tune import files


def test_write_atomic_puts_the_file_then_its_rename_on_disk(tmp_path, monkeypatch):
    """The file is fsync-ed before the rename (else a power cut could leave it renamed but empty),
    the folder after it (else the rename itself could be lost): what `resume` after a reboot needs."""
    path = tmp_path / "sweep" / "sweep.json"
    path.parent.mkdir()
    path.write_text("old")
    synced: list[tuple[tuple[int, int], str]] = []  # (device, inode) of each fd, what `path` held
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        stat = os.fstat(fd)
        synced.append(((stat.st_dev, stat.st_ino), path.read_text()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    files.write_atomic(path, '{"name": "réel"}\n')
    file_id = (path.stat().st_dev, path.stat().st_ino)  # the temporary file's inode, renamed
    folder_id = (path.parent.stat().st_dev, path.parent.stat().st_ino)
    assert synced == [(file_id, "old"), (folder_id, '{"name": "réel"}\n')]
    assert path.read_text() == '{"name": "réel"}\n'
    assert os.listdir(path.parent) == ["sweep.json"]  # no temporary file left


def test_write_atomic_creates_the_folder_and_replaces_the_content(tmp_path):
    path = tmp_path / "a" / "b" / "cluster.json"
    files.write_atomic(path, "first")
    files.write_atomic(path, "second, longer than the first")
    assert path.read_text() == "second, longer than the first"
    assert os.listdir(path.parent) == ["cluster.json"]
