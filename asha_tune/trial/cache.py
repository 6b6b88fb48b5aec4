"""The decode caches: each domain decoded once per image size, then mapped by every trial.

PACS keeps the cache it always had: one `.pt` file per domain and size (format 1), decoded in
one process (`load_pt_cache`). Its name (dataset, domain, size, format, the files' fingerprint)
is unchanged, so the caches on users' disks stay valid; `tests/integration/test_pacs.py` checks
that the folder cache below holds the same pixels, bit for bit.

Every other dataset uses a cache that scales: decoded in parallel into memory-mapped files,
resumable (`load_cached_domain`). A domain at one image size is a folder of the cache directory
holding two raw uint8 arrays, `train.u8` (N, 3, base, base) at the crop base size and `test.u8`
(N, 3, size, size), a done-record `done.u8` (one byte per image, 1 once its pixels are on disk)
and `meta.json`. The folder name holds the dataset, domain, image size, format and the files'
fingerprint, so a changed file or another size is another entry, as with the `.pt` cache.

Building: worker processes decode chunks of images and write their pixels straight into the
memory-mapped arrays; the parent marks a chunk done only after fsync-ing the arrays, so a build
killed at any point (even by a power cut) resumes with the images still missing and never trusts
a half-written one. A file lock makes concurrent trials on a node (or on nodes sharing the cache
folder) build an entry once: the others wait, then map it. Readers map the arrays copy-on-write:
every trial on a node shares one copy in the page cache.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from tqdm import tqdm

from asha_tune.errors import DataError
from asha_tune.trial import decoding
from asha_tune.trial.datasets import DomainFiles
from asha_tune.trial.decoding import DomainImages

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
PT_CACHE_FORMAT = 1
PT_CACHE_DATASETS = frozenset({"pacs"})  # the datasets kept in their `.pt` files (see above)
CHUNK = 16  # images per task: long enough to hide the hand-off, short enough to lose little
COMMIT_EVERY_S = 2.0  # how often finished chunks are made durable and marked done
ProgressCallback = Callable[[int, int], None]  # (images done, images in the domain)


@dataclass(frozen=True)
class CacheEntry:
    """The files of one cached domain at one image size."""

    folder: Path
    count: int
    base: int  # train images are base x base (decoding.train_base_size)
    size: int  # test images are size x size

    @property
    def train_file(self) -> Path:
        return self.folder / "train.u8"

    @property
    def test_file(self) -> Path:
        return self.folder / "test.u8"

    @property
    def done_file(self) -> Path:
        return self.folder / "done.u8"

    @property
    def meta_file(self) -> Path:
        return self.folder / "meta.json"

    @property
    def train_shape(self) -> tuple[int, int, int, int]:
        return (self.count, 3, self.base, self.base)

    @property
    def test_shape(self) -> tuple[int, int, int, int]:
        return (self.count, 3, self.size, self.size)

    @property
    def nbytes(self) -> int:
        return math.prod(self.train_shape) + math.prod(self.test_shape) + self.count


@dataclass(frozen=True)
class CacheBuild:
    """What one call found and did: for logs, and for tests that nothing was decoded twice."""

    entry: CacheEntry
    decoded: int  # images decoded by this call
    already_done: int  # images found done (a resumed build, or a complete cache: all of them)
    workers: int
    seconds: float


def default_workers() -> int:
    """The CPUs this process may use (its affinity mask: what SLURM, taskset or a container
    grant), which os.cpu_count() overstates on a shared node."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cache_entry(cache_dir: Path, dataset: str, files: DomainFiles, image_size: int) -> CacheEntry:
    name = f"{dataset}-{files.domain}-{image_size}px-v{CACHE_FORMAT}-{files.fingerprint()}"
    return CacheEntry(cache_dir / name, len(files.paths), decoding.train_base_size(image_size), image_size)


# --- the record on disk ----------------------------------------------------------------------


def _meta(entry: CacheEntry, files: DomainFiles, complete: bool) -> dict:
    return {
        "format": CACHE_FORMAT,
        "domain": files.domain,
        "fingerprint": files.fingerprint(),
        "train": list(entry.train_shape),
        "test": list(entry.test_shape),
        "complete": complete,
    }


def _read_meta(entry: CacheEntry) -> dict | None:
    try:
        return json.loads(entry.meta_file.read_text())
    except (OSError, ValueError):
        return None


def _write_meta(entry: CacheEntry, meta: dict) -> None:
    tmp = entry.meta_file.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, entry.meta_file)


def _usable(entry: CacheEntry, files: DomainFiles) -> dict | None:
    """The entry's meta if its files are whole and describe these images, else None."""
    meta = _read_meta(entry)
    expected = _meta(entry, files, complete=bool(meta and meta.get("complete")))
    if meta != expected:
        return None
    sizes = {
        entry.train_file: math.prod(entry.train_shape),
        entry.test_file: math.prod(entry.test_shape),
        entry.done_file: entry.count,
    }
    try:
        if any(path.stat().st_size != size for path, size in sizes.items()):
            return None
    except OSError:
        return None
    return meta


