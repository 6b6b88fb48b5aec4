"""Which device a trial uses, and the one line when it was given a GPU torch cannot use.

On this CPU-only machine a GPU that torch cannot drive is shown by the file its driver's kernel
module writes (/proc/driver/nvidia/version), pointed at a copy with a real driver's text.
"""

from __future__ import annotations

import logging
import os

import pytest
import torch

from asha_tune.errors import AshaTuneError, DeviceError
from asha_tune.trial import devices
from asha_tune.trial.devices import assigned_device, cuda_problem, describe_device, nvidia_driver
from asha_tune.trial.training import resolve_device

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine where torch has no CUDA")

OLD_DRIVER = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
)


@pytest.fixture
def old_driver(tmp_path, monkeypatch):
    """This machine as one with an NVIDIA driver 535 (CUDA 12.2) and torch's CUDA 13.0 build."""
    path = tmp_path / "version"
    path.write_text(OLD_DRIVER)
    monkeypatch.setattr(devices, "NVIDIA_VERSION_FILE", path)
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)  # no nvidia-smi
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return path


@pytest.fixture
def no_driver(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "NVIDIA_VERSION_FILE", tmp_path / "absent")
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_the_driver_is_read_from_its_kernel_modules_file(old_driver):
    driver = nvidia_driver()
    assert driver is not None
    assert driver.version == "535.104.05"
    assert driver.source == str(old_driver)
    open_module = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.03  Release Build\n"
    old_driver.write_text(open_module)
    assert nvidia_driver().version == "580.159.03"


def test_the_mismatch_names_torchs_cuda_build_and_the_driver(old_driver):
    line = cuda_problem()
    assert "\n" not in line
    assert line.startswith(f"torch {torch.__version__} is built for CUDA {torch.version.cuda}")
    assert "the NVIDIA driver is 535.104.05" in line
    if torch.version.cuda.startswith("13."):  # the pinned build: CUDA 13.0 needs driver 580
        assert f"CUDA {torch.version.cuda} needs driver 580 or newer: update the driver" in line


def test_without_a_driver_the_line_says_so(no_driver):
    assert cuda_problem().endswith(
        f"no CUDA device: no NVIDIA driver on this machine (no {devices.NVIDIA_VERSION_FILE}, no nvidia-smi)"
    )


def test_a_trial_given_no_gpu_runs_on_the_cpu_with_cuda_hidden(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert assigned_device("auto", []) == "cpu"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # torch in this process sees no GPU
    assert assigned_device("cpu", []) == "cpu"
    with pytest.raises(DeviceError, match=r"^--device cuda, but Ray gave this trial no GPU"):
        assigned_device("cuda", [])


def test_a_trial_given_a_gpu_that_torch_cannot_use_fails_at_once(old_driver):
    with pytest.raises(DeviceError) as err:
        assigned_device("auto", ["0"])
    assert isinstance(err.value, AshaTuneError)  # a sweep records it as failed, never retried
    assert str(err.value) == f"Ray gave this trial GPU 0, but {cuda_problem()}"
    assert assigned_device("cpu", ["0"]) == "cpu"  # --device cpu is the user's choice


def test_device_cuda_names_the_mismatch_and_auto_warns_where_a_gpu_is_unusable(old_driver, caplog):
    with pytest.raises(DeviceError, match="^--device cuda: torch .* the NVIDIA driver is 535.104.05"):
        resolve_device("cuda")
    with caplog.at_level(logging.WARNING, logger="asha_tune.training"):
        assert resolve_device("auto") == torch.device("cpu")
    assert "training on the CPU: this machine has a GPU, but torch" in caplog.text


def test_auto_on_a_machine_without_a_gpu_is_quietly_the_cpu(no_driver, caplog):
    with caplog.at_level(logging.WARNING, logger="asha_tune.training"):
        assert describe_device(resolve_device("auto")) == "cpu"
    assert caplog.text == ""
