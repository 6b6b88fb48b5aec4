"""Launch and resume sweeps: Ray Tune with ASHA and an Optuna study, tracked in MLflow."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AshaTuneError
from ..reports import FINAL_STATUSES, TrialRecord, best_trial, describe_best, sweep_trials
from ..study import StudyHandle, create_study
from ..tracking import Tracker, version_tags
from .settings import SweepSettings

# Set before Ray is imported: no TensorBoard files (CSV and JSON loggers are added explicitly),
# frequent experiment snapshots (a killed driver loses at most a second of bookkeeping), quiet
# Ray Train migration notices.
_RAY_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
}


@dataclass
class SweepOutcome:
    settings: SweepSettings
    trials: list[TrialRecord]
    best: TrialRecord | None
    finished: bool  # False when the driver was interrupted (resume to continue)


def say(message: str) -> None:
    print(message, flush=True)


def _auth_for(address: str | None) -> None:
    """Ray 2.60 token auth: a client joining by address needs RAY_AUTH_MODE=token to send it."""
    if not address or os.environ.get("RAY_AUTH_MODE"):
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def start_ray(settings: SweepSettings) -> str:
    """Join the cluster at `address`, or start a local Ray; returns the dashboard URL."""
    os.environ.update({k: v for k, v in _RAY_ENV.items() if k not in os.environ})
    address = settings.address or os.environ.get("RAY_ADDRESS")
    if not address:  # a local instance is a single node: keep it on loopback
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    _auth_for(address)  # before Ray is imported: it reads RAY_AUTH_MODE once, at import
    import ray

    try:
        if address:
            context = ray.init(address=address, logging_level=logging.WARNING)
        else:
            # "local": always a new instance, never the cluster a past `ray start` left in
            # /tmp/ray/ray_current_cluster (which a plain ray.init() would join).
            context = ray.init(address="local", num_cpus=settings.num_cpus, num_gpus=settings.num_gpus,
                               include_dashboard=True, dashboard_host="127.0.0.1",
                               logging_level=logging.WARNING)
    except Exception as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise AshaTuneError(f"cannot start or join {where}: {str(err).splitlines()[0]}") from None
    if address:
        say(f"joined the Ray cluster at {address}")
    url = context.dashboard_url or ""
    return f"http://{url}" if url and not url.startswith("http") else url


def _trainable(settings: SweepSettings) -> Any:
    from ray import tune

    from .trainable import train_trial

    resources = settings.space.resources
    return tune.with_resources(
        tune.with_parameters(train_trial, space=settings.space, runtime=settings.runtime),
        {"cpu": resources.cpu, "gpu": resources.gpu},
    )


def _tuner(settings: SweepSettings, handle: StudyHandle, experiment_id: str) -> Any:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import FIFOScheduler

    from .callbacks import ProgressCallback, TrackingCallback
    from .checkpoints import CheckpointCleanup
    from .searcher import ResumableASHA, StudySearcher

    space = settings.space
    s, epochs = space.scheduler, space.train.epochs
    if s.kind == "asha":
        scheduler = ResumableASHA(handle, time_attr="epoch", metric=s.metric, mode=s.mode, max_t=epochs,
                                  grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    callbacks = [
        TrackingCallback(settings.tracking_uri, experiment_id, settings.parent_run_id, space),
        ProgressCallback(s.metric, s.mode, space.num_trials, epochs),
        CheckpointCleanup(s.metric, s.mode, epochs),
        CSVLoggerCallback(), JsonLoggerCallback(),
    ]
    return tune.Tuner(
        _trainable(settings),
        tune_config=tune.TuneConfig(
            search_alg=StudySearcher(handle, s.metric, s.mode, epochs),
            scheduler=scheduler,
            num_samples=space.num_trials,
            max_concurrent_trials=space.search.max_concurrent,
            reuse_actors=True,  # a trial's process runs the next trial: no start, no imports
        ),
        run_config=tune.RunConfig(
            name=settings.name,
            storage_path=str(settings.storage_dir),
            verbose=0,
            callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=space.search.max_failures),
        ),
    )


def _fit(tuner: Any, settings: SweepSettings, tracker: Tracker, experiment_id: str) -> SweepOutcome:
    import ray

    try:
        tuner.fit()
    except KeyboardInterrupt:
        pass  # Tune saved its state; the records below say what is left to do
    except AshaTuneError:
        raise
    except Exception as err:
        tracker.finish(settings.parent_run_id, "failed", {"asha_tune.failure": str(err)[:2000]})
        raise AshaTuneError(f"the sweep stopped: {str(err).splitlines()[0]}") from None
    finally:
        ray.shutdown()
    trials = sweep_trials(tracker, experiment_id, settings.parent_run_id)
    finished = len(trials) >= settings.space.num_trials and all(t.status in FINAL_STATUSES for t in trials)
    if not finished:  # trials cut short stay resumable; MLflow shows them as killed meanwhile
        for record in trials:
            if record.status == "running":
                tracker.finish(record.run_id, "interrupted")
    space = settings.space
    best = best_trial(trials, space.scheduler.metric, space.scheduler.mode)
    summary = {"asha_tune.trials": len(trials)}
    if best is not None:
        summary.update({"asha_tune.best_trial": best.number, "asha_tune.best_run_id": best.run_id})
        tracker.log_metrics(settings.parent_run_id, {f"best_{space.scheduler.metric}":
                                                     best.metrics[space.scheduler.metric]}, step=0)
    tracker.finish(settings.parent_run_id, "completed" if finished else "interrupted", summary)
    return SweepOutcome(settings, trials, best, finished)


def _announce(settings: SweepSettings, dashboard: str) -> None:
    say(f"sweep {settings.name}: {settings.space.num_trials} trials of space {settings.space.name}, "
        f"{settings.space.search.algorithm} search, {settings.space.scheduler.kind} scheduler")
    say(f"Ray dashboard: {dashboard or 'not available on this cluster'}")
    say(f"results and checkpoints: {settings.sweep_dir}")
    say(f"MLflow: {settings.tracking_uri} (parent run {settings.parent_run_id})")
    say(f"Optuna study: {settings.name} in {settings.study_storage}")


def _conclude(outcome: SweepOutcome) -> SweepOutcome:
    metric = outcome.settings.space.scheduler.metric
    say(describe_best(outcome.best, metric))
    from .checkpoints import kept_checkpoint

    kept = outcome.best and kept_checkpoint(outcome.settings.sweep_dir, outcome.best.number)
    if kept:
        say(f"its final weights: {kept} (--weights accepts the file)")
    if not outcome.finished:
        say(f"the sweep did not finish; continue it with: asha-tune resume {outcome.settings.name}")
    return outcome


def launch(settings: SweepSettings) -> SweepOutcome:
    """Start a new sweep: create its study and MLflow parent run, then run it on Ray."""
    if (settings.sweep_dir / "sweep.json").exists():
        raise AshaTuneError(f"sweep {settings.name} already exists in {settings.storage_dir}: "
                            f"asha-tune resume {settings.name}, or choose another --name")
    space = settings.space
    create_study(settings.study_storage, settings.name, space)
    tracker = Tracker(settings.tracking_uri)
    experiment_id = tracker.experiment(space.name)
    settings.parent_run_id = tracker.start_run(
        experiment_id, name=settings.name,
        params={"search": space.search.model_dump(mode="json"),
                "scheduler": space.scheduler.model_dump(mode="json"),
                "resources": space.resources.model_dump(mode="json")},
        tags={**version_tags(), "asha_tune.sweep": settings.name, "asha_tune.space": space.name,
              "asha_tune.storage": str(settings.sweep_dir), "asha_tune.study": settings.study_storage},
    )
    tracker.log_dict(settings.parent_run_id, space.model_dump(mode="json"), "space.json")
    settings.save()
    dashboard = start_ray(settings)
    _announce(settings, dashboard)
    handle = StudyHandle(settings.study_storage, settings.name, space)
    return _conclude(_fit(_tuner(settings, handle, experiment_id), settings, tracker, experiment_id))


def resume(settings: SweepSettings) -> SweepOutcome:
    """Continue an interrupted sweep: same study, same parent run, trials from their checkpoints."""
    if not (settings.sweep_dir / "tuner.pkl").is_file():
        raise AshaTuneError(f"sweep {settings.name} has no Ray state in {settings.sweep_dir} to resume")
    tracker = Tracker(settings.tracking_uri)
    experiment_id = tracker.experiment(settings.space.name)
    tracker.reopen(settings.parent_run_id)
    dashboard = start_ray(settings)
    _announce(settings, dashboard)
    from ray import tune

    say("resuming: finished trials are kept, unfinished ones continue from their checkpoints")
    tuner = tune.Tuner.restore(str(settings.sweep_dir), _trainable(settings),
                               resume_unfinished=True, resume_errored=False)
    return _conclude(_fit(tuner, settings, tracker, experiment_id))
