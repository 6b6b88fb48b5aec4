"""The records of a sweep: its MLflow parent run opened with its settings and space, claimed by the
driver that runs it, closed by what its trials say however the sweep ends (also by the head watch,
sweep/watch.py, once the Ray head is lost), and an earlier attempt kept under another name.

The single sweep (single.py), the replicated search (replicated.py) and the head watch share this
module and import none of each other through it. What a sweep says about its answer when it ends
is told by the layer above (`Reports`, given by asha_tune.api), so the sweep room imports no analysis.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from asha_tune import errors
from asha_tune.errors import ConfigError, first_line
from asha_tune.sweep.resume_policy import KEPT_TRIALS
from asha_tune.sweep.session import describe_driver, driver_alive, driver_identity, say
from asha_tune.sweep.settings import SWEEP_FILE, SweepSettings, command_tail
from asha_tune.sweep.study import StudyHandle, archive_study, delete_study, study_exists
from asha_tune.tracking import Tracker
from asha_tune.tracking.best import best_trial, summary
from asha_tune.tracking.client import version_tags
from asha_tune.tracking.records import (
    Sweep,
    TrialRecord,
    all_failed,
    all_failed_text,
    is_sweep,
    sweep_trials,
)
from asha_tune.tracking.tags import (
    COMPLETED,
    DRIVER_TAG,
    FAILED,
    FAILURE_TAG,
    INTERRUPTED,
    REHEARSAL_TAG,
    REPLICATE_OF_TAG,
    RESTARTED_AS_TAG,
    RESULTS_DIR_TAG,
    RUNNING,
    SELECTION_TAG,
    SPACE_ARTIFACT,
    SPACE_TAG,
    STUDY_URL_TAG,
    SWEEP_TAG,
    TRIALS_TAG,
)
from asha_tune.tracking.trials import selection_tags


@dataclass
class SweepOutcome:
    settings: SweepSettings
    trials: list[TrialRecord]
    best: TrialRecord | None
    finished: bool  # False when the driver was interrupted (resume to continue)


@dataclass(frozen=True)
class SearchReport:
    """A replicated search's report, printed and logged on its parent run."""

    text: str  # replicates.txt, and what is printed
    record: dict[str, Any]  # replicates.json
    metrics: dict[str, float] = field(default_factory=dict)  # replicated_acc_<target>(_se)


@dataclass(frozen=True)
class Reports:
    """What a sweep says about its answer once its records are closed, from those records: the
    facade's (asha_tune.api renders them with analysis/), handed down so that the sweep room
    imports no analysis. Left out, a sweep says nothing of its answer."""

    best: Callable[[SweepOutcome], str] | None = None  # a sweep's best trial, with its noise
    search: Callable[[str, list[Sweep]], SearchReport] | None = None  # a replicated search's report


SILENT = Reports()


class DriverAliveError(ConfigError):
    """Another driver runs the sweep now: nothing may be closed or changed."""


class Rollback:
    """What a launch has created so far (its study, its parent run, sweep.json), removed again,
    newest first, when a step fails before the sweep runs: a refused launch leaves nothing half
    made, and the same command, corrected, starts the sweep. Used as `with Rollback() as undo:`."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def add(self, what: str, undo: Callable[[], None]) -> None:
        self._steps.append((what, undo))

    def __enter__(self) -> Rollback:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if err is None:
            return
        for what, undo in reversed(self._steps):
            try:
                undo()
            except Exception as failure:  # the store that failed may refuse this too: say so
                print(f"{errors.program}: could not remove {what}: {first_line(failure)}", file=sys.stderr)


def _remove_saved(settings: SweepSettings, made_folder: bool) -> None:
    """sweep.json, and the sweep's folder where this launch made it (and left it empty)."""
    (settings.sweep_dir / SWEEP_FILE).unlink(missing_ok=True)
    if made_folder:
        with contextlib.suppress(OSError):
            settings.sweep_dir.rmdir()


