"""CUDA paths of the trial (AMP, channels_last, data and masks on the GPU). Skipped without CUDA.

Runs on the lent GPU machine through benchmarks/gpu_check.sh, where Ray and MLflow are absent:
nothing here imports them.
"""

from __future__ import annotations

import pytest
import torch

from asha_tune.trial.config import Runtime
from asha_tune.trial.shaping import bernoulli_mask
from asha_tune.trial.training import Trial, run_trial
from tests.helpers.data import tiny_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def cuda_runtime(tiny_runtime) -> Runtime:
    return tiny_runtime.model_copy(update={"device": "cuda"})


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
    assert trial.amp == torch.float16 and trial.channels_last
    assert trial.data.source.train.device.type == "cuda"  # the data lives on the GPU
    assert trial.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    metrics = trial.run_epoch()
    assert metrics["train_loss"] == metrics["train_loss"]  # finite, not NaN
    assert 0 <= metrics["target_acc"] <= 100


def test_masks_are_drawn_on_the_gpu_with_a_cuda_generator():
    g = torch.Generator(device="cuda").manual_seed(0)
    like = torch.empty(64, 64, 56, 56, device="cuda", dtype=torch.float16).contiguous(
        memory_format=torch.channels_last
    )
    mask = bernoulli_mask(like, 0.7, g)
    assert mask.device.type == "cuda" and mask.is_contiguous(memory_format=torch.channels_last)
    assert abs((~mask).float().mean().item() - 0.7) < 0.01


def test_bf16_and_resume_on_cuda(cuda_runtime):
    config = tiny_config(
        shaping={"mode": "random", "convs": [1], "p0": 0.5}, train={"epochs": 3, "precision": "bf16"}
    )
    states = []
    run_trial(
        config,
        cuda_runtime,
        report=lambda m, s: states.append(
            {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
        ),
    )
    resumed = run_trial(config, cuda_runtime, resume=states[0])
    assert [m["epoch"] for m in resumed.history] == [1, 2, 3]
    assert "cuda" in states[0]["rng"]
