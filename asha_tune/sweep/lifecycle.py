"""A sweep's life: launch (or start over), run on Ray, resume; records closed however it ends.

A sweep is its settings (sweep.json), an Optuna study, an MLflow parent run with a child per trial,
and Tune's folder. `launch` checks it can run before anything is written, `_run` runs Tune inside a
Ray session, `_close` ends the records by what they say, so nothing stays RUNNING.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asha_tune import defaults
from asha_tune.analysis.compare import find_parent
from asha_tune.analysis.verdicts import best_trial, describe_best, summary
from asha_tune.display import count, size_text
from asha_tune.errors import AshaTuneError, ConfigError, NoSpaceError
from asha_tune.spaces import describe_selection
from asha_tune.sweep.disk import Reserve, is_no_space, stopped_for_space
from asha_tune.sweep.preflight import (
    check_address,
    check_data,
    check_local_resources,
    check_space,
    check_weights,
    folder_bytes,
    reserve_bytes,
    sweep_bytes,
)
from asha_tune.sweep.rehearsal import rehearsal_summary
from asha_tune.sweep.session import (
    RayInfo,
    cluster_address,
    describe_driver,
    driver_alive,
    driver_identity,
    is_local,
    ray_session,
    resolve_address,
    say,
    wait_for_a_fitting_node,
)
from asha_tune.sweep.settings import SWEEP_FILE, SweepSettings
from asha_tune.sweep.study import StudyHandle, archive_study, create_study
from asha_tune.sweep.tuner import new_tuner, restored_tuner
from asha_tune.sweep.warm_start import check_warm_start, warm_start_from
from asha_tune.sweep.watch import watching
from asha_tune.tracking import Tracker
from asha_tune.tracking.client import version_tags
from asha_tune.tracking.records import TrialRecord, sweep_trials
from asha_tune.tracking.tags import (
    COMPLETED,
    DRIVER_TAG,
    FAILED,
    FAILURE_TAG,
    FINAL_STATUSES,
    INTERRUPTED,
    REHEARSAL_TAG,
    REPLICATE_OF_TAG,
    RESTARTED_AS_TAG,
    RESULTS_DIR_TAG,
    RUNNING,
    SELECTION_TAG,
    SPACE_TAG,
    STUDY_URL_TAG,
    SWEEP_TAG,
    TRIALS_TAG,
    WARM_START_ADDED_TAG,
    WARM_START_SKIPPED_TAG,
    WARM_START_TAG,
)
from asha_tune.tracking.trials import selection_tags

__all__ = ["SweepOutcome", "archive", "command_tail", "launch", "resume", "say"]


@dataclass
class SweepOutcome:
    settings: SweepSettings
    trials: list[TrialRecord]
    best: TrialRecord | None
    finished: bool  # False when the driver was interrupted (resume to continue)


def command_tail(settings: SweepSettings) -> str:
    """` --results-dir DIR` where a later command needs it to find this sweep."""
    return "" if settings.results_dir == defaults.results_dir() else f" --results-dir {settings.results_dir}"


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
    """What can be checked before anything is written or started (exit 2 on a problem; 4 when
    --results-dir has too little space)."""
    if settings.rehearse is None:  # a rehearsal's trials read no data and load no weights
        check_data(settings.space, settings.runtime)
    address = cluster_address(settings)
    if address is not None:
        check_address(str(resolve_address(address)))
    else:
        check_local_resources(settings.space, settings.runtime.device, settings.num_cpus, settings.num_gpus)
        if settings.rehearse is None:
            check_weights(settings.space)
    if settings.rehearse is None:  # a rehearsal's checkpoints are a few bytes each
        check_space(settings.results_dir, settings.space, held=folder_bytes(settings.sweep_dir))


def _close(
    settings: SweepSettings, tracker: Tracker, experiment_id: str, failure: str | None = None
) -> SweepOutcome:
    """Read the records back and end the parent run by what they say; an unfinished sweep's
    running trials become interrupted in MLflow and WAITING in Optuna (resume takes them back)."""
    space = settings.space
    trials = sweep_trials(tracker, experiment_id, settings.run_id)
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
    # A rehearsal's scores are made up: its parent run logs no best figures.
    summarized = _summarize(settings, tracker, trials) if settings.rehearse is None else {}
    tags = {TRIALS_TAG: len(trials), **summarized}
    if failure is not None:
        tracker.finish(settings.run_id, INTERRUPTED, {**tags, FAILURE_TAG: failure[:2000]})
    elif not finished:
        tracker.finish(settings.run_id, INTERRUPTED, tags)
    elif trials and all(t.status == FAILED for t in trials):
        tracker.finish(
            settings.run_id,
            FAILED,
            {**tags, FAILURE_TAG: f"all {count(len(trials), 'trial')} failed"},
        )
    else:
        tracker.finish(settings.run_id, COMPLETED, tags)
    return SweepOutcome(settings, trials, best, finished)


def _summarize(settings: SweepSettings, tracker: Tracker, trials: list[TrialRecord]) -> dict[str, str]:
    """Log the best trial's figures on the parent run (best_val_acc, best_val_acc_se,
    best_acc_cartoon, ...) and return its summary tags, so sweeps compare as rows in MLflow."""
    s = settings.space.scheduler
    metrics, tags = summary(trials, s.metric, s.mode)
    if metrics:
        tracker.log_metrics(settings.run_id, metrics, step=0)
    return {**tags, SELECTION_TAG: settings.space.selection.protocol} if tags else {}


def _user_error(err: BaseException) -> AshaTuneError | None:
    """An AshaTuneError that Tune wrapped (raised in a callback or the searcher), if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, AshaTuneError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class DriverAliveError(ConfigError):
    """Another driver runs the sweep now: nothing may be closed or changed."""


