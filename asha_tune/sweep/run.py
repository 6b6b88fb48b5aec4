"""Launch and resume sweeps: Ray Tune with ASHA and an Optuna study, tracked in MLflow."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asha_tune import defaults
from asha_tune.analysis.verdicts import best_trial, describe_best, summary
from asha_tune.display import count
from asha_tune.errors import AshaTuneError, ConfigError
from asha_tune.spaces import describe_selection
from asha_tune.sweep.preflight import check_address, check_data, check_local_resources, check_weights
from asha_tune.sweep.settings import SWEEP_FILE, SweepSettings
from asha_tune.sweep.study import StudyHandle, archive_study, create_study
from asha_tune.tracking import Tracker
from asha_tune.tracking.client import version_tags
from asha_tune.tracking.records import TrialRecord, sweep_trials
from asha_tune.tracking.tags import (
    COMPLETED,
    FAILED,
    FAILURE_TAG,
    FINAL_STATUSES,
    INTERRUPTED,
    RESTARTED_AS_TAG,
    RESULTS_DIR_TAG,
    RUNNING,
    SELECTION_TAG,
    SPACE_TAG,
    STUDY_URL_TAG,
    SWEEP_TAG,
    TRIALS_TAG,
)

# Set before Ray is imported: no TensorBoard files (CSV and JSON loggers are added explicitly),
# frequent experiment snapshots (a killed driver loses at most a second of bookkeeping), quiet
# Ray Train migration notices, and Tune's legacy output engine, which prints nothing at verbose 0
# (the new one prints a box of internal class names whatever the verbosity).
_RAY_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}
# Tune's own lines that asha-tune replaces: tracebacks of failed trials (one line per trial is
# printed instead; the traceback stays in the trial's error file) and its `Tuner.restore` hint.
_TUNE_NOISE = (
    "Trial task failed",
    "Trials did not complete",
    "Stop signal received",
    "Experiment has been interrupted",
    "Training has been interrupted",
)
_TUNE_LOGGERS = ("ray.tune.tune", "ray.tune.execution.tune_controller")
DEFAULT_TOKEN_FILE = Path.home() / ".ray" / "auth_token"
TUNER_FILE = "tuner.pkl"


@dataclass
class SweepOutcome:
    settings: SweepSettings
    trials: list[TrialRecord]
    best: TrialRecord | None
    finished: bool  # False when the driver was interrupted (resume to continue)


@dataclass
class RayInfo:
    dashboard: str
    logs: Path | None  # a local Ray's log folder (worker output, tracebacks)
    token: str | None  # where the dashboard's token is, when token auth is on


def say(message: str) -> None:
    print(message, flush=True)


class _QuietTune(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TUNE_NOISE)


def is_local(settings: SweepSettings) -> bool:
    return not (settings.address or os.environ.get("RAY_ADDRESS"))


def command_tail(settings: SweepSettings) -> str:
    """` --results-dir DIR` where a later command needs it to find this sweep."""
    return "" if settings.results_dir == defaults.results_dir() else f" --results-dir {settings.results_dir}"


# --- Ray ---------------------------------------------------------------------------------------


def _token_source() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "$RAY_AUTH_TOKEN"
    return str(Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or DEFAULT_TOKEN_FILE))


def _refresh_ray_auth() -> None:
    """Ray reads RAY_AUTH_MODE into its config at import: a process that imported Ray before
    (a notebook, a test) must re-read it, as ray.init does when it turns token auth on itself."""
    if "ray" in sys.modules:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
        from ray._raylet import AuthenticationTokenLoader

        _enable_token_auth()
        AuthenticationTokenLoader.instance().reset_cache()


def _local_auth() -> str | None:
    """Token auth for a local Ray, set explicitly (so Ray does not warn at every launch), with a
    token made once per user. Returns where the token is, or None where the user turned auth off.

    The default token file is Ray's own, so `ray status` and a browser that already holds it
    (the dashboard keeps it in a cookie) work with every local sweep.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode and mode.lower() != "token":
        return None
    os.environ["RAY_AUTH_MODE"] = "token"
    if not os.environ.get("RAY_AUTH_TOKEN"):
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or DEFAULT_TOKEN_FILE)
        if not path.is_file():
            import secrets

            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_hex(32))  # 256 bits, as `ray get-auth-token --generate`
    _refresh_ray_auth()
    return _token_source()


