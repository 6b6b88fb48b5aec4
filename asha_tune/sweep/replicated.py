"""Replicated searches (`--replicates R`, `search.replicates`): R independent runs of a whole search.

The winner of one search is one draw of a random variable (the sampler's seed, the trials', the
split's), so a replicated search runs the search R times and reports the spread.

- NAME is the replicated search: a parent run in MLflow, with no trials of its own, and a
  sweep.json that holds its space (search.replicates R) and runtime.
- Replicate r is the sweep NAME.r<r>: the same space with its own seeds (`replicate_seeds`:
  sampler, trial and, for the protocols that hold images out, split; replicate 0 keeps the
  space's own, and adding a replicate changes none of the others) and search.replicates 1,
  nested under NAME's parent run. It is a sweep like any other (single.py): its own study, Tune
  folder, checkpoints and `asha-tune resume NAME.r<r>`. A list space (the paper grid) replicates
  over trial seeds: its configurations are enqueued, not sampled.
- The replicates run one after another in one Ray session. `asha-tune resume NAME` continues
  the unfinished ones in order and launches those never started; a finished one is kept.
- At the end, NAME's report (`Reports.search`: asha_tune.api renders it with
  analysis/answers.py: per target, the winners' reported accuracy as mean ± SE over
  replicates, which configurations won, each replicate's budget, the selection gap) is printed
  and logged on its parent run (replicates.txt, replicates.json, metrics replicated_acc_<target>).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from asha_tune.display import count
from asha_tune.errors import AshaTuneError, ConfigError
from asha_tune.spaces import SearchSpace
from asha_tune.sweep import single
from asha_tune.sweep.records import (
    SILENT,
    Reports,
    Rollback,
    SweepOutcome,
    archive,
    end_run,
    existing_sweep_problem,
    open_run,
)
from asha_tune.sweep.resume_policy import KEPT_REPLICATES
from asha_tune.sweep.session import held_ray_session, say
from asha_tune.sweep.settings import SWEEP_FILE, SweepSettings, command_tail
from asha_tune.tracking import Tracker
from asha_tune.tracking.records import TrialRecord, read_sweeps
from asha_tune.tracking.tags import (
    COMPLETED,
    KIND_TAG,
    REPLICATE_KIND,
    REPLICATE_OF_TAG,
    REPLICATE_SEEDS_TAG,
    REPLICATE_TAG,
    REPLICATES_TAG,
    WARM_START_TAG,
)

REPORT_FILE = "replicates.json"
REPORT_TEXT = "replicates.txt"
PURPOSES = ("sampler", "trial", "split")  # the random streams a replicate reseeds


# --- seeds ---------------------------------------------------------------------------------------


def replicate_seed(base: int, replicate: int, purpose: str) -> int:
    """The seed for `purpose` in replicate `replicate` of a search whose own seed is `base`.

    Replicate 0 keeps `base`, so one replicate is the sweep as it always ran. Replicate r >= 1
    takes sha256 of (base, r, purpose) modulo 2^31, as DomainBed's seed_hash: it depends on
    nothing else, so adding replicates never changes earlier ones, and the sampler, the trials
    and the split of one replicate are seeded independently of each other.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}: choose one of {', '.join(PURPOSES)}")
    if replicate < 0:
        raise ValueError(f"replicate {replicate}: replicates are numbered from 0")
    if replicate == 0:
        return base
    digest = hashlib.sha256(f"asha-tune replicate\0{base}\0{replicate}\0{purpose}".encode()).hexdigest()
    return int(digest, 16) % 2**31


@dataclass(frozen=True)
class ReplicateSeeds:
    replicate: int
    sampler: int  # search.seed
    trial: int  # train.seed (a list space replicates over this one)
    split: int  # selection.split_seed (source_val, target_val)


def replicate_seeds(replicate: int, sampler: int, trial: int, split: int) -> ReplicateSeeds:
    """All three seeds of one replicate, from the space's own seeds."""
    return ReplicateSeeds(
        replicate,
        replicate_seed(sampler, replicate, "sampler"),
        replicate_seed(trial, replicate, "trial"),
        replicate_seed(split, replicate, "split"),
    )