def _claim(settings: SweepSettings, tracker: Tracker, takeover: bool) -> None:
    """Record this driver on the parent run; a sweep recorded as running is taken over only when
    its recorded driver is gone (a resubmitted job after a lost driver), never while it is alive."""
    if takeover:
        recorded = tracker.tags(settings.run_id).get(DRIVER_TAG)
        old = json.loads(recorded) if recorded else None
        if old and driver_alive(old):
            raise DriverAliveError(
                f"sweep {settings.name} is being run by another driver ({describe_driver(old)}): "
                f"wait for it to end, or stop it (Ctrl-C, or ray job stop), then asha-tune resume "
                f"{settings.name}{command_tail(settings)}"
            )
        gone = f" ({describe_driver(old)})" if old else ""
        say(f"sweep {settings.name} was recorded as running, but its driver{gone} is gone: continuing it")
    tracker.set_tags(settings.run_id, {DRIVER_TAG: json.dumps(driver_identity())})


def head_lost(sweep_file: Path, experiment_id: str, gcs_address: str, silent_s: float, local: bool) -> str:
    """In the head watch (sweep/watch.py), once the head is gone: close the sweep's records
    (MLflow and Optuna need no Ray) and return the line that says so and how to continue."""
    settings = SweepSettings.model_validate_json(sweep_file.read_text())
    what = "the local Ray instance" if local else "the Ray cluster's head"
    back = "" if local else "once the head is back (asha-tune cluster up, for a local cluster), "
    message = (
        f"lost {what} at {gcs_address} (no answer for {silent_s:.0f} s); the sweep is kept: "
        f"{back}asha-tune resume {settings.name}{command_tail(settings)}"
    )
    try:
        _close(settings, Tracker(settings.tracking_uri), experiment_id, failure=f"lost {what}")
    except Exception as err:  # the tracking server gone as well: resume closes them
        message += f" (its records are not closed: {str(err).splitlines()[0] if str(err) else err!r})"
    return message


def _no_space(settings: SweepSettings, free: int | None) -> NoSpaceError:
    need = sweep_bytes(settings.space)
    have = f" ({size_text(free)} free)" if free is not None else ""
    return NoSpaceError(
        f"no space left under --results-dir {settings.results_dir}{have}: the sweep stopped before its "
        f"trials' next checkpoints; free at least {size_text(need.peak)} there ({need.text()})"
    )


def _run(
    settings: SweepSettings,
    tracker: Tracker,
    experiment_id: str,
    make_tuner: Callable[[], Any],
    takeover: bool = False,
) -> SweepOutcome:
    """Start Ray, run the tuner, and close the records however it ends."""
    reserve = Reserve(settings.sweep_dir, reserve_bytes(settings.space))
    try:
        with ray_session(settings) as info:
            catch_sigterm()  # ray.init installed its own handler
            _claim(settings, tracker, takeover)
            if not is_local(settings):
                wait_for_a_fitting_node(settings, info.gcs_address)
            _announce(settings, info)
            reserve.hold()
            with watching(
                info.gcs_address,
                info.head_lost_s,
                settings.sweep_dir / SWEEP_FILE,
                experiment_id,
                is_local(settings),
                info.stderr_fd,
            ):
                make_tuner().fit()
    except DriverAliveError:
        raise  # the other driver's records are its own
    except KeyboardInterrupt:
        pass  # Tune saved its state; the records below say what is left to do
    except Exception as err:
        if is_no_space(err) or stopped_for_space(settings.sweep_dir) is not None:
            user: AshaTuneError | None = _no_space(settings, None)
        else:
            user = _user_error(err)
        if user is None:  # not one that Tune wrapped (e.g. a lost server)
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            _close(settings, tracker, experiment_id, failure=reason)
            raise AshaTuneError(f"the sweep stopped: {reason}") from None
        _close(settings, tracker, experiment_id, failure=str(user))
        raise _with_resume_hint(user, settings) from None
    finally:
        reserve.release()
    if (free := stopped_for_space(settings.sweep_dir)) is not None:
        full = _no_space(settings, free)
        _close(settings, tracker, experiment_id, failure=str(full))
        raise _with_resume_hint(full, settings)
    return _conclude(_close(settings, tracker, experiment_id))


