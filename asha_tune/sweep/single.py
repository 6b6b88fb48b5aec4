"""One sweep's run: launch (or start over), run on Ray, resume; its records closed however it ends.

A sweep is its settings (sweep.json), an Optuna study, an MLflow parent run with a child per trial,
and Tune's folder. `launch` checks it can run before anything is written, `_run` runs Tune inside a
Ray session, records.close ends the records by what they say, so nothing stays RUNNING. A
replicated search runs its replicates through this module (replicated.py); which one a command
runs is asha_tune.api's; what `resume` re-runs, resume_policy.py's.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from asha_tune.display import count, size_text
from asha_tune.errors import AshaTuneError, ConfigError, NoSpaceError, chain, first_line
from asha_tune.spaces import describe_selection
from asha_tune.sweep.control import Control
from asha_tune.sweep.disk import Reserve, is_no_space, stopped_for_space
from asha_tune.sweep.preflight import (
    check_address,
    check_cache_dir,
    check_data,
    check_local_resources,
    check_results_dir,
    check_space,
    check_weights,
    fingerprint_text,
    folder_bytes,
    reserve_bytes,
    sweep_bytes,
)
from asha_tune.sweep.records import (
    SILENT,
    DriverAliveError,
    Reports,
    Rollback,
    SweepOutcome,
    archive,
    check_study_free,
    claim,
    close,
    created_study,
    existing_sweep_problem,
    experiment_of,
    has_finished,
    open_run,
)
from asha_tune.sweep.rehearsal import rehearsal_summary
from asha_tune.sweep.session import (
    RayInfo,
    cluster_address,
    is_local,
    ray_session,
    resolve_address,
    say,
    wait_for_a_fitting_node,
)
from asha_tune.sweep.settings import SWEEP_FILE, SweepSettings, command_tail
from asha_tune.sweep.study import StudyHandle, check_study_url, create_study
from asha_tune.sweep.tuner import new_tuner, restored_tuner
from asha_tune.sweep.warm_start import check_warm_start, warm_start_from
from asha_tune.sweep.watch import watching
from asha_tune.sweep.writer import end_writer
from asha_tune.tracking import Tracker
from asha_tune.tracking.client import check_store
from asha_tune.tracking.records import sweep_parents, sweep_trials
from asha_tune.tracking.tags import (
    DATA_FINGERPRINT_TAG,
    RUNNING,
    WARM_START_ADDED_TAG,
    WARM_START_SKIPPED_TAG,
    WARM_START_TAG,
)

__all__ = ["catch_sigterm", "check_stores", "launch", "preflight", "resume", "sigterm_as_sigint"]


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


def check_stores(settings: SweepSettings) -> None:
    """Every folder and store the sweep writes can be written, before anything is created in any
    of them: Tune's folder, the MLflow store, the studies' database, and (on this machine) the
    decode cache. A full disk under --results-dir is check_space's (exit 4)."""
    check_results_dir(settings.results_dir)
    check_store(settings.tracking_uri)
    check_study_url(settings.study_url)
    if is_local(settings):
        check_cache_dir(settings.runtime)


def preflight(settings: SweepSettings) -> dict[str, str]:
    """What can be checked before anything is written or started (exit 2 on a problem; 4 when
    --results-dir has too little space). Returns each domain's fingerprint, as found (none for a
    rehearsal)."""
    check_stores(settings)
    fingerprints: dict[str, str] = {}
    rehearsal = settings.rehearse is not None  # its trials read no data, load no weights, and
    if not rehearsal:  # their checkpoints are a few bytes each
        for note in check_data(settings.space, settings.runtime, fingerprints):
            say(note)
    address = cluster_address(settings)
    if address is not None:
        check_address(str(resolve_address(address)))
    else:
        check_local_resources(settings.space, settings.runtime.device, settings.num_cpus, settings.num_gpus)
        if not rehearsal:
            check_weights(settings.space)
    if not rehearsal:
        check_space(settings.results_dir, settings.space, held=folder_bytes(settings.sweep_dir))
    return fingerprints


def check_warm_start_source(settings: SweepSettings) -> None:
    """--warm-start SWEEP: a source this sweep can take trials from, and one the store holds."""
    if settings.warm_start:
        check_warm_start(settings.space, settings.name, settings.warm_start)
        sweep_parents(Tracker(settings.tracking_uri), settings.warm_start)  # with results, or one line


