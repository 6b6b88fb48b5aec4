"""The Ray Tune trainable: the foundation trial, reporting and checkpointing through Tune."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from ..config import Runtime
from ..errors import AshaTuneError
from ..spaces import SearchSpace
from ..training import load_checkpoint, run_trial

CHECKPOINT_FILE = "trial.pt"
FAILED_KEY, FAILURE_KEY = "failed", "failure"  # a result that ends a trial as failed, and why


def train_trial(config: dict[str, Any], space: SearchSpace, runtime: Runtime) -> None:
    """One sweep trial: `config` holds the Optuna trial number and the sampled values."""
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    trial_config = space.trial_config(config["values"])
    state = None
    if checkpoint := tune.get_checkpoint():  # a retry or a resumed sweep
        with checkpoint.as_directory() as folder:
            state = load_checkpoint(Path(folder) / CHECKPOINT_FILE)

    def report(metrics: dict[str, float], trial_state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as folder:
            torch.save(trial_state, Path(folder) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        run_trial(trial_config, runtime, report=report, resume=state)
    except AshaTuneError as err:
        # Diverged, or a configuration, data or weights error: a retry would fail the same way,
        # so report it and end (Tune retries only what raises).
        tune.report({"epoch": getattr(err, "epoch", 0), space.scheduler.metric: float("nan"),
                     FAILED_KEY: 1.0, FAILURE_KEY: f"{type(err).__name__}: {err}"})
