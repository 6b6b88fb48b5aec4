"""What a trial uses while it runs, epoch by epoch: the CPU and host memory of its process (psutil)
and, where it was given GPUs, their utilisation and memory (NVML, through nvidia-ml-py).

Sampled in the trial's own process and returned with each epoch's metrics (under the names
below, which tracking/tags.py gathers as USAGE_METRICS), so the figures travel as every epoch metric does: the
sweep's driver writes them to the trial's MLflow run, each epoch once across retries and resumes,
and no trial opens the tracking store. (MLflow's own system-metrics monitor would: a writer per
trial on one SQLite file, every GPU of the machine rather than the trial's, steps that are not
epochs.) No torch: rehearsals sample too.

Only the GPUs named are read: a sweep trial's are those Ray gave it (`ray.get_gpu_ids()`: NVML
indices, or UUIDs where CUDA_VISIBLE_DEVICES names GPUs so). A GPU's utilisation is the whole
device's (NVML does not split it by process): on a GPU that several trials share, each trial's
figure counts them all, which is what says whether the GPU is kept busy. Without NVML (no
driver, no GPU) the GPU figures are left out, never an error.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

SAMPLE_EVERY_S = 1.0  # GPU utilisation and memory peaks between an epoch's ends
# The metrics' names (tracking/tags.py names them for the records: USAGE_METRICS).
CPU_METRIC = "system_cpu_percent"
MEMORY_METRIC = "system_memory_mb"
GPU_UTILIZATION_METRIC = "gpu_utilization_percent"
GPU_MEMORY_METRIC = "gpu_memory_mb"
MB = 1e6


def _nvml() -> Any | None:
    """pynvml, initialised; None where NVML cannot start (no library, no driver, no GPU)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
        return None
    return pynvml


def _handle(nvml: Any, gpu: object) -> Any | None:
    """NVML's handle of a GPU named by index (`0`, "1") or UUID ("GPU-...", "MIG-...")."""
    name = str(gpu).strip()
    try:
        if name.startswith(("GPU-", "MIG-")):
            return nvml.nvmlDeviceGetHandleByUUID(name)
        return nvml.nvmlDeviceGetHandleByIndex(int(name))
    except Exception:  # NVMLError, or a name that is neither
        return None


class UsageSampler:
    """A trial's use of its machine, one set of figures per epoch (`epoch()`), from a thread that
    samples every `every_s` seconds; `close()` when the trial ends."""

    def __init__(self, gpus: Sequence[object] = (), every_s: float = SAMPLE_EVERY_S, nvml: Any = None):
        import psutil

        self._process = psutil.Process()
        self._owns_nvml = nvml is None and bool(gpus)  # initialised here: shut down in close()
        self._nvml: Any = (nvml or _nvml()) if gpus else None
        handles = [_handle(self._nvml, g) for g in gpus] if self._nvml is not None else []
        self._gpus = [h for h in handles if h is not None]
        self._owns_nvml = self._owns_nvml and self._nvml is not None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._epoch = 0
        self._start_epoch()
        self._thread = threading.Thread(target=self._run, args=(every_s,), name="trial-usage", daemon=True)
        self._thread.start()

    def _start_epoch(self) -> None:
        self._epoch += 1  # a sample read across an epoch's end is dropped
        self._since, self._cpu_s = time.monotonic(), self._cpu_seconds()
        self._memory = 0.0  # peak resident bytes of the process and its children
        self._util: list[float] = []  # each sample's mean utilisation over the GPUs, %
        self._gpu_memory: float | None = None  # peak bytes used on the GPUs together, once read

    def _tree(self) -> Iterator[Any]:
        yield self._process
        with contextlib.suppress(Exception):
            yield from self._process.children(recursive=True)

    def _cpu_seconds(self) -> float:
        """CPU time of the process, its children that ended (waited for) and those that run."""
        total = 0.0
        for i, p in enumerate(self._tree()):
            with contextlib.suppress(Exception):  # a child that ended meanwhile
                t = p.cpu_times()
                total += t.user + t.system + (t.children_user + t.children_system if i == 0 else 0.0)
        return total

    def _sample(self) -> None:
        with self._lock:
            epoch = self._epoch
        rss = 0.0
        for p in self._tree():
            with contextlib.suppress(Exception):
                rss += p.memory_info().rss
        util, used = [], []
        for h in self._gpus:
            with contextlib.suppress(Exception):  # e.g. utilisation on a MIG slice: not supported
                util.append(float(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu))
            with contextlib.suppress(Exception):
                used.append(float(self._nvml.nvmlDeviceGetMemoryInfo(h).used))
        with self._lock:
            if epoch != self._epoch:
                return
            self._memory = max(self._memory, rss)
            if util:
                self._util.append(sum(util) / len(util))
            if used:
                self._gpu_memory = max(self._gpu_memory or 0.0, sum(used))

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self._sample()

    def epoch(self) -> dict[str, float]:
        """The figures since the last call (or since the sampler started), and a new epoch begins:
        CPU in % of one core, peak host memory in MB; where GPUs were read, their mean utilisation
        in % and peak memory used in MB."""
        self._sample()  # the epoch's end: an epoch shorter than a sampling period has one too
        with self._lock:
            wall = max(time.monotonic() - self._since, 1e-6)
            figures = {
                CPU_METRIC: round(100 * max(self._cpu_seconds() - self._cpu_s, 0.0) / wall, 1),
                MEMORY_METRIC: round(self._memory / MB, 1),
            }
            if self._util:
                figures[GPU_UTILIZATION_METRIC] = round(sum(self._util) / len(self._util), 1)
            if self._gpu_memory is not None:
                figures[GPU_MEMORY_METRIC] = round(self._gpu_memory / MB, 1)
            self._start_epoch()
        return figures

    def begin(self) -> UsageSampler:
        """A new trial's first epoch begins now."""
        with self._lock:
            self._start_epoch()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._owns_nvml:
            self._owns_nvml = False
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()


_PROCESS: dict[tuple[str, ...], UsageSampler] = {}  # this process's sampler, by the GPUs it reads


def trial_usage(gpus: Sequence[object] = ()) -> UsageSampler:
    """The sampler of a trial that starts now, reading `gpus`: one per process, kept from trial to
    trial (a sweep reuses a trial's process for the next, on the same GPUs), so nothing is left
    to close however a trial ends."""
    key = tuple(str(g) for g in gpus)
    if key not in _PROCESS:
        for old in _PROCESS.values():
            old.close()
        _PROCESS.clear()
        _PROCESS[key] = UsageSampler(gpus)
    return _PROCESS[key].begin()