def _user_error(err: BaseException) -> AshaTuneError | None:
    """An AshaTuneError that Tune wrapped (raised in a callback or the searcher), if any."""
    return next((e for e in chain(err) if isinstance(e, AshaTuneError)), None)


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
    reports: Reports,
    takeover: bool = False,
) -> SweepOutcome:
    """Start Ray, run the tuner, and close the records however it ends."""
    reserve = Reserve(settings.sweep_dir, reserve_bytes(settings.space))
    control = Control(settings)  # asha-tune status and stop, from anywhere (control.py)
    try:
        with ray_session(settings) as info:
            catch_sigterm()  # ray.init installed its own handler
            claim(settings, tracker, takeover)
            control.start()
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
            reason = first_line(err)
            close(settings, tracker, experiment_id, failure=reason)
            raise AshaTuneError(f"the sweep stopped: {reason}") from None
        close(settings, tracker, experiment_id, failure=str(user))
        raise _with_resume_hint(user, settings) from None
    finally:
        end_writer(settings.run_id)
        control.stop()
        reserve.release()
    if (free := stopped_for_space(settings.sweep_dir)) is not None:
        full = _no_space(settings, free)
        close(settings, tracker, experiment_id, failure=str(full))
        raise _with_resume_hint(full, settings)
    return _conclude(close(settings, tracker, experiment_id), reports)


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


def _conclude(outcome: SweepOutcome, reports: Reports) -> SweepOutcome:
    """What the sweep says once its records are closed: its answer (the best line of `reports`) and the best
    trial's weights, whether it finished, where to look at it."""
    from asha_tune.sweep.checkpoints import kept_checkpoint  # imports Ray

    settings = outcome.settings
    if settings.rehearse is not None:
        say(rehearsal_summary(outcome.trials, settings.space))
    elif not settings.is_confirmation:  # a confirmation prints its own report (asha_tune.api.confirm)
        if reports.best is not None:
            say(reports.best(outcome))
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


# --- launch, resume ----------------------------------------------------------------------------


def launch(settings: SweepSettings, restart: bool = False, reports: Reports = SILENT) -> SweepOutcome:
    """Start a new sweep: check it can run and that every store can be written, create its study,
    MLflow parent run and sweep.json (removed again if a step fails before it runs), run it on
    Ray. A name already taken is refused, or started over (`restart`: the old attempt is archived)."""
    with sigterm_as_sigint():
        exists = (settings.sweep_dir / SWEEP_FILE).exists()
        if exists and not restart:
            raise ConfigError(existing_sweep_problem(settings))
        fingerprints = preflight(settings)  # every store first: nothing below is created where it cannot be
        check_warm_start_source(settings)
        if exists:
            archive(settings)
        else:
            check_study_free(settings, restart)
        tracker, experiment_id = experiment_of(settings)
        with Rollback() as undo:  # a step that fails removes what the launch created
            rehearsal = settings.rehearse is not None
            create_study(settings.study_url, settings.name, settings.space, rehearsal=rehearsal)
            created_study(settings, undo)
            data = {DATA_FINGERPRINT_TAG: fingerprint_text(fingerprints)} if fingerprints else {}
            open_run(settings, tracker, experiment_id, data, undo)
            if settings.warm_start:
                _warm_start(settings, tracker)
        handle = StudyHandle(settings.study_url, settings.name, settings.space)
        make_tuner = lambda: new_tuner(settings, handle, experiment_id)  # noqa: E731
        return _run(settings, tracker, experiment_id, make_tuner, reports)


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


def resume(settings: SweepSettings, reports: Reports = SILENT) -> SweepOutcome:
    """Continue an unfinished sweep as resume_policy.py says: same study, same parent run, its
    unfinished trials from their checkpoints; a finished one only reports.

    `settings` may carry new runtime options (data root, cache, device); they are saved."""
    tracker, experiment_id = experiment_of(settings)
    trials = sweep_trials(tracker, experiment_id, settings.run_id)
    if has_finished(trials, settings.space.num_trials):
        say(f"sweep {settings.name} has finished ({count(len(trials), 'trial')}): nothing to resume")
        # Its records end the parent run as they say (a driver killed after the last trial left it
        # interrupted), with the summary tags older sweeps lack.
        return _conclude(close(settings, tracker, experiment_id), reports)
    with sigterm_as_sigint():
        preflight(settings)
        running = tracker.status(settings.run_id) == RUNNING  # its driver was lost, or still runs
        settings.save()
        handle = StudyHandle(settings.study_url, settings.name, settings.space)
        handle.unpark()
        tracker.reopen(settings.run_id)
        say("resuming: finished trials are kept, unfinished ones continue from their checkpoints")
        return _run(
            settings,
            tracker,
            experiment_id,
            lambda: restored_tuner(settings, handle, experiment_id),
            reports,
            takeover=running,
        )