def _allocate(path: Path, nbytes: int) -> None:
    """A file of `nbytes` with its blocks reserved, so a full disk fails here, not as a SIGBUS
    in the middle of writing through a memory map."""
    with open(path, "wb") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, nbytes)
        except OSError as err:
            if err.errno not in (95, 22):  # EOPNOTSUPP, EINVAL: no fallocate on this file system
                raise
            f.truncate(nbytes)


def _create(entry: CacheEntry, files: DomainFiles) -> None:
    """A fresh, empty entry (whatever was in its folder is discarded)."""
    shutil.rmtree(entry.folder, ignore_errors=True)
    free = shutil.disk_usage(entry.folder.parent).free
    if free < entry.nbytes:
        raise DataError(
            f"decoding {files.domain} at {entry.size} px needs {entry.nbytes / 2**30:.1f} GiB in "
            f"{entry.folder.parent}, which has {free / 2**30:.1f} GiB free (choose another --cache-dir)"
        )
    entry.folder.mkdir(parents=True)
    try:
        _allocate(entry.train_file, math.prod(entry.train_shape))
        _allocate(entry.test_file, math.prod(entry.test_shape))
        _allocate(entry.done_file, entry.count)  # zeros: nothing done
    except OSError as err:
        shutil.rmtree(entry.folder, ignore_errors=True)
        raise DataError(f"cannot create decode cache {entry.folder}: {err.strerror}") from None
    _write_meta(entry, _meta(entry, files, complete=False))


def done_mask(entry: CacheEntry) -> np.ndarray:
    """Which images of a (perhaps half-built) entry are on disk."""
    return np.fromfile(entry.done_file, dtype=np.uint8).astype(bool)


# --- decoding ----------------------------------------------------------------------------------

_worker_arrays: tuple[np.memmap, np.memmap, tuple[int, int]] | None = None


def _open_for_writing(entry: CacheEntry) -> tuple[np.memmap, np.memmap, tuple[int, int]]:
    train = np.memmap(entry.train_file, dtype=np.uint8, mode="r+", shape=entry.train_shape)
    test = np.memmap(entry.test_file, dtype=np.uint8, mode="r+", shape=entry.test_shape)
    return train, test, (entry.base, entry.size)


def _init_worker(entry: CacheEntry) -> None:
    global _worker_arrays
    _worker_arrays = _open_for_writing(entry)


def _decode_chunk(chunk: Sequence[tuple[int, str]]) -> list[int]:
    """Decode images into the arrays this worker mapped; their indices once all are written."""
    assert _worker_arrays is not None, "worker not initialised"
    train, test, sizes = _worker_arrays
    for index, path in chunk:
        big, small = decoding.decode(Path(path), sizes)  # looked up per call: tests count calls
        train[index] = big.transpose(2, 0, 1)
        test[index] = small.transpose(2, 0, 1)
    return [index for index, _ in chunk]


def _chunks(todo: np.ndarray, paths: Sequence[Path]) -> Iterator[list[tuple[int, str]]]:
    for begin in range(0, len(todo), CHUNK):
        yield [(int(i), str(paths[i])) for i in todo[begin : begin + CHUNK]]


class _Committer:
    """Marks finished images done, durably: the pixels are fsync-ed before their done bytes."""

    def __init__(self, entry: CacheEntry):
        self.entry = entry
        self.pending: list[int] = []
        self.last = time.monotonic()

    def add(self, indices: Sequence[int]) -> None:
        self.pending += indices
        if time.monotonic() - self.last >= COMMIT_EVERY_S:
            self.commit()

    def commit(self) -> None:
        if not self.pending:
            return
        for path in (self.entry.train_file, self.entry.test_file):
            fd = os.open(path, os.O_RDWR)
            try:
                os.fsync(fd)  # every process's writes to the file: one page cache
            finally:
                os.close(fd)
        fd = os.open(self.entry.done_file, os.O_RDWR)
        try:
            for begin, length in _runs(sorted(self.pending)):
                os.pwrite(fd, b"\x01" * length, begin)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.pending = []
        self.last = time.monotonic()


