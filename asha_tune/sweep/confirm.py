"""`asha-tune confirm`: re-run the best configurations of a finished sweep with new seeds.

One run per configuration cannot tell apart trials whose figures differ by less than their noise
(reports.Verdict). A confirmation re-runs the top K trials (by the sweep's selection metric and
`best_trial`'s rule) with S seeds the sweep never used, to full budget, and reports per
configuration the mean, standard deviation and 95 % interval of each figure, and whether the
sweep's ranking holds.

A confirmation is itself a sweep, of a list space: one configuration per confirmed trial (its
values without its seed) crossed with the new seeds as a grid parameter, run with FIFO to full
budget on the sweep's cluster and resources. Retries, checkpoints and resuming after a kill are
therefore the sweep's own (sweep/lifecycle.py). It is named SWEEP.confirm-topK-seedsS: the same command
again continues it after an interruption, or prints the report of a finished one. Its MLflow
parent run nests under the sweep's parent run; the names of its tags are in tracking.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asha_tune.analysis.confirmation import (
    REPORT_FILE,
    SEED,
    ConfirmationRuns,
    configuration_id,
    confirmation_report,
    describe_confirmation,
    trial_values,
)
from asha_tune.analysis.verdicts import ranked_trials
from asha_tune.display import count
from asha_tune.errors import ConfigError
from asha_tune.spaces import SearchSpace
from asha_tune.sweep.settings import SWEEP_FILE, SweepSettings
from asha_tune.tracking import Tracker
from asha_tune.tracking.records import TrialRecord, sweep_trials
from asha_tune.tracking.tags import (
    COMPLETED,
    CONFIRMATION_KIND,
    CONFIRMS_RUN_TAG,
    CONFIRMS_TAG,
    CONFIRMS_TRIAL_TAG,
    KIND_TAG,
)


@dataclass
class ConfirmOutcome:
    sweep: Any  # the confirmation's SweepOutcome
    report: dict[str, Any] | None  # None until every run has ended


def confirmation_name(sweep: str, top: int, seeds: int) -> str:
    return f"{sweep}.confirm-top{top}-seeds{seeds}"


# --- what to run --------------------------------------------------------------------------------


def top_trials(
    sweep: SweepSettings, tracker: Tracker, top: int, seeds: int
) -> tuple[list[TrialRecord], list[TrialRecord]]:
    """(the top `top` full-budget trials, best first; all of the sweep's trials), or a ConfigError."""
    if top < 1:
        raise ConfigError(f"--top {top}: confirm at least 1 configuration")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: run at least 1 new seed per configuration")
    if sweep.is_confirmation:
        raise ConfigError(f"{sweep.name} is itself a confirmation: confirm the sweep it belongs to")
    if sweep.space.search.replicates > 1:
        last = sweep.space.search.replicates - 1
        raise ConfigError(
            f"{sweep.name} is a replicated search: confirm one of its replicates ({sweep.name}.r0 .. "
            f"{sweep.name}.r{last}); compare {sweep.name} gives the replicates' answer"
        )
    status = tracker.status(sweep.parent_run_id) if sweep.parent_run_id else "never started"
    if status != COMPLETED:
        raise ConfigError(
            f"sweep {sweep.name} has not finished (it is {status}): only a finished sweep's "
            f"best can be confirmed; continue it with asha-tune resume {sweep.name}"
        )
    space = sweep.space
    records = sweep_trials(tracker, tracker.experiment(space.name), sweep.run_id)
    full = [
        r
        for r in ranked_trials(records, space.scheduler.metric, space.scheduler.mode)
        if r.status == COMPLETED
    ]
    if top > len(full):
        raise ConfigError(
            f"--top {top}: sweep {sweep.name} has only {len(full)} finished full-budget "
            f"trial{'' if len(full) == 1 else 's'} to confirm"
        )
    return full[:top], records


def new_seeds(space: SearchSpace, records: list[TrialRecord], seeds: int) -> list[int]:
    """`seeds` seeds no trial of the sweep used: the ones after the largest used, so the same
    sweep always gets the same seeds."""
    used = {space.trial_config(r.values).train.seed for r in records}
    start = max(used) + 1
    return list(range(start, start + seeds))


def confirmation_space(space: SearchSpace, top: list[TrialRecord], seeds: list[int]) -> SearchSpace:
    """The sweep's space with its search replaced: the confirmed configurations x the new seeds."""
    tree = space.model_dump(mode="json")
    tree.update(
        configurations=[{"id": configuration_id(r), "values": trial_values(space, r)} for r in top],
        parameters={SEED: {"type": "grid", "values": seeds}},
        search={**tree["search"], "algorithm": "list", "num_trials": None, "only": []},
        scheduler={**tree["scheduler"], "kind": "fifo"},
    )
    return SearchSpace.model_validate(tree)


def confirmation_settings(
    sweep: SweepSettings, top: list[TrialRecord], seeds: list[int], name: str
) -> SweepSettings:
    """A new confirmation: the sweep's stores, cluster and runtime; nested under its parent run."""
    return sweep.model_copy(
        update={
            "name": name,
            "space": confirmation_space(sweep.space, top, seeds),
            "parent_run_id": None,
            "nested_under": sweep.parent_run_id,
            "run_tags": {KIND_TAG: CONFIRMATION_KIND, CONFIRMS_TAG: sweep.name},
            "configuration_tags": {
                configuration_id(r): {CONFIRMS_TRIAL_TAG: str(r.number), CONFIRMS_RUN_TAG: r.run_id}
                for r in top
            },
        }
    )


# --- run ----------------------------------------------------------------------------------------


def confirm(sweep: SweepSettings, top: int, seeds: int) -> ConfirmOutcome:
    """Run (or continue, or only report) the confirmation of `sweep`'s top `top` trials.

    `sweep` carries the runtime to use (data root, device, cluster address, CPUs): a
    confirmation started earlier takes them too, as `resume` does.
    """
    from asha_tune.sweep.lifecycle import command_tail, launch, resume, say

    if sweep.rehearse is not None:
        raise ConfigError(
            f"sweep {sweep.name} is a rehearsal (launch --rehearse: simulated trials): its scores are "
            "not results, so compare, confirm and warm starts refuse it"
        )
    tracker = Tracker(sweep.tracking_uri)
    best, records = top_trials(sweep, tracker, top, seeds)
    name = confirmation_name(sweep.name, top, seeds)
    space = sweep.space
    if (sweep.results_dir / name / SWEEP_FILE).is_file():
        settings = SweepSettings.load(name, sweep.results_dir)
        if settings.nested_under != sweep.parent_run_id:
            raise ConfigError(
                f"confirmation {name} belongs to an earlier attempt of sweep {sweep.name} "
                f"(started over with --restart): move or delete {settings.sweep_dir}"
            )
        settings = settings.model_copy(
            update={
                k: getattr(sweep, k)
                for k in ("runtime", "address", "num_cpus", "num_gpus", "resource_wait_s")
            }
        )
        say(f"confirmation {name} exists: continuing it (finished runs are kept)")
        outcome = resume(settings)
    else:
        seed_list = new_seeds(space, records, seeds)
        settings = confirmation_settings(sweep, best, seed_list, name)
        say(
            f"confirming sweep {sweep.name}: its top {len(best)} by {space.scheduler.metric} (selection "
            f"{space.selection.protocol}; trials {', '.join(str(r.number) for r in best)}), each with "
            f"{count(seeds, 'new seed')} ({', '.join(map(str, seed_list))}), to full budget"
        )
        outcome = launch(settings)
    if not outcome.finished:
        say(
            f"the confirmation did not finish; continue it with: asha-tune confirm {sweep.name} "
            f"--top {top} --seeds {seeds}{command_tail(sweep)}"
        )
        return ConfirmOutcome(outcome, None)
    children = sweep_trials(tracker, tracker.experiment(space.name), settings.run_id)
    runs = ConfirmationRuns(sweep.name, sweep.run_id, settings.name, settings.run_id)
    seed_list = [int(seed) for seed in settings.space.parameters[SEED].choices()]  # type: ignore[arg-type]
    report = confirmation_report(space, runs, seed_list, best, children)
    tracker.log_dict(settings.run_id, report, REPORT_FILE)
    say(describe_confirmation(report))
    return ConfirmOutcome(outcome, report)