def experiment_of(settings: SweepSettings) -> tuple[Tracker, str]:
    """The sweep's store and its experiment (the space's name)."""
    tracker = Tracker(settings.tracking_uri)
    return tracker, tracker.experiment(settings.space.name)


def open_run(
    settings: SweepSettings,
    tracker: Tracker,
    experiment_id: str,
    tags: dict[str, str],
    undo: Rollback | None = None,
) -> None:
    """The sweep's parent run, with its settings as params, the tags that say what it is (and
    `tags`), and its resolved space as an artifact; its id is saved with the settings. Each is
    added to `undo` as it is made, so a launch that fails later removes them."""
    space = settings.space
    made_folder = not settings.sweep_dir.exists()
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
            **tags,
            **settings.run_tags,
            **({REHEARSAL_TAG: "true"} if settings.rehearse else {}),
        },
    )
    if undo is not None:
        undo.add(f"the MLflow parent run {settings.parent_run_id}", _deleter(tracker, settings.parent_run_id))
        undo.add(f"{settings.sweep_dir / SWEEP_FILE}", lambda: _remove_saved(settings, made_folder))
    tracker.log_dict(settings.parent_run_id, space.model_dump(mode="json"), SPACE_ARTIFACT)
    settings.save()


def _deleter(tracker: Tracker, run_id: str) -> Callable[[], None]:
    return lambda: tracker.delete_run(run_id)


def created_study(settings: SweepSettings, undo: Rollback) -> None:
    """After the launch created its study: removed again if the launch fails before it runs."""
    undo.add(f"the Optuna study {settings.name}", lambda: delete_study(settings.study_url, settings.name))


def claim(settings: SweepSettings, tracker: Tracker, takeover: bool) -> None:
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


# --- closing -------------------------------------------------------------------------------------


def end_run(
    tracker: Tracker,
    run_id: str,
    trials: list[TrialRecord],
    finished: bool,
    failure: str | None = None,
    tags: dict[str, Any] | None = None,
) -> str:
    """End a parent run by what its trials say, and return the status it ended with: interrupted
    (a failure, or not finished: resume continues it), failed (every trial failed), else completed."""
    tags = {TRIALS_TAG: len(trials), **(tags or {})}
    if failure is not None:
        status, tags[FAILURE_TAG] = INTERRUPTED, failure[:2000]
    elif not finished:
        status = INTERRUPTED
    elif all_failed(trials):
        status, tags[FAILURE_TAG] = FAILED, all_failed_text(len(trials))
    else:
        status = COMPLETED
    tracker.finish(run_id, status, tags)
    return status


def has_finished(trials: list[TrialRecord], num_trials: int) -> bool:
    """A sweep has finished when it holds every trial of its space and each has ended: `resume`
    keeps every one of them (resume_policy), so nothing is left to run."""
    return len(trials) >= num_trials and all(t.status in KEPT_TRIALS for t in trials)


def close(
    settings: SweepSettings, tracker: Tracker, experiment_id: str, failure: str | None = None
) -> SweepOutcome:
    """Read the records back and end the parent run by what they say; an unfinished sweep's
    running trials become interrupted in MLflow and WAITING in Optuna (resume takes them back)."""
    space = settings.space
    trials = sweep_trials(tracker, experiment_id, settings.run_id)
    finished = failure is None and has_finished(trials, space.num_trials)
    if not finished:
        for record in trials:
            if record.status == RUNNING:
                tracker.finish(record.run_id, INTERRUPTED)
        StudyHandle(settings.study_url, settings.name, space).park_running()
    best = best_trial(trials, space.scheduler.metric, space.scheduler.mode)
    # A rehearsal's scores are made up: its parent run logs no best figures.
    summarized = _summarize(settings, tracker, trials) if settings.rehearse is None else {}
    end_run(tracker, settings.run_id, trials, finished, failure, summarized)
    return SweepOutcome(settings, trials, best, finished)


