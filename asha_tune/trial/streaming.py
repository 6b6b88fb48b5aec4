"""Training batches streamed from the memory-mapped cache, for data larger than a device budget.

Data that fits the budget goes to the trial's device whole, as today, and a batch is an index
into a device tensor. Beyond the budget, `BatchStream` gathers each batch's images from the
cache's memory map (cache.py) in a background thread, ahead of use:
- with CUDA, into pinned host buffers, copied to the device with `non_blocking` on a side stream;
  the next batch's gather and copy overlap this batch's compute (double-buffered: `depth`
  batches ready or in flight, plus the one being gathered), and the compute stream waits for
  the copy's event before it reads the batch;
- on the CPU, into plain tensors: the thread's gather (the page faults that read the cache file
  and the copy into a batch tensor) overlaps the step, and nothing else changes.
Either way a batch holds exactly the uint8 images the in-memory path would index for the same
order, in the same order, so a trial is the same with either path. Several source domains are
separate caches: `Parts` reads them as one array, without concatenating them.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

PathKind = Literal["memory", "stream"]


@dataclass(frozen=True)
class DataPath:
    """How a trial reads its images, and why: a decision a trial logs."""

    kind: PathKind
    bytes_needed: int
    budget_bytes: int

    def __str__(self) -> str:
        need, budget = _size(self.bytes_needed), _size(self.budget_bytes)
        if self.kind == "memory":
            return f"images in memory on the device: {need} fit the {budget} budget"
        return f"images streamed from the disk cache: {need} exceed the {budget} budget"


def _size(nbytes: int) -> str:
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.2f} GiB"
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.1f} KiB"


def choose_path(bytes_needed: int, budget_bytes: int) -> DataPath:
    """In memory when the trial's images fit its device budget, else streamed."""
    return DataPath("memory" if bytes_needed <= budget_bytes else "stream", bytes_needed, budget_bytes)


def images_bytes(count: int, side: int) -> int:
    """Bytes of `count` uint8 RGB images of side x side (what a device copy takes)."""
    return count * 3 * side * side