def _with_resume_hint(err: AshaTuneError, settings: SweepSettings) -> AshaTuneError:
    """The same error (type and exit status), saying that the sweep is kept and how to go on."""
    message = f"{err} (the sweep is kept: asha-tune resume {settings.resume_name}{command_tail(settings)})"
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
    if ray_info.driver_log:
        say(f"Ray's own warnings in this driver: {ray_info.driver_log}")
    say(f"results and checkpoints: {settings.sweep_dir}")
    say(f"MLflow: {settings.tracking_uri} (parent run {settings.parent_run_id})")
    say(f"Optuna study: {name} in {settings.study_url}")


def _conclude(outcome: SweepOutcome) -> SweepOutcome:
    from asha_tune.sweep.checkpoints import kept_checkpoint

    settings = outcome.settings
    space = settings.space
    if settings.rehearse is not None:
        say(rehearsal_summary(outcome.trials, space))
    elif not settings.is_confirmation:  # a confirmation prints its own report (asha_tune.confirm)
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
            f"the sweep did not finish; continue it with: asha-tune resume {settings.resume_name}"
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


def archived_name(settings: SweepSettings) -> str:
    """NAME.attempt-K: the first K not taken in the results folder."""
    k = 1
    while (settings.results_dir / f"{settings.name}.attempt-{k}").exists():
        k += 1
    return f"{settings.name}.attempt-{k}"


def archive(settings: SweepSettings, as_name: str | None = None, family: str | None = None) -> str:
    """`launch --restart`: the old attempt's records move to NAME.attempt-K (Ray folder, Optuna
    study, MLflow parent run renamed), so nothing is lost and the name is free again. A replicated
    search's replicates move with it, to NAME.attempt-K.r<r> (`family`: that archived search)."""
    old = SweepSettings.load(settings.name, settings.results_dir)
    tracker = Tracker(old.tracking_uri)
    if old.parent_run_id and tracker.status(old.parent_run_id) == RUNNING:
        raise ConfigError(existing_sweep_problem(settings))
    archived = as_name or archived_name(old)
    for r in range(old.space.search.replicates if old.space.search.replicates > 1 else 0):
        if (old.results_dir / f"{old.name}.r{r}" / SWEEP_FILE).is_file():
            replicate = SweepSettings.load(f"{old.name}.r{r}", old.results_dir)
            archive(replicate, f"{archived}.r{r}", family=archived)
    try:
        archive_study(old.study_url, old.name, archived)
    except KeyError:
        pass  # its study was never created
    family_tags = {REPLICATE_OF_TAG: family} if family else {}
    if old.parent_run_id:
        tracker.rename(old.parent_run_id, archived)
        tracker.set_tags(old.parent_run_id, {SWEEP_TAG: archived, RESTARTED_AS_TAG: old.name, **family_tags})
    old.sweep_dir.rename(old.results_dir / archived)
    old.model_copy(update={"name": archived, **({"replicate_of": family} if family else {})}).save()
    say(f"sweep {old.name}: the earlier attempt is kept as {archived}")
    return archived


def continuing(settings: SweepSettings) -> SweepSettings:
    """`launch --if-exists resume` of a sweep that exists: its saved settings, with this launch's
    runtime options (data, cache, device, the cluster it joins); refused when this launch asks
    for another space or other records, which a resume would silently ignore."""
    old = SweepSettings.load(settings.name, settings.results_dir)
    differs = [
        what
        for what, mine, theirs in (
            ("space", settings.space.model_dump(mode="json"), old.space.model_dump(mode="json")),
            ("--tracking-uri", settings.tracking_uri, old.tracking_uri),
            ("--study-url", settings.study_url, old.study_url),
        )
        if mine != theirs
    ]
    if differs:
        raise ConfigError(
            f"sweep {settings.name} exists with another {' and '.join(differs)} than this launch's: "
            f"--if-exists resume continues a sweep only as it was launched (asha-tune resume "
            f"{settings.name}{command_tail(settings)} continues it as it is); choose another --name, "
            f"or start it over with --restart"
        )
    runtime = {
        k: getattr(settings, k) for k in ("runtime", "address", "num_cpus", "num_gpus", "resource_wait_s")
    }
    return old.model_copy(update=runtime)