def _summarize(settings: SweepSettings, tracker: Tracker, trials: list[TrialRecord]) -> dict[str, str]:
    """Log the best trial's figures on the parent run (best_val_acc, best_val_acc_se,
    best_acc_cartoon, ...) and return its summary tags, so sweeps compare as rows in MLflow."""
    s = settings.space.scheduler
    metrics, tags = summary(trials, s.metric, s.mode)
    if metrics:
        tracker.log_metrics(settings.run_id, metrics, step=0)
    return {**tags, SELECTION_TAG: settings.space.selection.protocol} if tags else {}


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
        close(settings, Tracker(settings.tracking_uri), experiment_id, failure=f"lost {what}")
    except Exception as err:  # the tracking server gone as well: resume closes them
        message += f" (its records are not closed: {first_line(err)})"
    return message


# --- an earlier attempt --------------------------------------------------------------------------


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
    """NAME.attempt-K: the first K not taken in the results folder, nor by a study."""
    k = 1
    while (settings.results_dir / f"{settings.name}.attempt-{k}").exists() or study_exists(
        settings.study_url, f"{settings.name}.attempt-{k}"
    ):
        k += 1
    return f"{settings.name}.attempt-{k}"


def check_study_free(settings: SweepSettings, restart: bool) -> None:
    """A new sweep's study name is free: a study without a sweep of that name (left by a launch
    an older asha-tune refused half way, or by a sweep of another --results-dir sharing the study
    database) is refused, or kept under NAME.attempt-K with `restart`."""
    if not study_exists(settings.study_url, settings.name):
        return
    if not restart:
        raise ConfigError(
            f"a study named {settings.name} is in {settings.study_url}, but no sweep {settings.name} in "
            f"{settings.results_dir} (a launch refused half way, or a sweep of another --results-dir): "
            f"choose another --name, or start it over with --restart (that study is kept as "
            f"{settings.name}.attempt-K)"
        )
    archived = archived_name(settings)
    archive_study(settings.study_url, settings.name, archived)
    say(f"study {settings.name}: the earlier one is kept as {archived}")


def archive(settings: SweepSettings, as_name: str | None = None, family: str | None = None) -> str:
    """`launch --restart`: the old attempt's records move to NAME.attempt-K (Ray folder, Optuna
    study, MLflow parent run renamed), so nothing is lost and the name is free again. A replicated
    search's replicates move with it, to NAME.attempt-K.r<r> (`family`: that archived search)."""
    try:
        old = SweepSettings.load(settings.name, settings.results_dir)
    except ConfigError:  # a damaged sweep.json (settings.load said which and how)
        return _archive_damaged(settings)
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


def _archive_damaged(settings: SweepSettings) -> str:
    """`launch --restart` of a sweep whose sweep.json cannot be read: what can be found of it
    without it is kept as NAME.attempt-K: its folder, its replicates, its study in this launch's
    study database and its parent run in this launch's MLflow store."""
    name, results = settings.name, settings.results_dir
    archived = archived_name(settings)
    for folder in sorted(results.glob(f"{name}.r*")):
        suffix = folder.name.removeprefix(f"{name}.")
        if suffix[1:].isdigit() and (folder / SWEEP_FILE).is_file():
            with contextlib.suppress(ConfigError):  # a damaged replicate stays where it is
                archive(SweepSettings.load(folder.name, results), f"{archived}.{suffix}", family=archived)
    if study_exists(settings.study_url, name):
        archive_study(settings.study_url, name, archived)
    tracker = Tracker(settings.tracking_uri)
    for run in tracker.search_runs(tracker.experiment_ids(), f"tags.`{SWEEP_TAG}` = '{name}'"):
        if is_sweep(run):
            tracker.rename(run.info.run_id, archived)
            tracker.set_tags(run.info.run_id, {SWEEP_TAG: archived, RESTARTED_AS_TAG: name})
    settings.sweep_dir.rename(results / archived)
    say(f"sweep {name}: its sweep.json is damaged; what was found of it is kept as {archived}")
    return archived
