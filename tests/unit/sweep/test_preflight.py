"""Impossible sweeps fail before anything starts: exit 2, one line, nothing written, no Ray."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from asha_tune.cli import main
from asha_tune.cluster.processes import free_port
from tests.helpers.processes import tagged_processes


def launch_fails(args: list[str], tmp_path, capsys) -> str:
    """Run `asha-tune launch ARGS` in an empty folder: the one error line it printed."""
    work = Path.cwd()
    before = time.monotonic()
    code = main(["launch", *args])
    assert code == 2
    assert time.monotonic() - before < 60
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("asha-tune launch: error: ")
    assert list(work.iterdir()) == []  # no stores, no results folder
    return err[0]


@pytest.fixture
def in_work(tmp_path, monkeypatch, process_tag):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    yield
    assert tagged_processes(process_tag, "raylet") == []  # no Ray was started


def test_the_parent_of_pacs_is_not_a_data_root(synthetic_pacs, tmp_path, monkeypatch, capsys, in_work):
    line = launch_fails(
        ["--space", "quickstart", "--data-root", str(synthetic_pacs.parent)], tmp_path, capsys
    )
    assert line.endswith(
        f"data root {synthetic_pacs.parent} does not hold the PACS domain(s) art_painting, "
        f"cartoon; did you mean --data-root {synthetic_pacs}?"
    )


def test_every_domain_the_space_reads_is_checked(synthetic_pacs, tmp_path, capsys, in_work):
    shutil.rmtree(synthetic_pacs / "photo" / "horse")
    space = tmp_path / "targets.yaml"  # photo is only a searched value
    space.write_text(
        "name: targets\nsearch: {num_trials: 2}\ntrain: {weights: none}\nresources: {cpu: 1}\n"
        "parameters:\n  data.targets: {type: categorical, values: [[cartoon], [photo]]}\n"
    )
    line = launch_fails(["--space", str(space), "--data-root", str(synthetic_pacs)], tmp_path, capsys)
    assert line.endswith(f"class folder {synthetic_pacs / 'photo' / 'horse'} is missing")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_a_gpu_space_on_a_machine_without_gpu(synthetic_pacs, tmp_path, capsys, in_work):
    line = launch_fails(["--space", "random_layers", "--data-root", str(synthetic_pacs)], tmp_path, capsys)
    assert line == (
        "asha-tune launch: error: space random_layers asks for 0.25 GPU per trial and this machine "
        "has no GPU: add --set resources.gpu=0 to train on the CPU (slow: a 30-epoch trial at "
        "224 px takes hours on a CPU), or run it on a Ray cluster with GPUs (--address)"
    )


def test_more_cpus_per_trial_than_the_machine_has(synthetic_pacs, tmp_path, capsys, in_work):
    line = launch_fails(
        [
            "--space",
            "quickstart",
            "--data-root",
            str(synthetic_pacs),
            "--num-cpus",
            "2",
            "--set",
            "resources.cpu=3",
        ],
        tmp_path,
        capsys,
    )
    assert line.endswith(
        "space quickstart asks for 3 CPUs per trial and this machine has 2: add --set resources.cpu=2"
    )


def test_imagenet_weights_that_cannot_be_fetched(synthetic_pacs, tmp_path, capsys, in_work):
    # A proxy nobody listens on: the download fails at once, as on a machine without internet.
    # (In a child process: urllib keeps the proxy of its first request for the process's life.)
    dead = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env.update({var: dead for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY")})
    env["TORCH_HOME"] = str(tmp_path / "torch")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "asha_tune.cli",
            "launch",
            "--space",
            "quickstart",
            "--data-root",
            str(synthetic_pacs),
            "--weights",
            "imagenet",
        ],
        cwd=Path.cwd(),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        "asha-tune launch: error: cannot fetch ImageNet weights from "
        "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    )
    assert f"put that file at {tmp_path / 'torch' / 'hub' / 'checkpoints' / 'resnet18-f37072fd.pth'}" in line
    assert line.endswith("or pass --weights PATH to a local state dict, or --weights none")
    assert list(Path.cwd().iterdir()) == []
    # ... and the form the message names works on launch.
    assert main(["launch", "--space", "quickstart", "--weights", "none", "--dry-run"]) == 0


def test_weights_files_must_exist_and_be_absolute(synthetic_pacs, tmp_path, capsys, in_work):
    line = launch_fails(
        [
            "--space",
            "quickstart",
            "--data-root",
            str(synthetic_pacs),
            "--weights",
            str(tmp_path / "nope.pth"),
        ],
        tmp_path,
        capsys,
    )
    assert line.endswith(
        f"weights file {tmp_path / 'nope.pth'} does not exist (use imagenet, none or a path)"
    )
    line = launch_fails(
        ["--space", "quickstart", "--data-root", str(synthetic_pacs), "--weights", "w.pth"], tmp_path, capsys
    )
    assert line.endswith("weights w.pth: give an absolute path (trials run in other folders)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine where torch has no CUDA")
def test_a_gpu_that_torch_cannot_use_is_not_called_no_gpu(
    synthetic_pacs, tmp_path, capsys, in_work, monkeypatch
):
    from asha_tune.trial import devices

    version = tmp_path / "nvidia-version"  # the file a real NVIDIA driver 535 writes
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 2023\n")
    monkeypatch.setattr(devices, "NVIDIA_VERSION_FILE", version)
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)
    line = launch_fails(["--space", "random_layers", "--data-root", str(synthetic_pacs)], tmp_path, capsys)
    assert line.startswith(
        "asha-tune launch: error: space random_layers asks for 0.25 GPU per trial and this machine "
        f"has a GPU, but torch {torch.__version__} is built for CUDA {torch.version.cuda}"
    )
    assert "the NVIDIA driver is 535.104.05" in line
    assert "no GPU" not in line
    assert line.endswith(
        "or add --set resources.gpu=0 to train on the CPU (slow: a 30-epoch trial at "
        "224 px takes hours on a CPU)"
    )
    line = launch_fails(
        ["--space", "quickstart", "--data-root", str(synthetic_pacs), "--device", "cuda"], tmp_path, capsys
    )
    assert line.startswith("asha-tune launch: error: --device cuda: this machine has a GPU, but torch ")
