"""The parallel, memory-mapped, resumable decode cache (asha_tune/trial/cache.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asha_tune.errors import DataError
from asha_tune.trial import cache, decoding
from asha_tune.trial.datasets import list_dataset
from tests.helpers.data import REPO, make_folder_dataset, mapped_files
from tests.helpers.processes import wait_for

SIZE = 32


@pytest.fixture
def domain(tmp_path):
    return list_dataset("folder", make_folder_dataset(tmp_path / "data"))["d"]


def count_decodes(monkeypatch, log: Path) -> None:
    """Every decode appends its path to `log` (forked workers inherit the patch; O_APPEND lines
    from several processes do not interleave)."""
    original = decoding.decode

    def logged(path, sizes):
        with open(log, "a") as f:
            f.write(f"{path}\n")
        return original(path, sizes)

    monkeypatch.setattr(decoding, "decode", logged)


def decoded(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def arrays(entry: cache.CacheEntry) -> tuple[bytes, bytes]:
    return entry.train_file.read_bytes(), entry.test_file.read_bytes()


def test_parallel_build_equals_serial_build_and_todays_decode(domain, tmp_path):
    parallel, built = cache.load_cached_domain(domain, SIZE, tmp_path / "a", "folder", workers=2)
    serial, _ = cache.load_cached_domain(domain, SIZE, tmp_path / "b", "folder", workers=0)
    assert built.decoded == 60
    assert built.already_done == 0
    assert built.workers == 2
    base = decoding.train_base_size(SIZE)
    assert parallel.train.shape == (60, 3, base, base)
    assert parallel.test.shape == (60, 3, SIZE, SIZE)
    assert parallel.train.dtype == torch.uint8
    today = decoding.decode_domain(domain, SIZE)  # the .pt cache's decoding
    for images in (parallel, serial):
        assert torch.equal(images.train, today.train)
        assert torch.equal(images.test, today.test)
        assert torch.equal(images.labels, today.labels)
    assert torch.equal(parallel.labels, torch.tensor(domain.labels))
    # Mapped from the cache file (shared page cache), not a private copy.
    assert str(built.entry.train_file) in mapped_files(parallel.train.data_ptr())


def test_a_complete_cache_is_mapped_not_decoded(domain, tmp_path, monkeypatch):
    first, _ = cache.load_cached_domain(domain, SIZE, tmp_path, "folder", workers=2)

    def no_decoding(*args):
        raise AssertionError("decoded again despite a complete cache")

    monkeypatch.setattr(decoding, "decode", no_decoding)
    again, built = cache.load_cached_domain(domain, SIZE, tmp_path, "folder", workers=2)
    assert built.decoded == 0
    assert built.already_done == 60
    assert torch.equal(again.train, first.train)
    assert torch.equal(again.test, first.test)


def test_an_interrupted_build_resumes_without_decoding_again(domain, tmp_path, monkeypatch):
    whole, one_shot = cache.load_cached_domain(domain, SIZE, tmp_path / "one_shot", "folder", workers=2)

    class StopError(Exception):
        pass

    def stop_after_two_chunks(done: int, total: int) -> None:
        if done >= 2 * cache.CHUNK:
            raise StopError

    with pytest.raises(StopError):
        cache.load_cached_domain(domain, SIZE, tmp_path / "c", "folder", 2, on_progress=stop_after_two_chunks)
    assert multiprocessing.active_children() == []  # the pool's workers are gone
    entry = cache.cache_entry(tmp_path / "c", "folder", domain, SIZE)
    done = cache.done_mask(entry)
    assert 2 * cache.CHUNK <= done.sum() < 60
    assert json.loads(entry.meta_file.read_text())["complete"] is False

    log = tmp_path / "decoded.log"
    count_decodes(monkeypatch, log)
    resumed, built = cache.load_cached_domain(domain, SIZE, tmp_path / "c", "folder", workers=2)
    missing = {str(domain.paths[i]) for i in np.flatnonzero(~done)}
    assert sorted(decoded(log)) == sorted(missing)  # exactly the missing images, each once
    assert built.decoded == len(missing)
    assert built.already_done == done.sum()
    assert arrays(entry) == arrays(one_shot.entry)  # byte-identical to a one-shot build
    assert torch.equal(resumed.train, whole.train)
    assert cache.done_mask(entry).all()


BUILD = """
import sys, time
from pathlib import Path
from asha_tune.trial import decoding
from asha_tune.trial import cache
from asha_tune.trial.datasets import list_dataset

root, cache_dir, log, delay = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
original = decoding.decode
def slow(path, sizes):
    time.sleep(delay)
    with open(log, "a") as f:
        f.write(f"{path}\\n")
    return original(path, sizes)
