"""CUDA paths of the trial (AMP, channels_last, data and masks on the GPU). Skipped without CUDA.

Runs on the lent GPU machine through benchmarks/gpu_check.sh, where Ray, MLflow and Optuna are
absent: nothing at module level imports them, and the one test that needs them (trials sharing
a GPU through Ray) skips there with a one-line reason and runs on a GPU node that has them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
import torch

from asha_tune.trial.config import Runtime
from asha_tune.trial.shaping import bernoulli_mask
from asha_tune.trial.training import Trial, load_checkpoint, run_trial, save_checkpoint
from tests.helpers.data import REPO, tiny_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def cuda_runtime(tiny_runtime) -> Runtime:
    return tiny_runtime.model_copy(update={"device": "cuda"})


def parameters(trial: Trial) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trial.model.named_parameters()}


def counted(acc: float, n: int) -> bool:
    """An accuracy in % that is k correct out of n images for a whole k."""
    k = acc * n / 100
    return 0 <= k <= n and abs(k - round(k)) < 1e-6


@pytest.mark.parametrize(
    "shaping",
    [
        {"mode": "baseline"},
        {"mode": "random", "convs": [1, 7], "p0": "0.7:0.1"},
        {"mode": "target", "convs": [4]},
        {"mode": "bn_only"},
        {"mode": "target", "convs": [4], "shape_fn": "topk", "topk_fraction": 0.3},
    ],
)
def test_every_mode_trains_on_cuda_with_amp_and_channels_last(cuda_runtime, shaping):
    trial = Trial(tiny_config(shaping=shaping), cuda_runtime)
    assert trial.amp == torch.float16
    assert trial.channels_last
    assert trial.scaler.is_enabled()
    assert trial.data.source.train.device.type == "cuda"  # the data lives on the GPU
    assert trial.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    before = parameters(trial)
    metrics = trial.run_epoch()
    assert math.isfinite(metrics["train_loss"])  # neither NaN nor inf
    after = parameters(trial)
    assert all(torch.isfinite(p).all() for p in after.values())
    assert any(not torch.equal(after[k], before[k]) for k in before)  # it trained
    assert counted(metrics["acc_cartoon"], metrics["n_cartoon"])
    assert metrics["n_cartoon"] > 0
    assert metrics["device"] == f"cuda:{torch.cuda.current_device()} {torch.cuda.get_device_name()}"


def test_masks_are_drawn_on_the_gpu_with_a_cuda_generator():
    g = torch.Generator(device="cuda").manual_seed(0)
    like = torch.empty(64, 64, 56, 56, device="cuda", dtype=torch.float16).contiguous(
        memory_format=torch.channels_last
    )
    mask = bernoulli_mask(like, 0.7, g)
    assert mask.device.type == "cuda"
    assert mask.is_contiguous(memory_format=torch.channels_last)
    assert abs((~mask).float().mean().item() - 0.7) < 0.01


def test_fp16_trains_for_several_epochs_and_learns(cuda_runtime):
    """The synthetic set's colour decides the label: fp16 with its scaler fits it, epoch after epoch."""
    result = run_trial(tiny_config(train={"epochs": 6, "lr": 0.01}), cuda_runtime)
    losses = [m["train_loss"] for m in result.history]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
    assert result.final["source_acc"] > 40


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("precision", ["auto", "bf16"])  # auto is fp16 with a GradScaler on CUDA
def test_resume_through_checkpoint_files_matches_an_uninterrupted_run(cuda_runtime, tmp_path, precision):
    """Exact where two uninterrupted runs are (cuDNN may choose non-deterministic kernels, which
    CUDA's own atomics make differ run to run): else within ten times their spread."""
    config = tiny_config(
        shaping={"mode": "random", "convs": [1, 7], "p0": 0.5}, train={"epochs": 4, "precision": precision}
    )
    finals = {}

    def keep(name):
        def report(metrics, state):
            finals[name] = {
                "model": {k: v.detach().clone() for k, v in state["model"].items()},
                "scaler": dict(state["scaler"]),
            }

        return report

    full = run_trial(config, cuda_runtime, report=keep("full"))
    run_trial(config, cuda_runtime, report=keep("again"))
    path = tmp_path / "trial.pt"

    def killed_after_two(metrics, state):
        save_checkpoint(state, path)
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(config, cuda_runtime, report=killed_after_two)
    state = load_checkpoint(path)  # from the file, as a resume reads it
    assert state["epoch"] == 2
    assert state["device"] == "cuda"
    assert "cuda" in state["rng"]
    assert bool(state["scaler"]) == (precision == "auto")  # fp16 saves its scaler's scale
    resumed = run_trial(config, cuda_runtime, resume=state, report=keep("resumed"))

    assert [m["epoch"] for m in resumed.history] == [1, 2, 3, 4]
    spread = max_difference(finals["full"]["model"], finals["again"]["model"])
    drift = max_difference(finals["full"]["model"], finals["resumed"]["model"])
    if spread == 0:
        assert drift == 0, f"two uninterrupted runs agree exactly, the resumed one differs by {drift}"
        assert finals["resumed"]["scaler"] == finals["full"]["scaler"]
        strip = [{k: v for k, v in m.items() if not k.startswith("time_")} for m in resumed.history]
        assert strip == [{k: v for k, v in m.items() if not k.startswith("time_")} for m in full.history]
    else:
        assert drift <= 10 * spread, f"resumed differs by {drift}, two uninterrupted runs by {spread}"


