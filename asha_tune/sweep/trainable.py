"""The Ray Tune trainable: the foundation trial, reporting and checkpointing through Tune.

Sweeps reuse a trial's actor for the next trial (`reuse_actors`; Ray 2.60's default is off),
so a process pays for its start and its imports once. When a trial writes a checkpoint is
decided in checkpoints.py. Each report carries the trial's own timings (`time_*` durations,
`at_*` wall-clock times) so that benchmarks/sweep.py can say where a slot's time went.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune

from asha_tune.errors import AshaTuneError
from asha_tune.spaces import SearchSpace
from asha_tune.sweep import ray_compat
from asha_tune.sweep.checkpoints import (
    CHECKPOINT_FILE,
    ENDED_MARKER,
    asha_rungs,
    checkpoint_due,
    final_weights,
    restorable_checkpoints,
)
from asha_tune.sweep.disk import is_no_space, wait_for_the_stop
from asha_tune.sweep.keys import FAILED_KEY, FAILURE_KEY, NODE_KEY, VALUES_KEY
from asha_tune.trial.config import Runtime
from asha_tune.trial.usage import trial_usage


def process_started_at() -> float | None:
    """Wall-clock time at which this process started (Linux; None elsewhere)."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + int(stat[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def restored_state(
    checkpoint: tune.Checkpoint | None, load: Any, epochs: int
) -> tuple[bool, dict[str, Any] | None]:
    """(ended, state): state None starts afresh; ended means the trial had already run its last
    epoch (its checkpoint holds the final weights and history, or was emptied when it ended).

    When the checkpoint Tune restored with is gone (see `restorable_checkpoints`), the trial's
    newest one that reads is used instead; a half-written one is passed over."""
    if checkpoint is None:
        return False, None
    candidates = restorable_checkpoints(checkpoint)
    for i, candidate in enumerate(candidates):
        with candidate.as_directory() as folder:
            if (Path(folder) / ENDED_MARKER).exists():
                return True, None
            try:
                state = load(Path(folder) / CHECKPOINT_FILE)
            except AshaTuneError:
                if candidate is checkpoint or i == len(candidates) - 1:
                    raise  # the one Tune named, or the last left: nothing else to fall back on
                continue
        return state["epoch"] >= epochs, state
    return False, None  # every checkpoint of the trial is gone: it starts afresh


def device_sharing(space: SearchSpace) -> int:
    """How many trials may share a device at once: a GPU's by the space's share of it, the
    host's (CPU trials) by the trials that run at once."""
    at_once = space.search.concurrency
    if space.resources.gpu > 0:
        return max(1, min(at_once, int(1 / space.resources.gpu)))
    return at_once


def log_trial_progress() -> None:
    """The trial's own lines (data path, decode progress) into this worker's log, once per process:
    inside Ray there is no progress bar."""
    logger = logging.getLogger("asha_tune.trial")
    if not any(getattr(h, "_asha_tune", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("asha-tune trial: %(message)s"))
        handler._asha_tune = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def train_trial(config: dict[str, Any], space: SearchSpace, runtime: Runtime) -> None:
    """One sweep trial: `config` holds the Optuna trial number and the sampled values."""
    entered = time.time()
    logging.getLogger(ray_compat.STORAGE_LOGGER).setLevel(logging.WARNING)
    log_trial_progress()
    sharing = max(runtime.trials_per_device, device_sharing(space))
    runtime = runtime.model_copy(update={"trials_per_device": sharing})
    begin = time.perf_counter()
    import torch  # noqa: F401  (imported here, not at module level: timed, and paid once per reused process)

    from asha_tune.trial.devices import assigned_device
    from asha_tune.trial.training import load_checkpoint, run_trial

    imports = time.perf_counter() - begin
    trial_config = space.trial_config(config[VALUES_KEY])
    epochs = trial_config.train.epochs
    ended, state = restored_state(tune.get_checkpoint(), load_checkpoint, epochs)
    if ended:
        # It ended before the driver stopped, and Tune had not saved that yet. Its last epoch is
        # reported again, so that Tune ends it with that result, not the older one it restored
        # (an epoch already logged is not logged twice).
        if state and state.get("history"):
            tune.report({**state["history"][-1], NODE_KEY: ray.get_runtime_context().get_node_id()})
        return
    first: dict[str, Any] = {"at_entry": entered, "time_imports": imports}
    if (started := process_started_at()) is not None:
        first["at_process"] = started
    report = _reporter(epochs, asha_rungs(space.scheduler, epochs), state, first)
    try:
        # The GPUs Ray gave this trial decide its device: none, the CPU (CUDA hidden); some, CUDA
        # or a DeviceError at once (e.g. a driver too old for this torch), never a silent CPU.
        device = assigned_device(runtime.device, ray.get_gpu_ids())
        run_trial(trial_config, runtime.model_copy(update={"device": device}), report=report, resume=state)
    except AshaTuneError as err:
        # Diverged, or a configuration, data or weights error: a retry would fail the same way,
        # so report it and end (Tune retries only what raises).
        tune.report(
            {
                "epoch": getattr(err, "epoch", 0),
                space.scheduler.metric: float("nan"),
                FAILED_KEY: 1.0,
                FAILURE_KEY: f"{type(err).__name__}: {err}",
            }
        )


def _reporter(
    epochs: int, rungs: frozenset[int], state: dict[str, Any] | None, first: dict[str, Any]
) -> Callable[[dict[str, float], dict[str, Any]], None]:
    """What the trial calls after each epoch: a report to Tune with its timings and node (the
    first report also with `first`), carrying a checkpoint when checkpoints.py says one is due;
    a disk that fills while it is written waits for the driver's stop (sweep/disk.py)."""
    import torch

    saved: dict[str, Any] = {"epoch": int(state["epoch"]) if state else 0, "unsaved_s": 0.0}
    node = ray.get_runtime_context().get_node_id()  # the Ray node this trial runs on (MLflow tag)
    usage = trial_usage(ray.get_gpu_ids())  # its GPUs' and its process's use, per epoch

    def report(metrics: dict[str, float], trial_state: dict[str, Any]) -> None:
        metrics = {**metrics, **usage.epoch()}
        timings = {"at_report": time.time(), "time_checkpoint": 0.0, NODE_KEY: node, **first}
        first.clear()
        epoch = int(metrics["epoch"])
        saved["unsaved_s"] += metrics["time_train"] + metrics["time_eval"]
        if not checkpoint_due(epoch, epochs, saved["epoch"], saved["unsaved_s"], rungs):
            tune.report({**metrics, **timings})
            return
        with tempfile.TemporaryDirectory() as folder:
            begin = time.perf_counter()
            torch.save(
                trial_state if epoch < epochs else final_weights(trial_state), Path(folder) / CHECKPOINT_FILE
            )
            timings["time_checkpoint"] = time.perf_counter() - begin
            try:
                tune.report({**metrics, **timings}, checkpoint=tune.Checkpoint.from_directory(folder))
            except OSError as err:
                if not is_no_space(err):
                    raise
                wait_for_the_stop(err)  # the disk under --results-dir is full (sweep/disk.py)
            saved.update(epoch=epoch, unsaved_s=0.0)

    return report
