"""`asha-tune extend NAME --trials N`: a sweep that ended (or was interrupted) goes on with N more
trials in the same Optuna study (its sampler sees every earlier trial), under the same MLflow
parent run, with the same ASHA rungs (ResumableASHA replays the study's history).

An extension is a change of the sweep's saved settings, then a resume: `prepare` grows the saved
space's `search.num_trials` by N, records the extension (SweepSettings.extensions: the study's
number of its first new trial, so that its trial runs are tagged EXTENSION_TAG), sets the
parent run back to interrupted, and shelves Tune's snapshot of the earlier run (its trials have
ended in the records, and its searcher would stop at the old count), so that the resume starts
Tune afresh on the same study and folder. From there it is a sweep like any other: a driver
killed during the extension is continued by `asha-tune resume NAME`, each trial once. A
replicated search extends each of its replicates the same way (replicates never launched get the
grown space anyway).

An unfinished sweep (interrupted, or running with its driver gone) is resumed first, so that its
unfinished trials go on from their checkpoints in Tune's snapshot, before it is set aside.

The space is the one saved in sweep.json at launch: `extend` reads no space file, so a file
changed since cannot change what the sweep searches (a new sweep with `--warm-start NAME` can).
"""

from __future__ import annotations

import json
from pathlib import Path

from asha_tune.display import count
from asha_tune.errors import ConfigError
from asha_tune.spaces import SearchSpace
from asha_tune.sweep import replicated, single
from asha_tune.sweep.control import driver_seen
from asha_tune.sweep.records import SILENT, Reports, SweepOutcome
from asha_tune.sweep.session import say
from asha_tune.sweep.settings import Extension, SweepSettings, command_tail
from asha_tune.sweep.study import WARM_START_ATTR, StudyHandle
from asha_tune.sweep.tuner import EXPERIMENT_STATE, TUNER_FILE
from asha_tune.tracking import Tracker
from asha_tune.tracking.tags import (
    DRIVER_TAG,
    EXTENSIONS_TAG,
    HEARTBEAT_TAG,
    INTERRUPTED,
    RUNNING,
    SPACE_ARTIFACT,
    STATUS_TAG,
)

__all__ = ["check_extendable", "extend", "grown_space", "prepare", "shelve_snapshot"]

# Tune's snapshot of a run in the sweep's folder: what `Tuner.restore` reads.
SNAPSHOT = (
    TUNER_FILE,
    EXPERIMENT_STATE,
    "search_gen_state-*.json",
    "searcher-state-*.pkl",
    "basic-variant-state-*.json",
)
FIXED = ("grid", "list")  # their configurations are fixed at launch


def check_extendable(settings: SweepSettings, trials: int) -> None:
    """A sweep `extend` can grow, or one line saying why not (exit 2)."""
    name = settings.name
    if trials < 1:
        raise ConfigError(f"--trials {trials}: extend adds at least 1 trial")
    if settings.is_confirmation:
        raise ConfigError(f"{name} is a confirmation (its configurations are fixed): it cannot be extended")
    if settings.replicate_of:
        raise ConfigError(
            f"{name} is a replicate of {settings.replicate_of}: extend the replicated search "
            f"(asha-tune extend {settings.replicate_of} --trials {trials}), which extends every replicate"
        )
    algorithm = settings.space.search.algorithm
    if algorithm in FIXED:
        raise ConfigError(
            f"sweep {name} runs a {algorithm} space: its {count(settings.space.num_trials, 'configuration')} "
            f"are fixed, so it cannot be extended; launch a new sweep of another space (--warm-start {name} "
            "gives it these trials)"
        )


def driver_problem(tracker: Tracker, run_id: str, name: str, tail: str) -> str | None:
    """Why a sweep recorded as running cannot be extended now (its driver is alive, or cannot be
    told gone), or None."""
    tags = tracker.tags(run_id)
    if tags.get(STATUS_TAG) != RUNNING:
        return None
    seen = driver_seen(_json(tags.get(DRIVER_TAG)), _json(tags.get(HEARTBEAT_TAG)))
    if seen.alive is False:
        return None  # killed: the extension's resume continues it
    return (
        f"sweep {name} is running (its driver: {seen.text}): extend it once it has ended "
        f"(asha-tune stop {name}{tail} ends it; asha-tune resume {name}{tail} takes over a lost driver)"
    )


def _json(text: str | None) -> dict[str, object] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def grown_space(space: SearchSpace, trials: int) -> SearchSpace:
    """The same space asking for `trials` more trials (validated: a total past the maximum is one line)."""
    tree = space.model_dump(mode="json")
    tree["search"]["num_trials"] = space.num_trials + trials
    try:
        return SearchSpace.model_validate(tree)
    except ValueError as err:
        raise ConfigError(f"--trials {trials}: {str(err).splitlines()[-1].strip()}") from None