def test_a_checkpoint_moves_from_the_cpu_to_cuda_and_back(tiny_runtime, cuda_runtime, tmp_path):
    """`resume --device`: CPU fp32 -> CUDA fp16 (a fresh scaler, re-seeded device streams) and
    CUDA -> CPU; what carries over exactly is tested on the CPU (tests/unit/trial/test_training.py)."""
    config = tiny_config(shaping={"mode": "random", "convs": [1], "p0": 0.5}, train={"epochs": 2})
    path = tmp_path / "trial.pt"

    def stop_after_one(metrics, state):
        save_checkpoint(state, path)
        raise KeyboardInterrupt

    for first, then in ((tiny_runtime, cuda_runtime), (cuda_runtime, tiny_runtime)):
        with pytest.raises(KeyboardInterrupt):
            run_trial(config, first, report=stop_after_one)
        state = load_checkpoint(path)
        assert state["device"] == first.device
        resumed = run_trial(config, then, resume=state)
        assert [m["epoch"] for m in resumed.history] == [1, 2]
        assert [m["device"].split(":")[0] for m in resumed.history] == [first.device, then.device]
        assert math.isfinite(resumed.final["train_loss"])


@pytest.mark.parametrize("protocol", ["source_val", "target_val"])
def test_selection_subsets_index_the_same_images_on_cuda_as_on_the_cpu(tiny_runtime, cuda_runtime, protocol):
    config = tiny_config(selection={"protocol": protocol})
    on_cpu, on_gpu = Trial(config, tiny_runtime), Trial(config, cuda_runtime)
    pairs = [(on_cpu.data.source, on_gpu.data.source)]
    pairs += [(on_cpu.data.val[d], on_gpu.data.val[d]) for d in on_cpu.data.val]
    pairs += [(on_cpu.data.targets[d], on_gpu.data.targets[d]) for d in on_cpu.data.targets]
    for cpu, gpu in pairs:
        assert gpu.labels.device.type == "cuda"
        assert torch.equal(gpu.train.cpu(), cpu.train)
        assert torch.equal(gpu.test.cpu(), cpu.test)
        assert torch.equal(gpu.labels.cpu(), cpu.labels)
    metrics = on_gpu.run_epoch()
    assert metrics["n_val"] == sum(len(v) for v in on_gpu.data.val.values()) > 0
    assert counted(metrics["val_acc"], metrics["n_val"])
    assert math.isfinite(metrics["train_loss"])


