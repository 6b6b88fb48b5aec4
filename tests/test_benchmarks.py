"""The benchmark's parts run (on tiny synthetic data); speed itself is never asserted here."""

from __future__ import annotations

import math

import torch

from benchmarks.authors import numpy_mask_hook, time_authors
from benchmarks.speed import Profile, full_trial, table, throughput, tiled, trial_config


def test_authors_mask_hook_is_their_random_map():
    np_hook = numpy_mask_hook(0.7)
    a = torch.randn(64, 64, 32, 32)
    out = np_hook(None, (), a)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    positive = a > 0
    assert torch.all(out[~positive] == 0)
    assert abs((out[positive] == 0).float().mean().item() - 0.7) < 0.01


def test_authors_loop_times_real_steps(synthetic_pacs):
    timing = time_authors(synthetic_pacs, "art_painting", "cartoon", 32, 4, [1], 0.7, torch.device("cpu"),
                          train_steps=2, eval_batches=1, warmup=1, workers=0)
    assert timing.seconds_per_train_step > 0 and timing.seconds_per_eval_batch > 0
    full = timing.extrapolate(30, 2048, 2344, 128)
    assert full == 30 * (16 * timing.seconds_per_train_step + math.ceil(2344 / 128) * timing.seconds_per_eval_batch)


def test_trial_measurements_and_table(tiny_runtime):
    profile = Profile(32, 8, 16, 2, 1, 1, 1, (), False, "tiny")
    config = trial_config(profile, {"mode": "random", "convs": [1], "p0": 0.5})
    trial_figures = full_trial(config, tiny_runtime, tile=False)
    assert trial_figures["wall_s"] >= trial_figures["train_s"] + trial_figures["eval_s"]
    from benchmarks.speed import make_trial

    trial = make_trial(config, tiny_runtime, tile=True)
    assert len(trial.data.source) == 2048 and len(trial.data.targets["cartoon"]) == 2344
    assert torch.equal(tiled(trial.data.source, 30).labels[21:], trial.data.source.labels[:9])
    small = make_trial(config, tiny_runtime, tile=False)
    rates = throughput(small, 1)
    text = table({"device": "cpu", "torch": torch.__version__, "commit": None, "date": "today",
                  "protocol": "tiny", "tiled": False, "modes": {"random conv 1": rates},
                  "warm_trial": trial_figures, "cold_trial": trial_figures})
    assert "random conv 1" in text and "full trial, warm cache" in text
