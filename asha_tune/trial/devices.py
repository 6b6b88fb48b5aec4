"""Where a trial computes: the device it was given, whether torch can use CUDA, and why not.

torch reports a CUDA it cannot use (a driver older than its build, a CPU-only build) only as a
warning, and `--device auto` then trains on the CPU. A trial that was given a GPU (by Ray, or by
`--device cuda`) must instead fail at once, saying which versions disagree; a trial given none
must not use one (Ray 2.60 no longer hides the GPUs from workers that were given none).
No Ray here: the sweep's trainable passes in the GPU ids Ray assigned.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from asha_tune.errors import DeviceError

NVIDIA_VERSION_FILE = Path("/proc/driver/nvidia/version")  # the kernel module's version line
# The oldest driver each CUDA major version runs on (NVIDIA's minor-version compatibility table).
MIN_DRIVER = {11: 450, 12: 525, 13: 580}


@dataclass(frozen=True)
class Driver:
    version: str | None  # e.g. 580.159.03
    cuda: str | None  # the newest CUDA it supports, from nvidia-smi's header, e.g. 13.0
    source: str  # where it was read


def _number(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def nvidia_driver() -> Driver | None:
    """This machine's NVIDIA driver (its kernel module's file, else nvidia-smi), None if neither."""
    version = cuda = None
    sources = []
    try:
        found = re.search(r"Module\b.*?\s(\d+\.\d+(?:\.\d+)?)\s", NVIDIA_VERSION_FILE.read_text() + " ")
        if found:
            version = found.group(1)
            sources.append(str(NVIDIA_VERSION_FILE))
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            header = subprocess.run([smi], capture_output=True, text=True, timeout=15).stdout
        except (OSError, subprocess.SubprocessError):
            header = ""
        if (found := re.search(r"Driver Version:\s*([\d.]+)", header)) and version is None:
            version = found.group(1)
        if found := re.search(r"CUDA Version:\s*([\d.]+)", header):
            cuda = found.group(1)
        if version or cuda:
            sources.append("nvidia-smi")
    if version is None and cuda is None:
        return None
    return Driver(version, cuda, " and ".join(sources))


def cuda_problem() -> str:
    """Why torch cannot use CUDA here, in one clause: its build, what hides the GPUs, the driver."""
    build = torch.version.cuda
    if build is None:
        return f"torch {torch.__version__} is a CPU-only build (install a CUDA build of torch)"
    head = f"torch {torch.__version__} is built for CUDA {build} and finds no CUDA device"
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1", "NoDevFiles"):
        return f"{head}: CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU"
    driver = nvidia_driver()
    if driver is None:
        return f"{head}: no NVIDIA driver on this machine (no {NVIDIA_VERSION_FILE}, no nvidia-smi)"
    needed = MIN_DRIVER.get(_number(build)[0])
    text = f"{head}: the NVIDIA driver is {driver.version or 'of unknown version'}"
    if driver.cuda:
        text += f" (CUDA {driver.cuda} at most)"
    too_old = (driver.cuda and _number(driver.cuda) < _number(build)[:2]) or (
        needed and driver.version and _number(driver.version)[0] < needed
    )
    if too_old:
        need = f"; CUDA {build} needs driver {needed} or newer" if needed else ""
        text += f"{need}: update the driver or install a torch build for the driver's CUDA"
    return f"{text} (read from {driver.source})"


def has_unusable_gpu() -> bool:
    """An NVIDIA driver is installed but torch cannot use CUDA (e.g. the driver is too old)."""
    return not torch.cuda.is_available() and nvidia_driver() is not None


def describe_device(device: torch.device) -> str:
    """`cpu`, or `cuda:0 NVIDIA H200`: what a trial's run records as the device it used."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} {torch.cuda.get_device_name(index)}"


def hide_gpus() -> None:
    """Keep this process off every GPU (before CUDA starts; it reads the variable once)."""
    if not torch.cuda.is_initialized():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def assigned_device(requested: str, gpu_ids: Sequence[object]) -> str:
    """The device of a sweep trial, from what it asked (`auto`, `cpu`, `cuda`) and the GPUs Ray
    gave it: none means the CPU (and CUDA hidden); some means CUDA, or a DeviceError at once."""
    if not gpu_ids:
        if requested == "cuda":
            raise DeviceError(
                "--device cuda, but Ray gave this trial no GPU (the space's resources.gpu is 0): "
                "set resources.gpu, or use --device auto"
            )
        hide_gpus()
        return "cpu"
    if requested == "cpu":
        return "cpu"  # the user's choice; the GPU share stays unused
    if not torch.cuda.is_available():
        ids = ",".join(str(i) for i in gpu_ids)
        raise DeviceError(f"Ray gave this trial GPU {ids}, but {cuda_problem()}")
    return "cuda"


def cuda_gpus(requested: str) -> list[str]:
    """The GPU a trial outside Ray computes on, as NVML names it (for its usage figures): torch's
    cuda:0, the first of CUDA_VISIBLE_DEVICES; none where it will train on the CPU."""
    if requested == "cpu" or not torch.cuda.is_available():
        return []
    return [os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip() or "0"]


def versions() -> dict[str, str | None]:
    """What a speed figure depends on besides the code: Python, torch and its CUDA, the driver."""
    import torchvision

    driver = nvidia_driver()
    return {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
        "driver": driver.version if driver else None,
        "driver_cuda": driver.cuda if driver else None,
    }