# --- a replicate ---------------------------------------------------------------------------------


def replicate_name(name: str, replicate: int) -> str:
    return f"{name}.r{replicate}"


def seeds_of(space: SearchSpace, replicate: int) -> ReplicateSeeds:
    return replicate_seeds(replicate, space.search.seed, space.train.seed, space.selection.split_seed)


def seeds_text(space: SearchSpace, seeds: ReplicateSeeds) -> str:
    """`sampler 0, trial 0, split 0`: the seeds a replicate runs with (split only where used)."""
    parts = [f"trial {seeds.trial}"]
    if space.search.algorithm not in ("grid", "list"):
        parts.insert(0, f"sampler {seeds.sampler}")
    if space.selection.info.holds_out:
        parts.append(f"split {seeds.split}")
    return ", ".join(parts)


def replicate_space(space: SearchSpace, replicate: int) -> SearchSpace:
    """The space of one replicate: its own sampler, trial and split seeds, and one replicate."""
    seeds = seeds_of(space, replicate)
    tree = space.model_dump(mode="json")
    tree["search"].update(seed=seeds.sampler, replicates=1)
    tree["train"]["seed"] = seeds.trial
    if space.selection.info.holds_out:  # oracle holds nothing out: no split to reseed
        tree["selection"]["split_seed"] = seeds.split
    return SearchSpace.model_validate(tree)


def replicate_settings(search: SweepSettings, replicate: int) -> SweepSettings:
    """A new replicate of `search` (launched, so its parent run exists): its stores, cluster and
    runtime, nested under the search's parent run, tagged with its number and seeds."""
    space = replicate_space(search.space, replicate)
    return search.model_copy(
        update={
            "name": replicate_name(search.name, replicate),
            "space": space,
            "parent_run_id": None,
            "nested_under": search.run_id,
            "replicate": replicate,
            "replicate_of": search.name,
            "run_tags": {
                KIND_TAG: REPLICATE_KIND,
                REPLICATE_TAG: str(replicate),
                REPLICATE_OF_TAG: search.name,
                REPLICATE_SEEDS_TAG: seeds_text(search.space, seeds_of(search.space, replicate)),
            },
        }
    )


def existing(search: SweepSettings, replicate: int) -> SweepSettings | None:
    """A replicate launched before, with the search's current runtime (as `resume` takes it)."""
    name = replicate_name(search.name, replicate)
    if not (search.results_dir / name / SWEEP_FILE).is_file():
        return None
    saved = SweepSettings.load(name, search.results_dir)
    if saved.nested_under != search.parent_run_id:
        raise ConfigError(
            f"replicate {name} belongs to another run of {search.name} (started over with --restart): "
            f"move or delete {saved.sweep_dir}"
        )
    return saved.with_runtime_of(search)


def _replicates_taken(settings: SweepSettings) -> list[str]:
    r = settings.space.search.replicates
    return [
        replicate_name(settings.name, i)
        for i in range(r)
        if (settings.results_dir / replicate_name(settings.name, i) / SWEEP_FILE).exists()
    ]


# --- launch and resume -------------------------------------------------------------------------------


def launch(settings: SweepSettings, restart: bool = False, reports: Reports = SILENT) -> SweepOutcome:
    """Start a replicated search: check it can run, create its parent run, run its replicates."""
    with single.sigterm_as_sigint():
        exists = (settings.sweep_dir / SWEEP_FILE).exists()
        if exists and not restart:
            raise ConfigError(existing_sweep_problem(settings))
        taken = [] if exists else _replicates_taken(settings)
        if taken:
            raise ConfigError(
                f"sweep {taken[0]} already exists, but no replicated search {settings.name}: choose another "
                f"--name, or move {settings.results_dir / taken[0]}"
            )
        single.preflight(settings)  # every store first: nothing below is created where it cannot be
        single.check_warm_start_source(settings)
        if exists:
            archive(settings)
        space = settings.space
        tracker = Tracker(settings.tracking_uri)
        tags = {
            REPLICATES_TAG: str(space.search.replicates),
            **({WARM_START_TAG: settings.warm_start} if settings.warm_start else {}),
        }
        with Rollback() as undo:  # a step that fails removes what the launch created
            open_run(settings, tracker, tracker.experiment(space.name), tags, undo)
        names = ", ".join(replicate_name(settings.name, r) for r in range(space.search.replicates))
        say(
            f"replicated search {settings.name}: {count(space.search.replicates, 'replicate')} of space "
            f"{space.name} ({names}), one after another, each with its own seeds"
        )
        return _run_replicates(settings, tracker, reports)


