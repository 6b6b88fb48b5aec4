"""The Python API, and what the `asha-tune` command calls: launch, resume and confirm a sweep.

A thin facade (Ray's `Tuner` over `TunerInternal`): it picks the run, a single sweep
(sweep/single.py) or a replicated search (sweep/replicated.py), and hands it the reports it gives
at its end, rendered from its records by analysis/ (`REPORTS`), so that the sweep room and the
analysis room import neither the other.

What `resume` re-runs, by the state of each trial, sweep and replicate when the driver stopped
(sweep/resume_policy.py is the one statement; docs/sweeps.md shows the same table):

| what | its state when the driver stopped | what `resume` does |
|---|---|---|
| a trial | completed, or pruned (stopped early by ASHA) | kept |
| a trial | failed (past its retries, or it reported a failure) | kept as failed: not retried |
| a trial | interrupted, or running (driver killed) | continued from its latest checkpoint, or from epoch 1 |
| a trial | not started | started, up to `search.num_trials` |
| a sweep | every trial ended | nothing runs: its answer is printed again |
| a sweep | recorded as running | taken over if its driver is gone, else refused |
| a replicate | completed, or failed (every trial failed) | kept |
| a replicate | interrupted, or running | continued, as a sweep |
| a replicate | not started | launched, in order |

`launch --if-exists resume` and `confirm` on a confirmation that exists do what `resume` does.
`extend` (sweep/extend.py) grows the saved space's `search.num_trials` and then resumes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from asha_tune.analysis.answers import report, report_text, results, targets_of
from asha_tune.analysis.confirmation import (
    REPORT_FILE,
    ConfirmationRuns,
    confirmation_report,
    describe_confirmation,
)
from asha_tune.analysis.verdicts import describe_best
from asha_tune.sweep import detach, replicated, single
from asha_tune.sweep import extend as extension
from asha_tune.sweep.confirm import run_confirmation
from asha_tune.sweep.jobs import Detached
from asha_tune.sweep.records import Reports, SearchReport, SweepOutcome
from asha_tune.sweep.session import say
from asha_tune.sweep.settings import SWEEP_FILE, SweepSettings, command_tail, continuing
from asha_tune.tracking import Tracker
from asha_tune.tracking.records import Sweep, sweep_trials

__all__ = [
    "REPORTS",
    "ConfirmOutcome",
    "confirm",
    "driver_logs",
    "extend",
    "launch",
    "launch_detached",
    "resume",
]


def best_text(outcome: SweepOutcome) -> str:
    """A sweep's answer: its best trial with its noise, and the command that confirms it."""
    settings = outcome.settings
    s = settings.space
    confirm_command = f"asha-tune confirm {settings.name}{command_tail(settings)}"
    return describe_best(
        outcome.trials, s.scheduler.metric, s.scheduler.mode, s.selection.protocol, confirm_command
    )


def search_report(name: str, sweeps: list[Sweep]) -> SearchReport:
    """A replicated search's report: per target, its winners' accuracy as mean ± SE over replicates."""
    metrics = {}
    for r in results(sweeps, targets_of(sweeps)):
        metrics[f"replicated_acc_{r.target}"] = r.accuracy.mean
        if r.accuracy.n > 1:
            metrics[f"replicated_acc_{r.target}_se"] = r.accuracy.se
    return SearchReport(report_text(name, sweeps), report(name, sweeps), metrics)


REPORTS = Reports(best=best_text, search=search_report)


def launch(settings: SweepSettings, restart: bool = False, if_exists: str = "fail") -> SweepOutcome:
    """Start a new sweep (a replicated search when `search.replicates` > 1): check it can run,
    create its study and MLflow parent run, run it on Ray.

    A name already taken is refused (`if_exists` "fail"), started over (`restart`: the earlier
    attempt is kept as NAME.attempt-K), or continued as `resume` does ("resume": what a job's
    entrypoint wants, so that a resubmitted job goes on where the lost one stopped, and one
    submitted after the sweep finished just reports it)."""
    if (settings.sweep_dir / SWEEP_FILE).exists() and not restart and if_exists == "resume":
        return resume(continuing(settings))
    if settings.space.search.replicates > 1:
        return replicated.launch(settings, restart, REPORTS)
    return single.launch(settings, restart, REPORTS)


def launch_detached(request: detach.DetachRequest) -> detach.Submitted:
    """`launch --detach`: submit the sweep's driver to the cluster as a Ray job (its entrypoint
    the same launch with `--if-exists resume`), and return at once; the same request after its
    driver was lost submits the next one, which continues the sweep."""
    return detach.submit(request)


def driver_logs(
    name: str, follow: bool = False, *, detached: Detached | None = None, address: str | None = None
) -> Iterator[str]:
    """Sweep `name`'s detached driver's output, from its latest Ray job's logs (`follow`: until
    the job ends): on the cluster its records name (`detached`), or on the one at `address`,
    which needs no records (a driver that failed before it wrote any)."""
    if address is not None:
        return detach.job_logs(detach.dashboard_of(address), name, follow)
    assert detached is not None
    return detach.job_logs(detached.dashboard, name, follow, detached.submission_id)


def resume(settings: SweepSettings) -> SweepOutcome:
    """Continue an unfinished sweep or replicated search, as the table above says.

    `settings` may carry new runtime options (data root, cache, device); they are saved."""
    if settings.space.search.replicates > 1:
        return replicated.resume(settings, REPORTS)
    return single.resume(settings, REPORTS)


def extend(settings: SweepSettings, trials: int) -> SweepOutcome:
    """Go on with `trials` more trials of a sweep that ended or was interrupted (every replicate
    of a replicated search): the same study, MLflow parent run and ASHA rungs; the trial runs it
    adds are tagged as the extension's. The space is the one saved at launch."""
    return extension.extend(settings, trials, REPORTS)


@dataclass
class ConfirmOutcome:
    sweep: SweepOutcome  # the confirmation's own sweep
    report: dict[str, Any] | None  # None until every run has ended


def confirm(sweep: SweepSettings, top: int, seeds: int) -> ConfirmOutcome:
    """Run (or continue, or only report) the confirmation of `sweep`'s top `top` trials with
    `seeds` new seeds each; once every run has ended, its report is printed and logged.

    `sweep` carries the runtime to use (data root, device, cluster address, CPUs): a
    confirmation started earlier takes them too, as `resume` does.
    """
    done = run_confirmation(sweep, top, seeds)
    if not done.outcome.finished:
        return ConfirmOutcome(done.outcome, None)
    tracker = Tracker(sweep.tracking_uri)
    settings = done.settings
    children = sweep_trials(tracker, tracker.experiment(sweep.space.name), settings.run_id)
    runs = ConfirmationRuns(sweep.name, sweep.run_id, settings.name, settings.run_id)
    found = confirmation_report(sweep.space, runs, done.seeds, done.top, children)
    tracker.log_dict(settings.run_id, found, REPORT_FILE)
    say(describe_confirmation(found))
    return ConfirmOutcome(done.outcome, found)
