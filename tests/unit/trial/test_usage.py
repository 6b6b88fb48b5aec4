"""A trial's device use per epoch (trial/usage.py): the process's CPU and memory always, its GPUs'
figures only where NVML reads them, never an error without one. NVML is played by a stand-in
with known figures; this machine's own (no NVML library) is the path without a GPU."""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import pytest

from asha_tune.tracking.tags import (
    CPU_METRIC,
    GPU_MEMORY_METRIC,
    GPU_UTILIZATION_METRIC,
    MEMORY_METRIC,
    USAGE_METRICS,
)
from asha_tune.trial import usage
from asha_tune.trial.usage import UsageSampler


class FakeNVML:
    """NVML's calls as trial/usage.py makes them: GPUs by index or UUID, each with a utilisation
    and memory used; `no_util` GPUs refuse utilisation (a MIG slice)."""

    def __init__(self, util: dict[str, float], used_mb: dict[str, float], no_util: tuple[str, ...] = ()):
        self.util, self.used, self.no_util = util, used_mb, no_util
        self.shut = False

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        if str(index) not in self.util:
            raise RuntimeError("NVMLError_InvalidArgument")
        return str(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid not in self.util:
            raise RuntimeError("NVMLError_NotFound")
        return uuid

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> SimpleNamespace:
        if handle in self.no_util:
            raise RuntimeError("NVMLError_NotSupported")
        return SimpleNamespace(gpu=self.util[handle], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(used=self.used[handle] * 1e6, total=80e9, free=0)

    def nvmlShutdown(self) -> None:
        self.shut = True


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_an_epoch_reports_the_processs_cpu_and_memory_and_no_gpu_figure_without_gpus():
    sampler = UsageSampler(every_s=0.2)
    try:
        wall, cpu = time.monotonic(), time.process_time()
        sampler.begin()
        busy(0.4)
        first = sampler.epoch()
        expected = 100 * (time.process_time() - cpu) / (time.monotonic() - wall)  # the machine is shared
        time.sleep(0.4)  # an idle epoch: the CPU figure is the new epoch's, not the trial's so far
        second = sampler.epoch()
    finally:
        sampler.close()
    assert set(first) == set(second) == {CPU_METRIC, MEMORY_METRIC}
    assert first[CPU_METRIC] == pytest.approx(expected, rel=0.2)  # the process's CPU over the epoch
    assert first[CPU_METRIC] > 20
    assert second[CPU_METRIC] < first[CPU_METRIC] / 2
    assert first[MEMORY_METRIC] > 10  # this Python process is tens of MB at the least
    assert set(first) <= set(USAGE_METRICS)


def test_the_gpus_named_give_their_mean_utilisation_and_peak_memory_together():
    nvml = FakeNVML({"0": 40.0, "1": 90.0, "GPU-abc": 10.0}, {"0": 1000.0, "1": 3000.0, "GPU-abc": 500.0})
    sampler = UsageSampler(gpus=[0, "1"], every_s=0.05, nvml=nvml)
    try:
        time.sleep(0.2)
        sampler._stop.set()  # the thread's samples end here: the rest are the epochs' own, known
        sampler._thread.join()
        nvml.util["0"], nvml.used["1"] = 60.0, 2000.0  # utilisation rises, memory falls: the peak stays
        figures = sampler.epoch()
        nvml.util["1"] = 50.0
        nxt = sampler.epoch()  # a new epoch: its own samples only
    finally:
        sampler.close()
    assert 65.0 <= figures[GPU_UTILIZATION_METRIC] <= 75.0  # between (40+90)/2 and (60+90)/2
    assert figures[GPU_MEMORY_METRIC] == 4000.0  # 1000 + 3000 MB, the peak of the two together
    assert nxt[GPU_UTILIZATION_METRIC] == 55.0
    assert nxt[GPU_MEMORY_METRIC] == 3000.0
    assert not nvml.shut  # an NVML it was given is not its to shut down

    by_uuid = UsageSampler(gpus=["GPU-abc"], every_s=10, nvml=nvml)
    assert by_uuid.epoch()[GPU_UTILIZATION_METRIC] == 10.0
    by_uuid.close()


def test_a_gpu_nvml_cannot_read_leaves_out_only_what_it_cannot_read():
    nvml = FakeNVML({"0": 30.0, "MIG-x": 0.0}, {"0": 100.0, "MIG-x": 700.0}, no_util=("MIG-x",))
    mig = UsageSampler(gpus=["MIG-x"], every_s=10, nvml=nvml)
    figures = mig.epoch()
    mig.close()
    assert GPU_UTILIZATION_METRIC not in figures
    assert figures[GPU_MEMORY_METRIC] == 700.0
    unknown = UsageSampler(gpus=["7", "GPU-gone", "not a gpu"], every_s=10, nvml=nvml)
    figures = unknown.epoch()
    unknown.close()
    assert set(figures) == {CPU_METRIC, MEMORY_METRIC}


def test_without_nvml_a_trial_given_a_gpu_logs_no_gpu_figure_and_does_not_fail(monkeypatch):
    # This machine's own path (no NVML library, no driver), or a stand-in for it where NVML works.
    if usage._nvml() is not None:
        monkeypatch.setattr(usage, "_nvml", lambda: None)
    sampler = UsageSampler(gpus=[0], every_s=0.05)
    time.sleep(0.1)
    assert set(sampler.epoch()) == {CPU_METRIC, MEMORY_METRIC}
    sampler.close()
    # nvidia-ml-py not installed at all: the same.
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert usage._nvml() is None


def test_one_sampler_per_process_kept_from_trial_to_trial_on_the_same_gpus():
    first = usage.trial_usage()
    try:
        assert usage.trial_usage() is first  # the next trial in a reused process
        other = usage.trial_usage(["3"])  # other GPUs: a new sampler, the old one stopped
        assert other is not first
        assert not first._thread.is_alive()
    finally:
        for sampler in usage._PROCESS.values():
            sampler.close()
        usage._PROCESS.clear()


@pytest.mark.parametrize("gpus", [(), ("0",)])
def test_a_sampler_stops_its_thread_when_closed(gpus):
    sampler = UsageSampler(gpus=gpus, every_s=0.05, nvml=FakeNVML({"0": 1.0}, {"0": 1.0}))
    sampler.close()
    assert not sampler._thread.is_alive()
