"""One trial outside Ray (`asha-tune trial`): a checkpoint file, an MLflow run, resume.

A trial's checkpoint is named by its configuration's fingerprint, and a sidecar file remembers
its MLflow run, so `--resume` continues both the training and the same run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asha_tune.errors import first_line
from asha_tune.tracking import Tracker
from asha_tune.tracking.client import version_tags
from asha_tune.tracking.tags import (
    CHECKPOINT_TAG,
    COMPLETED,
    DURATION_TAG,
    FAILED,
    FAILURE_TAG,
    FINGERPRINT_TAG,
    INTERRUPTED,
    MODE_TAG,
)
from asha_tune.tracking.trials import log_epoch, trial_tags
from asha_tune.trial import selection
from asha_tune.trial.config import Runtime, TrialConfig
from asha_tune.trial.devices import cuda_gpus
from asha_tune.trial.selection import DEVICE_KEY
from asha_tune.trial.training import TrialResult, load_checkpoint, run_trial, save_checkpoint
from asha_tune.trial.usage import trial_usage

DEFAULT_EXPERIMENT = "asha-tune-trials"


@dataclass
class LoggedTrial:
    result: TrialResult
    run_id: str
    checkpoint: Path


def default_checkpoint(config: TrialConfig, directory: Path | None = None) -> Path:
    return (directory or Path.cwd()) / "checkpoints" / f"trial-{config.fingerprint()}.pt"


def run_logged_trial(
    config: TrialConfig,
    runtime: Runtime,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: bool = False,
) -> LoggedTrial:
    """Run one trial, checkpointing every epoch and logging it as one MLflow run."""
    checkpoint = checkpoint or default_checkpoint(config)
    sidecar = checkpoint.with_suffix(".json")
    state = load_checkpoint(checkpoint) if resume and checkpoint.exists() else None
    tracker = Tracker(tracking_uri)
    if state is not None and sidecar.exists():
        run_id = json.loads(sidecar.read_text())["mlflow_run_id"]
        tracker.reopen(run_id)
        # The checkpoint is the record: log epochs it holds that a kill kept out of MLflow.
        logged = tracker.logged_steps(run_id, "target_acc")
        for metrics in state["history"]:
            if metrics["epoch"] not in logged:
                log_epoch(tracker, run_id, metrics)
    else:
        run_id = tracker.start_run(
            tracker.experiment(experiment),
            name=f"{config.shaping.mode}-{config.fingerprint()}",
            params=config.resolved_dump(),
            tags={
                **version_tags(),
                **trial_tags(config),
                MODE_TAG: config.shaping.mode,
                FINGERPRINT_TAG: config.fingerprint(),
            },
        )
        tracker.log_dict(run_id, config.model_dump(mode="json"), "trial_config.json")
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        sidecar.write_text(json.dumps({"mlflow_run_id": run_id}))
    started = time.perf_counter()
    devices: set[str] = set()
    usage = trial_usage(cuda_gpus(runtime.device))  # its GPU's and its process's use, per epoch

    def report(metrics: dict[str, Any], trial_state: dict[str, Any]) -> None:
        metrics = {**metrics, **usage.epoch()}
        save_checkpoint(trial_state, checkpoint)
        if metrics[DEVICE_KEY] not in devices:  # once per process: the device it computed on
            tracker.log_device(run_id, metrics[DEVICE_KEY])
            devices.add(metrics[DEVICE_KEY])
        log_epoch(tracker, run_id, metrics)

    try:
        result = run_trial(config, runtime, report=report, resume=state, progress=progress)
    except KeyboardInterrupt:
        tracker.finish(run_id, INTERRUPTED)
        raise
    except Exception as err:
        reason = first_line(err)
        tracker.finish(run_id, FAILED, {FAILURE_TAG: reason[:5000]})
        raise
    final = {
        f"final_{k}": v
        for k, v in result.final.items()
        if not k.startswith("time_") and not selection.is_constant(k)
    }
    tracker.log_metrics(run_id, final, step=config.train.epochs)
    wall = round(time.perf_counter() - started, 3)  # this process's part of a resumed trial
    duration = max(wall, float(result.final.get("time_total") or 0.0))
    tracker.finish(run_id, COMPLETED, {DURATION_TAG: round(duration, 3), CHECKPOINT_TAG: str(checkpoint)})
    return LoggedTrial(result, run_id, checkpoint)