def _runs(indices: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Sorted indices as (first, length) runs of consecutive ones."""
    if not indices:
        return
    begin = prev = indices[0]
    for i in indices[1:]:
        if i == prev + 1:
            prev = i
        else:
            yield begin, prev - begin + 1
            begin = prev = i
    yield begin, prev - begin + 1


def _decode_serially(entry: CacheEntry, chunks: Iterator, finished: Callable[[list[int]], None]) -> None:
    global _worker_arrays
    _worker_arrays = _open_for_writing(entry)
    try:
        for chunk in chunks:
            finished(_decode_chunk(chunk))
    finally:
        _worker_arrays = None


def _decode_in_pool(
    entry: CacheEntry, chunks: Iterator, workers: int, finished: Callable[[list[int]], None]
) -> None:
    """A sliding window of chunks over a process pool; stops at the first error, after the
    chunks already running end (what they wrote is simply not marked done)."""
    # fork: workers start at once and need nothing re-imported (as DataLoader does on Linux).
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(entry,))
    running: set[Future] = set()
    try:
        for chunk in chunks:
            running.add(pool.submit(_decode_chunk, chunk))
            if len(running) >= 4 * workers:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    finished(future.result())
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                finished(future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def build_cache(
    entry: CacheEntry,
    files: DomainFiles,
    workers: int | None = None,
    progress: bool | None = None,
    on_progress: ProgressCallback | None = None,
) -> CacheBuild:
    """Decode what the entry still lacks (all of it for a new one), then mark it complete.

    Call with the entry's lock held. `workers=0` decodes in this process; `progress` None shows
    a bar only on a terminal. `on_progress(done, total)` runs in this process after each chunk;
    an exception from it stops the build like any other (finished chunks stay done).
    """
    start = time.perf_counter()
    if _usable(entry, files) is None:
        if entry.folder.exists():
            log.warning("decode cache %s is damaged or stale: building it again", entry.folder)
        _create(entry, files)
    done = done_mask(entry)
    todo = np.flatnonzero(~done)
    workers = default_workers() if workers is None else workers
    workers = min(workers, math.ceil(len(todo) / CHUNK))
    log.info(
        "decoding %d of %d images of %s at %d px into %s (%d workers)",
        *(len(todo), entry.count, files.domain, entry.size, entry.folder, workers),
    )
    committer = _Committer(entry)
    bar = tqdm(
        total=entry.count,
        initial=entry.count - len(todo),
        unit="img",
        desc=f"decoding {files.domain} at {entry.size} px",
        disable=None if progress is None else not progress,
    )
    done_count = entry.count - len(todo)

    def finished(indices: list[int]) -> None:
        nonlocal done_count
        committer.add(indices)
        bar.update(len(indices))
        done_count += len(indices)
        if on_progress:
            on_progress(done_count, entry.count)

    try:
        chunks = _chunks(todo, files.paths)
        if workers <= 0 or len(todo) <= CHUNK:
            _decode_serially(entry, chunks, finished)
        else:
            _decode_in_pool(entry, chunks, workers, finished)
    except BrokenProcessPool:
        raise DataError(
            f"a process decoding {files.domain} died (out of memory?); {done_count} of "
            f"{entry.count} images are cached and the next run resumes from there"
        ) from None
    finally:
        committer.commit()
        bar.close()
    _write_meta(entry, _meta(entry, files, complete=True))
    return CacheBuild(entry, len(todo), entry.count - len(todo), workers, time.perf_counter() - start)


# --- reading -----------------------------------------------------------------------------------


def open_cache(entry: CacheEntry, labels: Sequence[int]) -> DomainImages:
    """A complete entry, mapped copy-on-write: pages come from the shared page cache."""
    train = np.memmap(entry.train_file, dtype=np.uint8, mode="c", shape=entry.train_shape)
    test = np.memmap(entry.test_file, dtype=np.uint8, mode="c", shape=entry.test_shape)
    return DomainImages(
        torch.from_numpy(train), torch.from_numpy(test), torch.tensor(labels, dtype=torch.int64)
    )


def load_cached_domain(
    files: DomainFiles,
    image_size: int,
    cache_dir: Path,
    dataset: str,
    workers: int | None = None,
    progress: bool | None = None,
    on_progress: ProgressCallback | None = None,
) -> tuple[DomainImages, CacheBuild]:
    """A whole domain from the cache, decoding (or finishing) it first if needed (file-locked)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create cache folder {cache_dir}: {err.strerror}") from None
    entry = cache_entry(cache_dir, dataset, files, image_size)
    lock = FileLock(str(entry.folder) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process to finish decoding %s", entry.folder)
        lock.acquire()
    try:
        meta = _usable(entry, files)
        if meta is not None and meta["complete"]:
            built = CacheBuild(entry, 0, entry.count, 0, 0.0)
        else:
            built = build_cache(entry, files, workers, progress, on_progress)
        return open_cache(entry, files.labels), built
    finally:
        lock.release()


# --- PACS's `.pt` file (format 1) ------------------------------------------------------------


def pt_cache_path(cache_dir: Path, dataset: str, files: DomainFiles, image_size: int) -> Path:
    name = f"{dataset}-{files.domain}-{image_size}px-v{PT_CACHE_FORMAT}-{files.fingerprint()}.pt"
    return cache_dir / name


def load_pt_cache(
    files: DomainFiles, image_size: int, cache_dir: Path, dataset: str = "pacs"
) -> DomainImages:
    """A whole domain from its `.pt` file, decoded first if there is none (file-locked); a
    damaged file is decoded again, never trusted."""
    path = pt_cache_path(cache_dir, dataset, files, image_size)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create cache folder {cache_dir}: {err.strerror}") from None
    with FileLock(str(path) + ".lock"):
        if path.exists():
            try:
                stored = torch.load(path, mmap=True, weights_only=True)
                return DomainImages(stored["train"], stored["test"], stored["labels"])
            except Exception as err:  # a damaged cache file is rebuilt, never trusted
                log.warning("rebuilding damaged cache %s (%s)", path, err)
        images = decoding.decode_domain(files, image_size)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"train": images.train, "test": images.test, "labels": images.labels}, tmp)
        os.replace(tmp, path)
    return images
