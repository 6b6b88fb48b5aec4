"""One trial outside Ray (`asha-tune trial`): a checkpoint file, an MLflow run, resume.

A trial's checkpoint is named by its configuration's fingerprint, and a sidecar file remembers
its MLflow run, so `--resume` continues both the training and the same run.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asha_tune import defaults
from asha_tune.errors import AshaTuneError, ConfigError, first_line
from asha_tune.files import unwritable, write_problem
from asha_tune.tracking import Tracker
from asha_tune.tracking.client import check_store, version_tags
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
# Below this much free space a checkpoint write that failed is put down to a full disk (torch
# says "PytorchStreamWriter failed writing file", not ENOSPC).
FULL_BYTES = 64 << 20


class CheckpointWriteError(AshaTuneError):
    """A checkpoint could not be written mid-trial: the trial stops, resumable from the last one."""


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
    """Run one trial, checkpointing every epoch and logging it as one MLflow run.

    The checkpoint's folder and the MLflow store are checked before the run is recorded, and a run
    once recorded always ends (failed, or interrupted where --resume continues it)."""
    checkpoint = checkpoint or default_checkpoint(config)
    check_checkpoint(checkpoint)
    state = load_checkpoint(checkpoint) if resume and checkpoint.exists() else None
    check_store(tracking_uri or defaults.tracking_uri())
    tracker = Tracker(tracking_uri)
    run_id = _open_run(tracker, config, experiment, checkpoint, state)
    started = time.perf_counter()
    devices: set[str] = set()
    usage = trial_usage(cuda_gpus(runtime.device))  # its GPU's and its process's use, per epoch

    def report(metrics: dict[str, Any], trial_state: dict[str, Any]) -> None:
        metrics = {**metrics, **usage.epoch()}
        try:
            save_checkpoint(trial_state, checkpoint)
        except (OSError, RuntimeError) as err:  # torch words a full disk as a RuntimeError
            raise _write_failed(checkpoint, err, metrics.get("epoch")) from None
        if metrics[DEVICE_KEY] not in devices:  # once per process: the device it computed on
            tracker.log_device(run_id, metrics[DEVICE_KEY])
            devices.add(metrics[DEVICE_KEY])
        log_epoch(tracker, run_id, metrics)

    try:
        result = run_trial(config, runtime, report=report, resume=state, progress=progress)
    except KeyboardInterrupt:
        _end(tracker, run_id, INTERRUPTED)
        raise
    except CheckpointWriteError as err:  # what was recorded is kept: --resume continues it
        _end(tracker, run_id, INTERRUPTED, {FAILURE_TAG: str(err)[:5000]})
        raise
    except Exception as err:
        reason = first_line(err)
        _end(tracker, run_id, FAILED, {FAILURE_TAG: reason[:5000]})
        raise
    _finish_completed(tracker, run_id, config, result, started, checkpoint)
    return LoggedTrial(result, run_id, checkpoint)


def _open_run(
    tracker: Tracker, config: TrialConfig, experiment: str, checkpoint: Path, state: dict[str, Any] | None
) -> str:
    """The trial's MLflow run: the one its checkpoint's sidecar names when resuming (with the
    epochs the checkpoint holds and MLflow lacks), else a new one that the sidecar remembers."""
    sidecar = checkpoint.with_suffix(".json")
    if state is not None and sidecar.exists():
        run_id: str = json.loads(sidecar.read_text())["mlflow_run_id"]
        tracker.reopen(run_id)
        # The checkpoint is the record: log epochs it holds that a kill kept out of MLflow.
        logged = tracker.logged_steps(run_id, "target_acc")
        for metrics in state["history"]:
            if metrics["epoch"] not in logged:
                log_epoch(tracker, run_id, metrics)
        return run_id
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
    try:
        tracker.log_dict(run_id, config.model_dump(mode="json"), "trial_config.json")
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        sidecar.write_text(json.dumps({"mlflow_run_id": run_id}))
    except BaseException as err:
        _end(tracker, run_id, FAILED, {FAILURE_TAG: first_line(err)[:5000]})
        if isinstance(err, OSError):
            raise _write_failed(sidecar, err, epoch=None) from None
        raise
    return run_id


def _finish_completed(
    tracker: Tracker, run_id: str, config: TrialConfig, result: TrialResult, started: float, checkpoint: Path
) -> None:
    """The final figures (timings and constants aside) and the run's end; its duration is the
    longer of this process's time since `started` and the trial's own total (a resumed trial ran
    before)."""
    final = {
        f"final_{k}": v
        for k, v in result.final.items()
        if not k.startswith("time_") and not selection.is_constant(k)
    }
    tracker.log_metrics(run_id, final, step=config.train.epochs)
    wall = round(time.perf_counter() - started, 3)  # this process's part of a resumed trial
    duration = max(wall, float(result.final.get("time_total") or 0.0))
    tracker.finish(run_id, COMPLETED, {DURATION_TAG: round(duration, 3), CHECKPOINT_TAG: str(checkpoint)})


def check_checkpoint(checkpoint: Path) -> None:
    """--checkpoint names a file whose folder can be written (a file in the way, /proc, a full
    disk): refused before the run is recorded."""
    if checkpoint.is_dir():
        raise ConfigError(
            f"--checkpoint {checkpoint} is a folder: name a file, e.g. {checkpoint / 'trial.pt'}"
        )
    if line := unwritable(checkpoint.parent, "--checkpoint", what=str(checkpoint)):
        raise ConfigError(line)


def _write_failed(path: Path, err: BaseException, epoch: int | None) -> CheckpointWriteError:
    """A write of the trial's own files that failed, in one line naming the file and the fix."""
    if isinstance(err, OSError):
        why = write_problem(err, path.parent)
        full = why.full
        text = why.text
    else:
        try:
            full = shutil.disk_usage(path.parent).free < FULL_BYTES
        except OSError:
            full = False
        text = "its file system is full" if full else first_line(err)
    fix = "free space there" if full else "fix it"
    if epoch is None:
        return CheckpointWriteError(f"cannot write {path} ({text}): {fix}, then run the trial again")
    if epoch <= 1:
        return CheckpointWriteError(
            f"cannot write the checkpoint {path} after epoch 1 ({text}): {fix}, then run the trial again"
        )
    return CheckpointWriteError(
        f"cannot write the checkpoint {path} after epoch {epoch} ({text}); the checkpoint of epoch "
        f"{epoch - 1} and the epochs logged in MLflow are kept: {fix}, then continue with the same "
        "command and --resume"
    )


def _end(tracker: Tracker, run_id: str, status: str, tags: dict[str, Any] | None = None) -> None:
    """End the run; a store that fails too (a full disk under it) does not hide the first error."""
    with contextlib.suppress(Exception):
        tracker.finish(run_id, status, tags)
