"""Replicated searches (`--replicates R`, `search.replicates`): R independent runs of a whole search.

The winner of one search is one draw of a random variable (the sampler's seed, the trials', the
split's), so a replicated search runs the search R times and reports the spread.

- NAME is the replicated search: a parent run in MLflow, with no trials of its own, and a
  sweep.json that holds its space (search.replicates R) and runtime.
- Replicate r is the sweep NAME.r<r>: the same space with its own seeds
  (analysis.replicates.replicate_seeds: sampler, trial and, for the protocols that hold images
  out, split; replicate 0 keeps the space's own, and adding a replicate changes none of the
  others) and search.replicates 1, nested under NAME's parent run. It is a sweep like any other:
  its own study, Tune folder, checkpoints and `asha-tune resume NAME.r<r>`. A list space (the
  paper grid) replicates over trial seeds: its configurations are enqueued, not sampled.
- The replicates run one after another in one Ray session. `asha-tune resume NAME` continues
  the unfinished ones in order and launches those never started; a finished one is kept.
- At the end, NAME's report (analysis/replicated.py: per target, the winners' reported accuracy
  as mean ± SE over replicates, which configurations won, each replicate's budget, the selection
  gap) is printed and logged on its parent run (replicates.txt, replicates.json, metrics
  replicated_acc_<target>).
"""

from __future__ import annotations

from asha_tune.analysis.compare import find_parent, read_sweeps
from asha_tune.analysis.replicated import report, report_text, results, targets_of
from asha_tune.analysis.replicates import ReplicateSeeds, replicate_seeds
from asha_tune.display import count
from asha_tune.errors import AshaTuneError, ConfigError
from asha_tune.spaces import SearchSpace
from asha_tune.sweep.lifecycle import (
    SweepOutcome,
    catch_sigterm,
    command_tail,
    existing_sweep_problem,
    launch,
    preflight,
    resume,
    say,
    sigterm_as_sigint,
)
from asha_tune.sweep.session import held_ray_session
from asha_tune.sweep.settings import SWEEP_FILE, SweepSettings
from asha_tune.sweep.warm_start import check_warm_start
from asha_tune.tracking import Tracker
from asha_tune.tracking.client import version_tags
from asha_tune.tracking.records import TrialRecord
from asha_tune.tracking.tags import (
    COMPLETED,
    FAILED,
    FAILURE_TAG,
    INTERRUPTED,
    KIND_TAG,
    REHEARSAL_TAG,
    REPLICATE_KIND,
    REPLICATE_OF_TAG,
    REPLICATE_SEEDS_TAG,
    REPLICATE_TAG,
    REPLICATES_TAG,
    RESULTS_DIR_TAG,
    SPACE_TAG,
    STUDY_URL_TAG,
    SWEEP_TAG,
    TRIALS_TAG,
    WARM_START_TAG,
)
from asha_tune.tracking.trials import selection_tags

REPORT_FILE = "replicates.json"
REPORT_TEXT = "replicates.txt"


def replicate_name(name: str, replicate: int) -> str:
    return f"{name}.r{replicate}"


def seeds_of(space: SearchSpace, replicate: int) -> ReplicateSeeds:
    return replicate_seeds(replicate, space.search.seed, space.train.seed, space.selection.split_seed)


def seeds_text(space: SearchSpace, seeds: ReplicateSeeds) -> str:
    """`sampler 0, trial 0, split 0`: the seeds a replicate runs with (split only where used)."""
    parts = [f"trial {seeds.trial}"]
    if space.search.algorithm not in ("grid", "list"):
        parts.insert(0, f"sampler {seeds.sampler}")
    if space.selection.protocol != "oracle":
        parts.append(f"split {seeds.split}")
    return ", ".join(parts)


def replicate_space(space: SearchSpace, replicate: int) -> SearchSpace:
    """The space of one replicate: its own sampler, trial and split seeds, and one replicate."""
    seeds = seeds_of(space, replicate)
    tree = space.model_dump(mode="json")
    tree["search"].update(seed=seeds.sampler, replicates=1)
    tree["train"]["seed"] = seeds.trial
    if space.selection.protocol != "oracle":  # oracle holds nothing out: no split to reseed
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


def _existing(search: SweepSettings, replicate: int) -> SweepSettings | None:
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
    runtime = ("runtime", "address", "num_cpus", "num_gpus", "resource_wait_s")
    return saved.model_copy(update={k: getattr(search, k) for k in runtime})


def _replicates_taken(settings: SweepSettings) -> list[str]:
    r = settings.space.search.replicates
    return [
        replicate_name(settings.name, i)
        for i in range(r)
        if (settings.results_dir / replicate_name(settings.name, i) / SWEEP_FILE).exists()
    ]


# --- launch and resume -------------------------------------------------------------------------------