def _cluster_auth(address: str) -> str | None:
    """Ray 2.60 token auth: a client joining by address needs RAY_AUTH_MODE=token to send it."""
    if not os.environ.get("RAY_AUTH_MODE"):
        token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or DEFAULT_TOKEN_FILE)
        if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
            os.environ["RAY_AUTH_MODE"] = "token"
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return None
    _refresh_ray_auth()
    return _token_source()


def start_ray(settings: SweepSettings) -> RayInfo:
    """Join the cluster at `address`, or start a local Ray on loopback."""
    os.environ.update({k: v for k, v in _RAY_ENV.items() if k not in os.environ})
    address = settings.address or os.environ.get("RAY_ADDRESS")
    if not address:  # a local instance is a single node: keep it on loopback
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    elif address.split(":")[0] in ("127.0.0.1", "localhost"):
        # A cluster on this machine's loopback (asha-tune cluster): else Ray swaps 127.0.0.1 for
        # the machine's network address, where nothing listens.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # Before Ray is imported: it reads RAY_AUTH_MODE once, at import.
    token = _cluster_auth(address) if address else _local_auth()
    import ray

    try:
        if address:
            context = ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            # "local": always a new instance, never the cluster a past `ray start` left in
            # /tmp/ray/ray_current_cluster (which a plain ray.init() would join).
            context = ray.init(
                address="local",
                num_cpus=settings.num_cpus,
                num_gpus=settings.num_gpus,
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
    except Exception as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise AshaTuneError(f"cannot start or join {where}: {str(err).splitlines()[0]}") from None
    for name in _TUNE_LOGGERS:
        logging.getLogger(name).addFilter(_QuietTune())
    if address:
        say(f"joined the Ray cluster at {address}")
    url = context.dashboard_url or ""
    url = f"http://{url}" if url and not url.startswith("http") else url
    session = (context.address_info or {}).get("session_dir")
    logs = Path(session) / "logs" if session and not address else None
    return RayInfo(url, logs, token)


def _fits(node: dict[str, Any], need: dict[str, float]) -> bool:
    return node.get("Alive", False) and all(node["Resources"].get(k, 0) >= v for k, v in need.items())


def wait_for_a_fitting_node(settings: SweepSettings) -> None:
    """On a cluster, a trial no node can hold would wait forever: check, wait a bounded time
    (`resource_wait_s`, for autoscaling clusters, which are asked for such a node), then stop."""
    import ray
    from ray.autoscaler.sdk import request_resources

    r = settings.space.resources
    need = {k: v for k, v in (("CPU", r.cpu), ("GPU", r.gpu)) if v}
    deadline = time.monotonic() + settings.resource_wait_s
    asked = False
    try:
        while not any(_fits(node, need) for node in ray.nodes()):
            if time.monotonic() >= deadline:
                largest = [
                    {k: v for k, v in n["Resources"].items() if k in ("CPU", "GPU")}
                    for n in ray.nodes()
                    if n.get("Alive")
                ]
                raise ConfigError(
                    f"no node of the Ray cluster can run a trial of space {settings.space.name} "
                    f"(each needs {need}; nodes: {largest}), after waiting {settings.resource_wait_s:g} s: "
                    f"change resources with --set resources.gpu=... / resources.cpu=..., or let an "
                    f"autoscaling cluster add a node with --resource-wait SECONDS"
                )
            if not asked:
                say(
                    f"no node of the cluster fits a trial ({need}) yet: asking the autoscaler and "
                    f"waiting up to {settings.resource_wait_s:g} s"
                )
                request_resources(bundles=[need])
                asked = True
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    finally:
        if asked:
            request_resources(bundles=[])  # the request is persistent until replaced


def _trainable(settings: SweepSettings) -> Any:
    from ray import tune

    from asha_tune.sweep.trainable import train_trial

    resources = settings.space.resources
    return tune.with_resources(
        tune.with_parameters(train_trial, space=settings.space, runtime=settings.runtime),
        {"cpu": resources.cpu, "gpu": resources.gpu},
    )


def _tuner(settings: SweepSettings, handle: StudyHandle, experiment_id: str) -> Any:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import FIFOScheduler

    from asha_tune.sweep.callbacks import ProgressCallback, TrackingCallback
    from asha_tune.sweep.checkpoints import CheckpointCleanup
    from asha_tune.sweep.searcher import ResumableASHA, StudySearcher

    space = settings.space
    s, epochs = space.scheduler, space.train.epochs
    if s.kind == "asha":
        scheduler = ResumableASHA(
            handle,
            time_attr="epoch",
            metric=s.metric,
            mode=s.mode,
            max_t=epochs,
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    callbacks = [
        TrackingCallback(
            settings.tracking_uri, experiment_id, settings.parent_run_id, space, settings.configuration_tags
        ),
        ProgressCallback(s.metric, s.mode, space.num_trials, epochs),
        CheckpointCleanup(s.metric, s.mode, epochs),
        CSVLoggerCallback(),
        JsonLoggerCallback(),
    ]
    return tune.Tuner(
        _trainable(settings),
        tune_config=tune.TuneConfig(
            search_alg=StudySearcher(handle, s.metric, s.mode, epochs),
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
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=space.search.max_failures),
        ),
    )


# --- a sweep's life ----------------------------------------------------------------------------


def _sigterm_as_sigint(signum: int, frame: Any) -> None:
    handler = signal.getsignal(signal.SIGINT)  # Tune's while it runs, else KeyboardInterrupt
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def catch_sigterm() -> None:
    """SIGTERM (`kill`, a batch scheduler) stops a sweep as Ctrl-C does: Tune saves its state and
    every record is closed as interrupted, so nothing stays RUNNING. Called again after
    `ray.init`, which installs its own handler (and its core aborts the process on SIGTERM)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_sigint)


@contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """`catch_sigterm` for the life of a launch or resume; the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    catch_sigterm()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def preflight(settings: SweepSettings) -> None:
    """What can be checked before anything is written or started (exit 2 on a problem)."""
    check_data(settings.space, settings.runtime)
    if not is_local(settings):
        check_address(settings.address or os.environ["RAY_ADDRESS"])
    if is_local(settings):
        check_local_resources(settings.space, settings.runtime.device, settings.num_cpus, settings.num_gpus)
        check_weights(settings.space)


def _close(
    settings: SweepSettings, tracker: Tracker, experiment_id: str, failure: str | None = None
) -> SweepOutcome:
    """Read the records back and end the parent run by what they say; an unfinished sweep's
    running trials become interrupted in MLflow and WAITING in Optuna (resume takes them back)."""
    space = settings.space
    trials = sweep_trials(tracker, experiment_id, settings.parent_run_id)
    finished = (
        failure is None
        and len(trials) >= space.num_trials
        and all(t.status in FINAL_STATUSES for t in trials)
    )
    if not finished:
        for record in trials:
            if record.status == RUNNING:
                tracker.finish(record.run_id, INTERRUPTED)
        StudyHandle(settings.study_url, settings.name, space).park_running()
    best = best_trial(trials, space.scheduler.metric, space.scheduler.mode)
    tags = {TRIALS_TAG: len(trials), **_summarize(settings, tracker, trials)}
    if failure is not None:
        tracker.finish(settings.parent_run_id, INTERRUPTED, {**tags, FAILURE_TAG: failure[:2000]})
    elif not finished:
        tracker.finish(settings.parent_run_id, INTERRUPTED, tags)
    elif trials and all(t.status == FAILED for t in trials):
        tracker.finish(
            settings.parent_run_id,
            FAILED,
            {**tags, FAILURE_TAG: f"all {count(len(trials), 'trial')} failed"},
        )
    else:
        tracker.finish(settings.parent_run_id, COMPLETED, tags)
    return SweepOutcome(settings, trials, best, finished)


def _summarize(settings: SweepSettings, tracker: Tracker, trials: list[TrialRecord]) -> dict[str, str]:
    """Log the best trial's figures on the parent run (best_val_acc, best_val_acc_se,
    best_acc_cartoon, ...) and return its summary tags, so sweeps compare as rows in MLflow."""
    s = settings.space.scheduler
    metrics, tags = summary(trials, s.metric, s.mode)
    if metrics:
        tracker.log_metrics(settings.parent_run_id, metrics, step=0)
    return {**tags, SELECTION_TAG: settings.space.selection.protocol} if tags else {}


def _user_error(err: BaseException) -> AshaTuneError | None:
    """An AshaTuneError that Tune wrapped (raised in a callback or the searcher), if any."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, AshaTuneError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _run(
    settings: SweepSettings, tracker: Tracker, experiment_id: str, make_tuner: Callable[[], Any]
) -> SweepOutcome:
    """Start Ray, run the tuner, and close the records however it ends."""
    try:
        info = start_ray(settings)
        catch_sigterm()
        import ray

        try:
            if not is_local(settings):
                wait_for_a_fitting_node(settings)
            _announce(settings, info)
            make_tuner().fit()
        finally:
            ray.shutdown()
    except KeyboardInterrupt:
        pass  # Tune saved its state; the records below say what is left to do
    except Exception as err:
        if (user := _user_error(err)) is None:  # not one that Tune wrapped (e.g. a lost server)
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            _close(settings, tracker, experiment_id, failure=reason)
            raise AshaTuneError(f"the sweep stopped: {reason}") from None
        _close(settings, tracker, experiment_id, failure=str(user))
        raise _with_resume_hint(user, settings) from None
    return _conclude(_close(settings, tracker, experiment_id))


def _with_resume_hint(err: AshaTuneError, settings: SweepSettings) -> AshaTuneError:
    """The same error (type and exit status), saying that the sweep is kept and how to go on."""
    message = f"{err} (the sweep is kept: asha-tune resume {settings.name}{command_tail(settings)})"
    try:
        return type(err)(message)
    except TypeError:  # an error class whose constructor wants more than a message
        kept = AshaTuneError(message)
        kept.exit_code = err.exit_code
        return kept


def _announce(settings: SweepSettings, ray_info: RayInfo) -> None:
    space, name = settings.space, settings.name
    at_once = (
        "one at a time (reproducible)"
        if space.search.reproducible
        else f"up to {space.search.concurrency} at once"
    )
    say(
        f"sweep {name}: {count(space.num_trials, 'trial')} of space {space.name} ({at_once}), "
        f"{space.search.algorithm} search, {space.scheduler.kind} scheduler"
    )
    say(f"selection: {describe_selection(space)}")
    if ray_info.dashboard:
        live = " (live while the sweep runs; MLflow keeps everything after)" if is_local(settings) else ""
        say(f"Ray dashboard: {ray_info.dashboard}{live}")
        if ray_info.token:
            say(f"  the dashboard asks for a token once per browser: paste the one in {ray_info.token}")
    else:
        say("Ray dashboard: not available on this cluster")
    if ray_info.logs:
        say(f"Ray's logs (trial output, tracebacks): {ray_info.logs}")
    say(f"results and checkpoints: {settings.sweep_dir}")
    say(f"MLflow: {settings.tracking_uri} (parent run {settings.parent_run_id})")
    say(f"Optuna study: {name} in {settings.study_url}")


def _conclude(outcome: SweepOutcome) -> SweepOutcome:
    from asha_tune.sweep.checkpoints import kept_checkpoint

    settings = outcome.settings
    space = settings.space
    if settings.nested_under is None:  # a confirmation prints its own report (asha_tune.confirm)
        confirm = f"asha-tune confirm {settings.name}{command_tail(settings)}"
        say(
            describe_best(
                outcome.trials,
                space.scheduler.metric,
                space.scheduler.mode,
                space.selection.protocol,
                confirm,
            )
        )
        kept = outcome.best and kept_checkpoint(settings.sweep_dir, outcome.best.number)
        if kept:
            say(f"its final weights: {kept} (--weights accepts the file)")
    if not outcome.finished:
        say(
            f"the sweep did not finish; continue it with: asha-tune resume {settings.name}"
            f"{command_tail(settings)}"
        )
    say(f"look at it in MLflow: asha-tune ui {settings.name}{command_tail(settings)}")
    return outcome


def _records(settings: SweepSettings) -> tuple[Tracker, str]:
    tracker = Tracker(settings.tracking_uri)
    return tracker, tracker.experiment(settings.space.name)


# --- launch, restart, resume -------------------------------------------------------------------


def existing_sweep_problem(settings: SweepSettings) -> str:
    """What to do about a name already taken, by how that sweep ended."""
    old = SweepSettings.load(settings.name, settings.results_dir)
    status = Tracker(old.tracking_uri).status(old.parent_run_id) if old.parent_run_id else INTERRUPTED
    name, tail = settings.name, command_tail(settings)
    if status == COMPLETED:
        return (
            f"sweep {name} already exists and finished: choose another --name "
            f"(look at it: asha-tune ui {name}{tail}), or start it over with --restart"
        )
    if status == RUNNING:
        return (
            f"sweep {name} already exists and is recorded as running: if its driver is gone, "
            f"asha-tune resume {name}{tail}; or choose another --name"
        )
    return (
        f"sweep {name} already exists and ended {status}: continue it with asha-tune resume "
        f"{name}{tail} (which takes --data-root, --cache-dir, --device), start it over with "
        f"--restart (its records are kept under another name), or choose another --name"
    )


def archive(settings: SweepSettings) -> str:
    """`launch --restart`: the old attempt's records move to NAME.attempt-K (Ray folder, Optuna
    study, MLflow parent run renamed), so nothing is lost and the name is free again."""
    old = SweepSettings.load(settings.name, settings.results_dir)
    tracker = Tracker(old.tracking_uri)
    if old.parent_run_id and tracker.status(old.parent_run_id) == RUNNING:
        raise ConfigError(existing_sweep_problem(settings))
    k = 1
    while (old.results_dir / f"{old.name}.attempt-{k}").exists():
        k += 1
    archived = f"{old.name}.attempt-{k}"
    try:
        archive_study(old.study_url, old.name, archived)
    except KeyError:
        pass  # its study was never created
    if old.parent_run_id:
        tracker.rename(old.parent_run_id, archived)
        tracker.set_tags(old.parent_run_id, {SWEEP_TAG: archived, RESTARTED_AS_TAG: old.name})
    old.sweep_dir.rename(old.results_dir / archived)
    old.model_copy(update={"name": archived}).save()
    say(f"sweep {old.name}: the earlier attempt is kept as {archived}")
    return archived


def launch(settings: SweepSettings, restart: bool = False) -> SweepOutcome:
    """Start a new sweep: check it can run, create its study and MLflow parent run, run it on Ray."""
    with sigterm_as_sigint():
        if (settings.sweep_dir / SWEEP_FILE).exists() and not restart:
            raise ConfigError(existing_sweep_problem(settings))
        preflight(settings)
        if (settings.sweep_dir / SWEEP_FILE).exists():
            archive(settings)
        space = settings.space
        create_study(settings.study_url, settings.name, space)
        tracker, experiment_id = _records(settings)
        settings.parent_run_id = tracker.start_run(
            experiment_id,
            name=settings.name,
            parent_run_id=settings.nested_under,
            params={
                "search": space.search.model_dump(mode="json"),
                "selection": space.selection.model_dump(mode="json"),
                "scheduler": space.scheduler.model_dump(mode="json"),
                "resources": space.resources.model_dump(mode="json"),
            },
            tags={
                **version_tags(),
                SWEEP_TAG: settings.name,
                SPACE_TAG: space.name,
                RESULTS_DIR_TAG: str(settings.sweep_dir),
                STUDY_URL_TAG: settings.study_url,
                **settings.run_tags,
            },
        )
        tracker.log_dict(settings.parent_run_id, space.model_dump(mode="json"), "space.json")
        settings.save()
        handle = StudyHandle(settings.study_url, settings.name, space)
        return _run(settings, tracker, experiment_id, lambda: _tuner(settings, handle, experiment_id))


def resume(settings: SweepSettings) -> SweepOutcome:
    """Continue an unfinished sweep: same study, same parent run, trials from their checkpoints.

    `settings` may carry new runtime options (data root, cache, device); they are saved.
    """
    tracker, experiment_id = _records(settings)
    trials = sweep_trials(tracker, experiment_id, settings.parent_run_id)
    space = settings.space
    if len(trials) >= space.num_trials and all(t.status in FINAL_STATUSES for t in trials):
        say(f"sweep {settings.name} has finished ({count(len(trials), 'trial')}): nothing to resume")
        best = best_trial(trials, space.scheduler.metric, space.scheduler.mode)
        tracker.set_tags(settings.parent_run_id, _summarize(settings, tracker, trials))  # older sweeps too
        return _conclude(SweepOutcome(settings, trials, best, True))
    with sigterm_as_sigint():
        preflight(settings)
        settings.save()
        handle = StudyHandle(settings.study_url, settings.name, space)
        handle.unpark()
        tracker.reopen(settings.parent_run_id)
        restored = (settings.sweep_dir / TUNER_FILE).is_file()
        say("resuming: finished trials are kept, unfinished ones continue from their checkpoints")

        def make_tuner() -> Any:
            if not restored:  # stopped before Tune saved anything: start Tune afresh
                return _tuner(settings, handle, experiment_id)
            from ray import tune

            return tune.Tuner.restore(
                str(settings.sweep_dir), _trainable(settings), resume_unfinished=True, resume_errored=False
            )

        return _run(settings, tracker, experiment_id, make_tuner)
