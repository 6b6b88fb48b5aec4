"""The Ray Tune side of a sweep: the trainable with its resources, and the Tuner that runs it
(searcher and scheduler on one Optuna study, callbacks for MLflow, progress and checkpoints).
"""

from __future__ import annotations

from typing import Any

from asha_tune.sweep.resume_policy import RETRY_FAILED
from asha_tune.sweep.settings import SweepSettings
from asha_tune.sweep.study import StudyHandle

TUNER_FILE = "tuner.pkl"  # what Tune saves in the sweep's folder, and `resume` restores from
EXPERIMENT_STATE = "experiment_state-*.json"  # Tune's snapshot of its trials, beside it


def trainable(settings: SweepSettings) -> Any:
    from ray import tune

    from asha_tune.sweep.trainable import train_trial

    resources = settings.space.resources
    if settings.rehearse is not None:  # simulated trials: no data, no torch (sweep/rehearsal.py)
        from asha_tune.sweep.rehearsal import rehearse_trial

        epoch_s = settings.rehearse.epoch_s
        function = tune.with_parameters(rehearse_trial, space=settings.space, epoch_s=epoch_s)
    else:
        function = tune.with_parameters(train_trial, space=settings.space, runtime=settings.runtime)
    return tune.with_resources(function, {"cpu": resources.cpu, "gpu": resources.gpu})


def new_tuner(settings: SweepSettings, handle: StudyHandle, experiment_id: str) -> Any:
    """A Tuner for a new sweep (or one stopped before Tune saved anything)."""
    from ray import tune

    from asha_tune.sweep.searcher import StudySearcher
    from asha_tune.sweep.writer import writer_for

    space = settings.space
    s, epochs = space.scheduler, space.train.epochs
    scheduler = _scheduler(settings, handle)
    records = settings.run_id  # the sweep's RecordWriter (writer.py): MLflow and Optuna, off the loop
    writer_for(records, space.num_trials)  # made now: a records process starts while Tune does
    callbacks = _callbacks(settings, handle, experiment_id, records)
    return tune.Tuner(
        trainable(settings),
        tune_config=tune.TuneConfig(
            search_alg=StudySearcher(
                handle, s.metric, s.mode, epochs, records=records, fresh_asks=space.search.reproducible
            ),
            scheduler=scheduler,
            num_samples=space.num_trials,
            max_concurrent_trials=space.search.concurrency,
            reuse_actors=True,  # a trial's process runs the next trial: no start, no imports
        ),
        run_config=tune.RunConfig(
            name=settings.name,
            storage_path=str(settings.results_dir),
            verbose=0,
            callbacks=callbacks,
            # Ray deletes none: CheckpointCleanup empties them, leaving the folders (checkpoints.py).
            checkpoint_config=tune.CheckpointConfig(),
            failure_config=tune.FailureConfig(max_failures=space.search.max_failures),
        ),
    )


def _scheduler(settings: SweepSettings, handle: StudyHandle) -> Any:
    """ASHA on the study (stops weak trials at its rungs), or FIFO (every trial runs its budget)."""
    from ray.tune.schedulers import FIFOScheduler

    from asha_tune.sweep.searcher import ResumableASHA

    s = settings.space.scheduler
    if s.kind != "asha":
        return FIFOScheduler()
    return ResumableASHA(
        handle,
        time_attr="epoch",
        metric=s.metric,
        mode=s.mode,
        max_t=settings.space.train.epochs,
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
    )


def _callbacks(settings: SweepSettings, handle: StudyHandle, experiment_id: str, records: str) -> list[Any]:
    """The sweep's callbacks, in the order Tune calls them: records, progress, checkpoints, the
    space's guard, and Tune's own CSV and JSON logs."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from asha_tune.sweep.callbacks import ProgressCallback, SpaceGuard, TrackingCallback
    from asha_tune.sweep.checkpoints import CheckpointCleanup

    space = settings.space
    s, epochs = space.scheduler, space.train.epochs
    # Tune knows the trials since the last extension only (extend.py moves its earlier snapshot
    # aside): the progress line counts those against the trials that extension added.
    last = settings.extensions[-1] if settings.extensions else None
    total, first = (last.trials, last.first_trial) if last else (space.num_trials, 0)
    return [
        TrackingCallback(
            settings.tracking_uri,
            experiment_id,
            settings.run_id,
            space,
            settings.configuration_tags,
            rehearsal=settings.rehearse is not None,
            records=records,
            extensions=settings.extensions,
        ),
        ProgressCallback(s.metric, s.mode, total, epochs, handle, first),
        CheckpointCleanup(s.metric, s.mode, epochs, records=records),
        SpaceGuard(str(settings.sweep_dir)),
        CSVLoggerCallback(),
        JsonLoggerCallback(),
    ]


def restored_tuner(settings: SweepSettings, handle: StudyHandle, experiment_id: str) -> Any:
    """The sweep's Tuner as Tune saved it (`resume`), as resume_policy says: ended trials kept,
    unfinished ones continue from their checkpoints, failed ones are not retried. A sweep stopped
    before Tune saved anything starts Tune afresh: also one killed after Tune wrote its tuner.pkl
    but before its first experiment state, which Tune would restart from the tuner.pkl's own
    settings (an extension's resume then stopped at the first trial it re-ran)."""
    folder = settings.sweep_dir
    if not (folder / TUNER_FILE).is_file() or not any(folder.glob(EXPERIMENT_STATE)):
        return new_tuner(settings, handle, experiment_id)
    from ray import tune

    return tune.Tuner.restore(
        str(settings.sweep_dir), trainable(settings), resume_unfinished=True, resume_errored=RETRY_FAILED
    )