def launch_replicated(settings: SweepSettings, restart: bool = False) -> SweepOutcome:
    """Start a replicated search: check it can run, create its parent run, run its replicates."""
    from asha_tune.sweep.lifecycle import archive

    with sigterm_as_sigint():
        exists = (settings.sweep_dir / SWEEP_FILE).exists()
        if exists and not restart:
            raise ConfigError(existing_sweep_problem(settings))
        taken = [] if exists else _replicates_taken(settings)
        if taken:
            raise ConfigError(
                f"sweep {taken[0]} already exists, but no replicated search {settings.name}: choose another "
                f"--name, or move {settings.results_dir / taken[0]}"
            )
        if settings.warm_start:
            check_warm_start(settings.space, settings.name, settings.warm_start)
            find_parent(Tracker(settings.tracking_uri), settings.warm_start)
        preflight(settings)
        if exists:
            archive(settings)
        space = settings.space
        tracker = Tracker(settings.tracking_uri)
        experiment_id = tracker.experiment(space.name)
        settings.parent_run_id = tracker.start_run(
            experiment_id,
            name=settings.name,
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
                REPLICATES_TAG: str(space.search.replicates),
                RESULTS_DIR_TAG: str(settings.sweep_dir),
                STUDY_URL_TAG: settings.study_url,
                **selection_tags(
                    space.selection.protocol,
                    ", ".join(space.data.sources),
                    list(space.data.target_domains or ()),
                    space.scheduler.metric,
                    space.scheduler.mode,
                ),
                **({WARM_START_TAG: settings.warm_start} if settings.warm_start else {}),
                **({REHEARSAL_TAG: "true"} if settings.rehearse else {}),
            },
        )
        tracker.log_dict(settings.parent_run_id, space.model_dump(mode="json"), "space.json")
        settings.save()
        names = ", ".join(replicate_name(settings.name, r) for r in range(space.search.replicates))
        say(
            f"replicated search {settings.name}: {count(space.search.replicates, 'replicate')} of space "
            f"{space.name} ({names}), one after another, each with its own seeds"
        )
        return _run_replicates(settings, tracker)


def resume_replicated(settings: SweepSettings) -> SweepOutcome:
    """Continue a replicated search: finished replicates are kept, an unfinished one continues, the
    ones never started are launched; a finished search only reports."""
    tracker = Tracker(settings.tracking_uri)
    if not _pending(settings, tracker):
        say(f"replicated search {settings.name} has finished: nothing to resume")
        return _conclude(settings, tracker, finished=True)
    with sigterm_as_sigint():
        preflight(settings)
        settings.save()
        tracker.reopen(settings.run_id)
        return _run_replicates(settings, tracker)


def _pending(settings: SweepSettings, tracker: Tracker) -> list[int]:
    """The replicates still to run: never launched, or launched and not ended."""
    pending = []
    for r in range(settings.space.search.replicates):
        saved = _existing(settings, r)
        if saved is None or saved.parent_run_id is None:
            pending.append(r)
        elif tracker.status(saved.parent_run_id) not in (COMPLETED, FAILED):
            pending.append(r)
    return pending


def _run_replicates(settings: SweepSettings, tracker: Tracker) -> SweepOutcome:
    """Each pending replicate in order, in one Ray session; stop at the first that does not finish."""
    finished = True
    try:
        with held_ray_session(settings):
            for r in range(settings.space.search.replicates):
                catch_sigterm()  # between replicates too (ray.init installed its own handler)
                saved = _existing(settings, r)
                if saved is not None and saved.parent_run_id is not None:
                    if tracker.status(saved.parent_run_id) in (COMPLETED, FAILED):
                        continue
                    say(f"replicate {r} of {settings.name}: continuing {saved.name}")
                    outcome = resume(saved)
                else:
                    fresh = replicate_settings(settings, r)
                    seeds = fresh.run_tags[REPLICATE_SEEDS_TAG]
                    say(f"replicate {r} of {settings.name}: {fresh.name} (seeds: {seeds})")
                    outcome = launch(fresh, restart=saved is not None)
                if not outcome.finished:
                    finished = False
                    break
    except KeyboardInterrupt:
        finished = False
    except AshaTuneError as err:
        _conclude(settings, tracker, finished=False, failure=str(err))
        raise
    return _conclude(settings, tracker, finished)


def _conclude(
    settings: SweepSettings, tracker: Tracker, finished: bool, failure: str | None = None
) -> SweepOutcome:
    """Read the replicates back, print and log the search's report, end its parent run."""
    sweeps = read_sweeps(tracker, settings.name)
    trials: list[TrialRecord] = [t.record for s in sweeps for t in s.trials]
    text = (
        report_text(settings.name, sweeps)
        if sweeps
        else f"replicated search {settings.name}: no replicate ran"
    )
    say(text)
    run_id = settings.run_id
    tracker.log_text(run_id, text + "\n", REPORT_TEXT)
    if sweeps:
        tracker.log_dict(run_id, report(settings.name, sweeps), REPORT_FILE)
        metrics = {}
        for r in results(sweeps, targets_of(sweeps)):
            metrics[f"replicated_acc_{r.target}"] = r.accuracy.mean
            if r.accuracy.n > 1:
                metrics[f"replicated_acc_{r.target}_se"] = r.accuracy.se
        if metrics:
            tracker.log_metrics(run_id, metrics, step=0)
    tags = {TRIALS_TAG: len(trials)}
    if failure is not None:
        tracker.finish(run_id, INTERRUPTED, {**tags, FAILURE_TAG: failure[:2000]})
    elif not finished:
        tracker.finish(run_id, INTERRUPTED, tags)
        say(
            f"the replicated search did not finish; continue it with: asha-tune resume {settings.name}"
            f"{command_tail(settings)}"
        )
    elif trials and all(t.status == FAILED for t in trials):
        tracker.finish(run_id, FAILED, {**tags, FAILURE_TAG: f"all {count(len(trials), 'trial')} failed"})
    else:
        tracker.finish(run_id, COMPLETED, tags)
        say(f"compare it with others: asha-tune compare {settings.name} OTHER{command_tail(settings)}")
    return SweepOutcome(settings, trials, None, finished and failure is None)