def launch(settings: SweepSettings, restart: bool = False, if_exists: str = "fail") -> SweepOutcome:
    """Start a new sweep: check it can run, create its study and MLflow parent run, run it on Ray.

    A name already taken is refused (`if_exists` "fail"), or continued as `resume` does
    ("resume": what a job's entrypoint wants, so that a resubmitted job goes on where the lost
    one stopped, and one submitted after the sweep finished just reports it)."""
    if (settings.sweep_dir / SWEEP_FILE).exists() and not restart and if_exists == "resume":
        return resume(continuing(settings))
    if settings.space.search.replicates > 1:  # a replicated search runs as replicated.py says
        from asha_tune.sweep.replicated import launch_replicated

        return launch_replicated(settings, restart)
    with sigterm_as_sigint():
        if (settings.sweep_dir / SWEEP_FILE).exists() and not restart:
            raise ConfigError(existing_sweep_problem(settings))
        if settings.warm_start:
            check_warm_start(settings.space, settings.name, settings.warm_start)
            find_parent(Tracker(settings.tracking_uri), settings.warm_start)  # it exists, or one line
        preflight(settings)
        if (settings.sweep_dir / SWEEP_FILE).exists():
            archive(settings)
        space = settings.space
        create_study(settings.study_url, settings.name, space, rehearsal=settings.rehearse is not None)
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
                **selection_tags(
                    space.selection.protocol,
                    ", ".join(space.data.sources),
                    list(space.data.target_domains or ()),
                    space.scheduler.metric,
                    space.scheduler.mode,
                ),
                **settings.run_tags,
                **({REHEARSAL_TAG: "true"} if settings.rehearse else {}),
            },
        )
        tracker.log_dict(settings.parent_run_id, space.model_dump(mode="json"), "space.json")
        settings.save()
        if settings.warm_start:
            _warm_start(settings, tracker)
        handle = StudyHandle(settings.study_url, settings.name, space)
        return _run(settings, tracker, experiment_id, lambda: new_tuner(settings, handle, experiment_id))


def _warm_start(settings: SweepSettings, tracker: Tracker) -> None:
    """The study receives the other sweep's trials before the first is asked; the parent run says
    how many and keeps the list (warm_start.txt)."""
    assert settings.warm_start is not None
    result = warm_start_from(tracker, settings.warm_start, settings.study_url, settings.name)
    say(result.text())
    tracker.set_tags(
        settings.run_id,
        {
            WARM_START_TAG: settings.warm_start,
            WARM_START_ADDED_TAG: len(result.added),
            WARM_START_SKIPPED_TAG: len(result.skipped),
        },
    )
    tracker.log_text(settings.run_id, result.text() + "\n", "warm_start.txt")


def resume(settings: SweepSettings) -> SweepOutcome:
    """Continue an unfinished sweep: same study, same parent run, trials from their checkpoints.

    `settings` may carry new runtime options (data root, cache, device); they are saved. A
    replicated search continues its unfinished replicates and launches those not started.
    """
    if settings.space.search.replicates > 1:
        from asha_tune.sweep.replicated import resume_replicated

        return resume_replicated(settings)
    tracker, experiment_id = _records(settings)
    trials = sweep_trials(tracker, experiment_id, settings.run_id)
    space = settings.space
    if len(trials) >= space.num_trials and all(t.status in FINAL_STATUSES for t in trials):
        say(f"sweep {settings.name} has finished ({count(len(trials), 'trial')}): nothing to resume")
        # Its records end the parent run as they say (a driver killed after the last trial left it
        # interrupted), with the summary tags older sweeps lack.
        return _conclude(_close(settings, tracker, experiment_id))
    with sigterm_as_sigint():
        preflight(settings)
        running = tracker.status(settings.run_id) == RUNNING  # its driver was lost, or still runs
        settings.save()
        handle = StudyHandle(settings.study_url, settings.name, space)
        handle.unpark()
        tracker.reopen(settings.run_id)
        say("resuming: finished trials are kept, unfinished ones continue from their checkpoints")
        return _run(
            settings,
            tracker,
            experiment_id,
            lambda: restored_tuner(settings, handle, experiment_id),
            takeover=running,
        )
