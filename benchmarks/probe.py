"""What the machine did while a benchmark ran: load, CPU time by whom, memory of trial processes.

The machine may be shared, so every figure a benchmark prints comes with the load it was taken
under. Processes of one run are found by a marker in their environment (Ray's processes inherit
the driver's), never by name, so other users' Ray instances are neither counted nor touched.
Linux /proc only.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TAG_ENV = "ASHA_TUNE_BENCH_TAG"
TICK = os.sysconf("SC_CLK_TCK")
TRIAL_PROCESS = "ImplicitFunc"  # Ray's process title for a Tune function trainable's actor


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / TICK, sum(fields) / TICK


def cpu_model() -> str:
    """The CPU's model name, as every benchmark records it beside its figures."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def process_cpu_s(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat.rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICK  # utime + stime


def process_start_time(pid: int) -> float:
    """Wall-clock time at which `pid` started."""
    rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    boot = next(
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime")
    )
    return boot + int(rest[19]) / TICK


def memory_kib(pid: int) -> dict[str, int] | None:
    """Rss, Pss and their anonymous and file parts (smaps_rollup), in KiB."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    wanted = {"Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem"}
    out = {}
    for line in text.splitlines()[1:]:
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = int(value.split()[0])
    return out


def tagged(tag: str, known: dict[int, bool]) -> list[int]:
    """Pids carrying `tag` in their environment; `known` caches the answer per pid."""
    marker = f"{TAG_ENV}={tag}".encode()
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid not in known:
            try:
                known[pid] = marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                known[pid] = False
        if known[pid]:
            pids.append(pid)
    return pids


def is_trial_process(pid: int) -> bool:
    try:
        return TRIAL_PROCESS in Path(f"/proc/{pid}/cmdline").read_text(errors="ignore")
    except OSError:
        return False


@dataclass
class Probe:
    """Samples in a thread from start() to stop(); `summary()` gives the figures."""

    tag: str
    interval_s: float = 0.5
    memory: bool = False
    _cpu: dict[int, tuple[float, float]] = field(default_factory=dict)  # pid -> (first, last)
    _known: dict[int, bool] = field(default_factory=dict)
    _loads: list[float] = field(default_factory=list)
    _memory: list[dict[str, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Probe:
        self._t0 = time.time()
        self._machine0 = machine_busy_s()
        self._load0 = load_average()
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        self._loads.append(load_average())
        initial = not self._cpu
        trials = []
        for pid in tagged(self.tag, self._known):
            cpu = process_cpu_s(pid)
            if cpu is None:
                continue
            # Processes alive at the first sample count from then, later ones from their start.
            first = self._cpu[pid][0] if pid in self._cpu else (cpu if initial else 0.0)
            self._cpu[pid] = (first, cpu)
            if self.memory and is_trial_process(pid):
                trials.append(pid)
        per = [m for m in (memory_kib(pid) for pid in trials) if m]
        if per:
            self._memory.append(
                {
                    "processes": len(per),
                    **{
                        f"{k}_mib": sum(m.get(k, 0) for m in per) / 1024
                        for k in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")
                    },
                }
            )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._t1 = time.time()
        self._machine1 = machine_busy_s()

    def summary(self) -> dict:
        seconds = self._t1 - self._t0
        busy = self._machine1[0] - self._machine0[0]
        ours = sum(last - first for first, last in self._cpu.values())
        cores = os.cpu_count() or 1
        out = {
            "seconds": seconds,
            "cores": cores,
            "load_1min_start": self._load0,
            "load_1min_mean": sum(self._loads) / len(self._loads),
            "load_1min_max": max(self._loads),
            "machine_busy_cores": busy / seconds,
            "our_cpu_s": ours,
            "our_busy_cores": ours / seconds,
            # Whatever else the machine did meanwhile, in cores (other users' work).
            "others_busy_cores": max(0.0, busy - ours) / seconds,
            "processes": len(self._cpu),
        }
        if self._memory:
            peak = max(self._memory, key=lambda m: m["Pss_mib"])
            out["memory_peak"] = peak
        return out