def device_budget(device: torch.device, fraction: float = 0.5, sharing: int = 1) -> int:
    """A default budget: `fraction` of the device's memory (CUDA) or of the host's available
    memory (CPU), split between the `sharing` trials that run on it at once."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        total = _host_available()
    return int(total * fraction / max(1, sharing))


def _host_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("MemAvailable not in /proc/meminfo")


class Parts:
    """Host tensors of one shape, one per domain, read as their concatenation (row r of part p is
    row starts[p] + r) without copying them into one."""

    def __init__(self, parts: Sequence[Tensor]):
        if not parts:
            raise ValueError("Parts needs one tensor at least")
        self.parts = list(parts)
        self.starts = torch.tensor([0, *itertools.accumulate(len(p) for p in self.parts)])
        self.shape = (int(self.starts[-1]), *self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def index_select(self, rows: Tensor, out: Tensor) -> Tensor:
        """`out[i] = concatenation[rows[i]]`, each part gathered with one index_select."""
        if len(self.parts) == 1:
            return torch.index_select(self.parts[0], 0, rows, out=out)
        which = torch.bucketize(rows, self.starts[1:], right=True)
        for part in which.unique().tolist():
            at = (which == part).nonzero().flatten()
            out[at] = torch.index_select(self.parts[part], 0, rows[at] - self.starts[part])
        return out


class _End:
    pass


@dataclass
class _Failure:
    error: BaseException


@dataclass
class _Ready:
    batch: Tensor  # on the trial's device
    copied: torch.cuda.Event | None = None  # CUDA: the host-to-device copy's end
    buffer: Tensor | None = None  # CUDA: the pinned buffer it was copied from


class BatchStream:
    """Batches `images[rows[i]]` for index batches `i`, gathered ahead on a background thread.

    `images` is a (memory-mapped) uint8 tensor on the host, e.g. a cached domain's `train`, or
    several as `Parts`; `rows` maps the trial's images to rows of it (the limit and the selection
    split), None for all of them. `pin`: None pins the host buffers exactly when the device is CUDA.
    """

    def __init__(
        self,
        images: Tensor | Parts,
        rows: Tensor | None = None,
        device: torch.device | str = "cpu",
        depth: int = 2,
        pin: bool | None = None,
    ):
        self.images = images
        self.rows = None if rows is None else rows.to("cpu", torch.long)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and self.device.index is None and torch.cuda.is_available():
            self.device = torch.device("cuda", torch.cuda.current_device())  # set_device needs one
        self.depth = max(1, depth)
        self.pin = (self.cuda and torch.cuda.is_available()) if pin is None else pin

    def __len__(self) -> int:
        return len(self.images) if self.rows is None else len(self.rows)

    def batches(self, order: Tensor, batch_size: int) -> Iterator[Tensor]:
        """The epoch's batches as the in-memory path cuts them: `order[b : b + batch_size]`."""
        order = order.to("cpu")
        return self.iterate(order[b : b + batch_size] for b in range(0, len(order), batch_size))

    def iterate(self, index_batches: Iterable[Tensor]) -> Iterator[Tensor]:
        """One device batch per index batch, in order; stops its thread when left early."""
        ready: queue.Queue = queue.Queue(maxsize=self.depth)
        free: queue.Queue = queue.Queue()  # CUDA: pinned buffers whose copy may still run
        for _ in range(self.depth + 1 if self.cuda and self.pin else 0):
            free.put((None, None))
        stop = threading.Event()
        worker = threading.Thread(
            target=self._produce, args=(iter(index_batches), ready, free, stop), daemon=True
        )
        worker.start()
        try:
            while True:
                item = ready.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield self._receive(item, free)
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting to put
                try:
                    ready.get(timeout=0.05)
                except queue.Empty:
                    pass
            worker.join()

    # -- the background thread --

    def _produce(
        self, index_batches: Iterator[Tensor], ready: queue.Queue, free: queue.Queue, stop: threading.Event
    ) -> None:
        try:
            if self.cuda:
                torch.cuda.set_device(self.device)  # per thread: the side stream's device
                side = torch.cuda.Stream(self.device)
            for index in index_batches:
                if stop.is_set():
                    return
                rows = index.to("cpu", torch.long)
                rows = rows if self.rows is None else self.rows[rows]
                item: _Ready | None = (
                    _Ready(self._gather(rows)) if not self.cuda else self._to_device(rows, free, side, stop)
                )
                if item is None:
                    return
                if not _put(ready, item, stop):
                    return
            _put(ready, _End(), stop)
        except BaseException as err:  # handed to the consumer, raised there
            _put(ready, _Failure(err), stop)

    def _gather(self, rows: Tensor, out: Tensor | None = None) -> Tensor:
        if out is None:
            out = torch.empty((len(rows), *self.images.shape[1:]), dtype=self.images.dtype)
        if isinstance(self.images, Parts):
            return self.images.index_select(rows, out)
        return torch.index_select(self.images, 0, rows, out=out)

    def _to_device(
        self, rows: Tensor, free: queue.Queue, side: torch.cuda.Stream, stop: threading.Event
    ) -> _Ready | None:
        if not self.pin:  # pageable memory: the copy is synchronous for the host
            host = self._gather(rows)
            with torch.cuda.stream(side):
                batch = host.to(self.device, non_blocking=True)
                copied = torch.cuda.Event()
                copied.record(side)
            return _Ready(batch, copied)
        got = _get(free, stop)
        if got is None:
            return None
        buffer, copied = got
        if copied is not None:
            copied.synchronize()  # the previous copy out of this buffer is over
        if buffer is None or len(buffer) < len(rows):
            shape = (len(rows), *self.images.shape[1:])
            buffer = torch.empty(shape, dtype=self.images.dtype, pin_memory=True)
        host = self._gather(rows, buffer[: len(rows)])
        with torch.cuda.stream(side):
            batch = host.to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(side)
        return _Ready(batch, copied, buffer)

    # -- the consumer --

    def _receive(self, item: _Ready, free: queue.Queue) -> Tensor:
        if item.copied is None:
            return item.batch
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(item.copied)  # the step reads the batch only after its copy
        item.batch.record_stream(compute)  # its memory is not reused before the step ends
        if item.buffer is not None:
            free.put((item.buffer, item.copied))
        return item.batch


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return None