def test_a_trial_given_no_gpu_runs_on_the_cpu_on_a_gpu_machine():
    """As a sweep's trainable does when Ray assigned no GPU (in a process of its own: hiding CUDA
    lasts a process's life)."""
    code = (
        "import torch; from asha_tune.trial.devices import assigned_device, describe_device; "
        "from asha_tune.trial.training import resolve_device; d = assigned_device('auto', []); "
        "print(d, torch.cuda.is_available(), describe_device(resolve_device(d)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.stdout.split() == ["cpu", "False", "cpu"], done.stderr


def test_benchmark_memory_figures_are_each_trials_own(tiny_runtime, cuda_runtime):
    from benchmarks.speed import Profile, cuda_context, full_trial, make_trial, throughput, trial_config

    big = trial_config(Profile(224, 128, 512, 1, 1, 1, 1, (), False, "big"), {"mode": "baseline"})
    small = trial_config(Profile(32, 8, 16, 1, 1, 1, 1, (), False, "small"), {"mode": "baseline"})
    first = full_trial(big, cuda_runtime, tile=True)  # 2,048 images at 224 px, batches of 128
    second = full_trial(small, cuda_runtime, tile=False)
    for figures in (first, second):
        assert 0 < figures["peak_mib"] <= figures["peak_reserved_mib"]
        assert figures["outside_torch_mib"] > 0
        assert figures["device"].startswith("cuda:")
        assert figures["wall_s"] >= figures["train_s"] + figures["eval_s"] > 0
    assert second["peak_mib"] < first["peak_mib"] / 4  # the peak was reset between the trials
    rates = throughput(make_trial(small, cuda_runtime, tile=False), 1)
    assert rates["train_img_s"] > 0
    assert rates["eval_img_s"] > 0
    assert rates["peak_mib"] > 0
    context = cuda_context(torch.device("cuda"))
    assert 0 < context["outside_torch_mib"] < context["device_total_mib"]


def test_two_trials_share_one_gpu_through_ray_with_reused_workers(tmp_path, tiny_runtime):
    for package in ("ray", "mlflow", "optuna"):
        pytest.importorskip(
            package, reason=f"{package} is not installed here (a GPU node of a cluster has it)"
        )
    from asha_tune.api import launch
    from tests.helpers.sweeps import TINY, mlflow_children, settings_for, space_file

    path = space_file(
        tmp_path,
        "gpu_share",
        TINY,
        search={"algorithm": "random", "num_trials": 4, "max_concurrent": 2},
        resources={"cpu": 1, "gpu": 0.5},
        parameters={"train.lr": {"type": "float", "low": 0.001, "high": 0.01}},
    )
    runtime = tiny_runtime.model_copy(update={"device": "auto"})
    outcome = launch(settings_for(tmp_path, path, "gpu_share", runtime, num_gpus=1))
    assert outcome.finished
    assert [t.status for t in outcome.trials] == ["completed"] * 4
    runs = mlflow_children(tmp_path, "gpu_share", outcome.settings.parent_run_id)
    assert all(r.data.params["device"].startswith("cuda:") for r in runs)
    spans = sorted((r.info.start_time, r.info.end_time) for r in runs)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))  # two ran at once
    pids = set()
    for result in (outcome.settings.sweep_dir).glob("*/result.json"):
        pids |= {json.loads(line)["pid"] for line in result.read_text().splitlines() if line.strip()}
    assert 1 <= len(pids) <= 2  # four trials in two reused worker processes
    for r in runs:  # each trial read the GPU Ray gave it (trial/usage.py), every epoch
        assert r.data.metrics["gpu_memory_mb"] > 0
        assert "gpu_utilization_percent" in r.data.metrics


def test_a_trials_usage_figures_read_the_gpu_it_computes_on():
    """trial/usage.py through NVML (nvidia-ml-py): a GPU kept busy for an epoch shows its
    utilisation and the memory the process holds on it; a GPU NVML does not know, none."""
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed here (prepare_device.sh ships it)")
    from asha_tune.trial.devices import cuda_gpus
    from asha_tune.trial.usage import UsageSampler

    (gpu,) = cuda_gpus("cuda")
    sampler = UsageSampler(gpus=[gpu], every_s=0.1)
    try:
        a = torch.randn(8192, 8192, device="cuda")
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
        figures = sampler.epoch()
    finally:
        sampler.close()
    assert figures["gpu_utilization_percent"] > 20, figures  # matmuls back to back: a busy GPU
    assert figures["gpu_memory_mb"] >= 2 * 8192 * 8192 * 4 / 1e6, figures  # at least its two matrices
    assert figures["system_cpu_percent"] >= 0
    assert figures["system_memory_mb"] > 0
    unknown = UsageSampler(gpus=["GPU-00000000-0000-0000-0000-000000000000"], every_s=10)
    assert "gpu_utilization_percent" not in unknown.epoch()
    unknown.close()