def shelve_snapshot(sweep_dir: Path, extension: int) -> Path | None:
    """Move Tune's snapshot of the earlier run aside (kept, never read again), so that the next
    resume starts Tune afresh; None when there was none."""
    files = [f for pattern in SNAPSHOT for f in sweep_dir.glob(pattern) if f.is_file()]
    if not files:
        return None
    shelf = sweep_dir / f"tune-before-extension-{extension}"
    shelf.mkdir(exist_ok=True)
    for f in files:
        f.replace(shelf / f.name)
    return shelf


def first_new_trial(settings: SweepSettings) -> int:
    """The number the extension's first trial will get: past every trial in the study (a warm
    start's included) and past those the sweep has still to ask. An interrupted sweep may have
    asked fewer than its count: its remaining trials are its own, not the extension's."""
    trials = StudyHandle(settings.study_url, settings.name, settings.space).study.get_trials(deepcopy=False)
    own = sum(WARM_START_ATTR not in t.user_attrs for t in trials)
    return len(trials) + max(settings.space.num_trials - own, 0)


def prepare(settings: SweepSettings, trials: int, tracker: Tracker) -> SweepSettings:
    """Record one extension of a single sweep (checked, not running); what `resume` then runs.

    In an order a crash cannot make wrong: Tune's old snapshot aside first (a resume then starts
    Tune afresh, at worst on the old count: nothing to do), then the records that say the sweep
    is unfinished, then sweep.json with the grown space."""
    first = first_new_trial(settings)
    extensions = [*settings.extensions, Extension(trials=trials, first_trial=first)]
    space = grown_space(settings.space, trials)
    grown = settings.model_copy(update={"space": space, "extensions": extensions})
    shelve_snapshot(settings.sweep_dir, len(extensions))
    tracker.log_dict(settings.run_id, space.model_dump(mode="json"), SPACE_ARTIFACT)  # status's count
    tracker.finish(settings.run_id, INTERRUPTED, {EXTENSIONS_TAG: len(extensions)})
    grown.save()
    return grown


def check_driver(settings: SweepSettings, tracker: Tracker, runs: list[tuple[str, str]]) -> None:
    """Refuse while any of `runs` (run id, sweep name) is being run by a live driver."""
    tail = command_tail(settings)
    for run_id, name in runs:
        if problem := driver_problem(tracker, run_id, name, tail):
            raise ConfigError(problem)


def extend(settings: SweepSettings, trials: int, reports: Reports = SILENT) -> SweepOutcome:
    """Grow a sweep (or every replicate of a replicated search) by `trials`, and run them. An
    unfinished one is resumed first, so that its unfinished trials go on from their checkpoints
    (the extension starts Tune afresh: it would run them again from their first epoch)."""
    check_extendable(settings, trials)
    tracker = Tracker(settings.tracking_uri)
    search = settings.space.search.replicates > 1
    replicates = _launched(settings) if search else []
    check_driver(settings, tracker, [(s.run_id, s.name) for s in (settings, *replicates)])
    if tracker.tags(settings.run_id).get(STATUS_TAG) in (INTERRUPTED, RUNNING):  # RUNNING: its driver is gone
        say(
            f"{settings.name} is unfinished: resuming it first, then extending it by {count(trials, 'trial')}"
        )
        outcome = (replicated.resume if search else single.resume)(settings, reports)
        if not outcome.finished:
            say(f"the extension was not started: once {settings.name} has ended, run this extend again")
            return outcome
    if search:
        return _extend_search(settings, trials, tracker, reports)
    single.preflight(settings)  # refused before any record changes
    grown = prepare(settings, trials, tracker)
    first = grown.extensions[-1].first_trial
    say(
        f"extending sweep {settings.name} by {count(trials, 'trial')} (to {grown.space.num_trials}; "
        f"trial {first} on) in the same study, parent run and ASHA rungs, with the space saved at launch"
    )
    return single.resume(grown, reports)


def _launched(settings: SweepSettings) -> list[SweepSettings]:
    """A replicated search's replicates launched so far."""
    return [
        saved
        for r in range(settings.space.search.replicates)
        if (saved := replicated.existing(settings, r)) is not None and saved.parent_run_id is not None
    ]


def _extend_search(settings: SweepSettings, trials: int, tracker: Tracker, reports: Reports) -> SweepOutcome:
    """Every replicate launched so far grows by `trials`; those never launched get the grown space."""
    launched = _launched(settings)  # read again: a resume before may have launched more
    single.preflight(settings)
    for saved in launched:
        prepare(saved, trials, tracker)
    space = grown_space(settings.space, trials)
    done = int(tracker.tags(settings.run_id).get(EXTENSIONS_TAG, "0") or 0)
    tracker.log_dict(settings.run_id, space.model_dump(mode="json"), SPACE_ARTIFACT)
    tracker.finish(settings.run_id, INTERRUPTED, {EXTENSIONS_TAG: done + 1})
    grown = settings.model_copy(update={"space": space})
    grown.save()
    say(
        f"extending replicated search {settings.name}: each replicate by {count(trials, 'trial')} "
        f"(to {space.num_trials}), in its own study, parent run and ASHA rungs"
    )
    return replicated.resume(grown, reports)
