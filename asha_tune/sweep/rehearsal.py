"""`launch --rehearse`: the sweep as it would run, with simulated trials.

A rehearsal runs on the same cluster, with the same scheduler, searcher, stores and records as the
real sweep, so a user checks a new cluster (its autoscaling, its stores, a resume) in minutes
before spending GPU hours. Each trial sleeps `epoch_s` per epoch and reports a score made up from
its configuration (the same values give the same curve; the trial's seed adds noise), writes its
checkpoints where a real trial would (a few bytes each) and imports no torch, so many fit in a
small machine's memory. Its records are marked (REHEARSAL_TAG on the MLflow runs, study.py's
REHEARSAL_ATTR on the Optuna study), and compare, confirm and warm starts refuse them: its scores
are not results.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from asha_tune.errors import AshaTuneError
from asha_tune.spaces import SearchSpace
from asha_tune.sweep.keys import NODE_KEY, VALUES_KEY
from asha_tune.trial.usage import trial_usage

# A folder where each rehearsal trial process appends its timings (benchmarks/scale.py reads them):
# when each trial started and ended, and how long each `ray.tune.report` call waited for the driver.
TIMINGS_ENV = "ASHA_TUNE_REHEARSAL_TIMINGS"
STATE_FILE = "trial.pt"  # checkpoints.CHECKPOINT_FILE: the cleanup and restore rules look for it


def quality(values: dict[str, Any]) -> float:
    """How good a configuration is, in [0, 1): a hash of its values, the same on every machine."""
    text = json.dumps(values, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def simulated_metrics(
    values: dict[str, Any], seed: int, epoch: int, epochs: int, metric: str, mode: str
) -> dict[str, float]:
    """The figures a rehearsal trial reports after `epoch` (1-based) of `epochs`: accuracies that
    rise towards a level set by the configuration, a loss that falls, small noise from the seed."""
    q = quality(values)
    noise = random.Random(f"{seed}:{epoch}:{q!r}")
    progress = 1 - math.exp(-3 * epoch / max(epochs, 1))
    acc = 100 * (0.2 + 0.6 * q * progress) + noise.gauss(0, 0.5)
    figures = {
        "epoch": float(epoch),
        "train_loss": max(0.01, 2.0 * (1 - 0.9 * q * progress) + noise.gauss(0, 0.02)),
        "source_acc": min(100.0, acc + 5),
        "val_acc": acc,
        "target_acc": max(0.0, acc - 10),
    }
    if metric not in figures:  # a score no rehearsal simulates: higher is better, or lower
        figures[metric] = acc if mode == "max" else 100 - acc
    return figures


def load_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise AshaTuneError(f"cannot read the rehearsal checkpoint {path}: {err}") from None
    return state if isinstance(state, dict) else {}


class _Timings:
    """This process's timings, appended to $ASHA_TUNE_REHEARSAL_TIMINGS/<pid>.jsonl when it is set:
    a line when a trial starts (and whether its process has loaded torch), when it sends a result,
    and when `ray.tune.report` returns (a trial that the scheduler stops never returns from its last)."""

    def __init__(self, number: int):
        folder = os.environ.get(TIMINGS_ENV)
        self.path = Path(folder) / f"{os.getpid()}.jsonl" if folder else None
        self.write({"trial": number, "start": time.time(), "torch": "torch" in sys.modules})

    def write(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            with open(self.path, "a") as out:
                out.write(json.dumps(record) + "\n")


def rehearse_trial(config: dict[str, Any], space: SearchSpace, epoch_s: float) -> None:
    """A simulated sweep trial: the Ray trainable `launch --rehearse` runs instead of train_trial."""
    import ray
    from ray import tune

    from asha_tune.sweep.checkpoints import asha_rungs, checkpoint_due
    from asha_tune.sweep.trainable import restored_state

    values = config[VALUES_KEY]
    trial = space.trial_config(values)
    epochs, seed = trial.train.epochs, trial.train.seed
    s = space.scheduler
    timings = _Timings(int(config.get("trial_number", -1)))
    node = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, float], checkpoint: Any = None) -> None:
        timings.write({"sent": time.time()})
        begin = time.perf_counter()
        tune.report({**metrics, NODE_KEY: node}, checkpoint=checkpoint)
        timings.write({"wait": time.perf_counter() - begin})

    ended, state = restored_state(tune.get_checkpoint(), load_state, epochs)
    if ended:  # as train_trial: its last epoch again, so Tune ends it with that result
        if state and state.get("history"):
            report(state["history"][-1])
        return
    history: list[dict[str, float]] = list(state["history"]) if state else []
    saved = int(state["epoch"]) if state else 0
    rungs = asha_rungs(s, epochs)
    usage = trial_usage(ray.get_gpu_ids())  # as a real trial: its process's use, per epoch
    for epoch in range(saved + 1, epochs + 1):
        time.sleep(epoch_s)
        metrics = {
            **simulated_metrics(values, seed, epoch, epochs, s.metric, s.mode),
            "time_train": epoch_s,
            "time_eval": 0.0,
            **usage.epoch(),
        }
        history.append(metrics)
        if not checkpoint_due(epoch, epochs, saved, epoch_s * (epoch - saved), rungs):
            report(metrics)
            continue
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, STATE_FILE).write_text(json.dumps({"epoch": epoch, "history": history}))
            report(metrics, tune.Checkpoint.from_directory(folder))
        saved = epoch


def rehearsal_summary(trials: list[Any], space: SearchSpace) -> str:
    """What a rehearsal ends with instead of a best trial: how its trials were recorded."""
    by_status: dict[str, int] = {}
    for trial in trials:
        by_status[trial.status] = by_status.get(trial.status, 0) + 1
    counts = ", ".join(f"{n} {status}" for status, n in sorted(by_status.items())) or "none"
    return (
        f"rehearsal: {len(trials)} of {space.num_trials} trials recorded in MLflow and Optuna ({counts}); "
        "the scores are simulated, not results"
    )