decoding.decode = slow
cache.COMMIT_EVERY_S = 0.0  # every finished chunk marked done at once: the kill lands mid-build
files = list_dataset("folder", root)["d"]
images, built = cache.load_cached_domain(files, 32, cache_dir, "folder", workers=2)
print(built.decoded)
"""


def start_build(root: Path, cache_dir: Path, log: Path, delay: float) -> subprocess.Popen:
    """A build in its own process group, so a kill takes its decoding workers too."""
    command = [sys.executable, "-c", BUILD, str(root), str(cache_dir), str(log), str(delay)]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True)


def test_a_killed_build_resumes_byte_identical(domain, tmp_path, monkeypatch):
    _, one_shot = cache.load_cached_domain(domain, SIZE, tmp_path / "one_shot", "folder", workers=2)
    entry = cache.cache_entry(tmp_path / "c", "folder", domain, SIZE)
    build = start_build(domain.root, tmp_path / "c", tmp_path / "killed.log", 0.1)
    try:
        wait_for(
            lambda: entry.done_file.exists() and cache.done_mask(entry).sum() >= cache.CHUNK,
            60,
            "a chunk done",
        )
        os.killpg(build.pid, signal.SIGKILL)
    finally:
        build.wait(30)
    done = cache.done_mask(entry)
    assert 0 < done.sum() < 60, "the kill came too late to test a resume"

    log = tmp_path / "resumed.log"
    count_decodes(monkeypatch, log)
    _, built = cache.load_cached_domain(domain, SIZE, tmp_path / "c", "folder", workers=2)
    assert sorted(decoded(log)) == sorted(str(domain.paths[i]) for i in np.flatnonzero(~done))
    assert built.already_done == done.sum()
    assert arrays(entry) == arrays(one_shot.entry)


def test_concurrent_trials_decode_once(domain, tmp_path):
    log = tmp_path / "decoded.log"
    builds = [start_build(domain.root, tmp_path / "c", log, 0.01) for _ in range(2)]
    outputs = [b.communicate(timeout=120)[0].split() for b in builds]
    assert all(b.returncode == 0 for b in builds)
    assert sorted(int(out[-1]) for out in outputs) == [0, 60]  # one built it, the other mapped it
    assert sorted(decoded(log)) == sorted(str(p) for p in domain.paths)


def test_damaged_or_stale_entries_are_rebuilt(domain, tmp_path):
    good, built = cache.load_cached_domain(domain, SIZE, tmp_path, "folder", workers=0)
    entry = built.entry
    entry.meta_file.write_text("{not json")
    again, rebuilt = cache.load_cached_domain(domain, SIZE, tmp_path, "folder", workers=0)
    assert rebuilt.decoded == 60
    assert torch.equal(again.test, good.test)
    with open(entry.test_file, "r+b") as f:
        f.truncate(100)  # a file cut short
    again, rebuilt = cache.load_cached_domain(domain, SIZE, tmp_path, "folder", workers=0)
    assert rebuilt.decoded == 60
    assert torch.equal(again.test, good.test)


def test_the_key_follows_image_size_and_files(domain, tmp_path):
    _, a = cache.load_cached_domain(domain, SIZE, tmp_path, "folder", workers=0)
    _, b = cache.load_cached_domain(domain, 48, tmp_path, "folder", workers=0)
    assert a.entry.folder != b.entry.folder
    assert b.decoded == 60
    assert a.entry.folder.name == f"folder-d-32px-v{cache.CACHE_FORMAT}-{domain.fingerprint()}"
    new = domain.paths[0].with_name("zzz.png")
    Image.new("RGB", (40, 40)).save(new)
    grown = list_dataset("folder", domain.root)["d"]
    _, c = cache.load_cached_domain(grown, SIZE, tmp_path, "folder", workers=0)
    assert c.entry.folder != a.entry.folder
    assert c.decoded == 61


def test_an_unreadable_image_is_named_and_finished_chunks_are_kept(domain, tmp_path):
    bad = domain.paths[50]
    bad.write_text("not an image")
    with pytest.raises(DataError, match=rf"^cannot read image {bad}: "):
        cache.load_cached_domain(domain, SIZE, tmp_path, "folder", workers=0)
    entry = cache.cache_entry(tmp_path, "folder", domain, SIZE)
    done = cache.done_mask(entry)
    # chunks before the bad one kept
    assert done[: 3 * cache.CHUNK].all()
    assert not done[50]
    assert json.loads(entry.meta_file.read_text())["complete"] is False


def test_a_full_disk_is_one_line(domain, tmp_path, monkeypatch):
    class Usage:
        free = 1000

    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(
        DataError, match=r"^decoding d at 32 px needs 0\.0 GiB in .*, which has 0\.0 GiB free"
    ):
        cache.load_cached_domain(domain, SIZE, tmp_path, "folder", workers=0)


def test_default_workers_are_the_cpus_this_process_may_use():
    assert cache.default_workers() == len(os.sched_getaffinity(0))


def test_progress_is_reported_to_the_end_and_no_worker_is_left(domain, tmp_path):
    seen: list[tuple[int, int]] = []
    cache.load_cached_domain(
        domain, SIZE, tmp_path, "folder", 2, on_progress=lambda d, t: seen.append((d, t))
    )
    assert seen[-1] == (60, 60)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert multiprocessing.active_children() == []