def resume(settings: SweepSettings, reports: Reports = SILENT) -> SweepOutcome:
    """Continue a replicated search as resume_policy.py says: ended replicates are kept, an
    unfinished one continues, the ones never started are launched; a finished search only reports."""
    tracker = Tracker(settings.tracking_uri)
    if not _pending(settings, tracker):
        say(f"replicated search {settings.name} has finished: nothing to resume")
        return _conclude(settings, tracker, reports, finished=True)
    with single.sigterm_as_sigint():
        single.preflight(settings)
        settings.save()
        tracker.reopen(settings.run_id)
        return _run_replicates(settings, tracker, reports)


def _ended(tracker: Tracker, saved: SweepSettings | None) -> bool | None:
    """Whether a replicate is one `resume` keeps as it is (resume_policy); None: never launched."""
    if saved is None or saved.parent_run_id is None:
        return None
    return tracker.status(saved.parent_run_id) in KEPT_REPLICATES


def _pending(settings: SweepSettings, tracker: Tracker) -> list[int]:
    """The replicates still to run: never launched, or launched and not ended."""
    return [r for r in range(settings.space.search.replicates) if not _ended(tracker, existing(settings, r))]


def _run_replicates(settings: SweepSettings, tracker: Tracker, reports: Reports) -> SweepOutcome:
    """Each pending replicate in order, in one Ray session; stop at the first that does not finish."""
    finished = True
    try:
        with held_ray_session(settings):
            for r in range(settings.space.search.replicates):
                single.catch_sigterm()  # between replicates too (ray.init installed its own handler)
                saved = existing(settings, r)
                ended = _ended(tracker, saved)
                if ended:
                    continue
                if saved is not None and ended is not None:
                    say(f"replicate {r} of {settings.name}: continuing {saved.name}")
                    outcome = single.resume(saved, reports)
                else:
                    fresh = replicate_settings(settings, r)
                    seeds = fresh.run_tags[REPLICATE_SEEDS_TAG]
                    say(f"replicate {r} of {settings.name}: {fresh.name} (seeds: {seeds})")
                    outcome = single.launch(fresh, restart=saved is not None, reports=reports)
                if not outcome.finished:
                    finished = False
                    break
    except KeyboardInterrupt:
        finished = False
    except AshaTuneError as err:
        _conclude(settings, tracker, reports, finished=False, failure=str(err))
        raise
    return _conclude(settings, tracker, reports, finished)


def _conclude(
    settings: SweepSettings, tracker: Tracker, reports: Reports, finished: bool, failure: str | None = None
) -> SweepOutcome:
    """Read the replicates back, print and log the search's report, end its parent run."""
    sweeps = read_sweeps(tracker, settings.name)
    trials: list[TrialRecord] = [t.record for s in sweeps for t in s.trials]
    run_id = settings.run_id
    if not sweeps:
        text = f"replicated search {settings.name}: no replicate ran"
        say(text)
        tracker.log_text(run_id, text + "\n", REPORT_TEXT)
    elif reports.search is not None:
        report = reports.search(settings.name, sweeps)
        say(report.text)
        tracker.log_text(run_id, report.text + "\n", REPORT_TEXT)
        tracker.log_dict(run_id, report.record, REPORT_FILE)
        if report.metrics:
            tracker.log_metrics(run_id, report.metrics, step=0)
    status = end_run(tracker, run_id, trials, finished, failure)
    if failure is None and not finished:
        say(
            f"the replicated search did not finish; continue it with: asha-tune resume {settings.name}"
            f"{command_tail(settings)}"
        )
    elif status == COMPLETED:
        say(f"compare it with others: asha-tune compare {settings.name} OTHER{command_tail(settings)}")
    return SweepOutcome(settings, trials, None, finished and failure is None)
