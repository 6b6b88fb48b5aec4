"""`asha-tune confirm`: re-run the best configurations of a finished sweep with new seeds.

One run per configuration cannot tell apart trials whose figures differ by less than their noise
(tracking.best.Verdict). A confirmation re-runs the top K trials (by the sweep's selection metric
and `best_trial`'s rule) with S seeds the sweep never used, to full budget; its report (per
configuration the mean, standard deviation and 95 % interval of each figure, and whether the
sweep's ranking holds) is analysis/confirmation.py's, printed and logged by asha_tune.api.

A confirmation is itself a sweep, of a list space: one configuration per confirmed trial (its
values without its seed, tracking.records.trial_values) crossed with the new seeds as a grid
parameter, run with FIFO to full budget on the sweep's cluster and resources. Retries,
checkpoints and resuming after a kill are therefore the sweep's own (sweep/single.py). It is
named SWEEP.confirm-topK-seedsS: the same command again continues it after an interruption, or
reports a finished one. Its MLflow parent run nests under the sweep's parent run; the names of its
tags are in tracking/tags.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from asha_tune.display import count
from asha_tune.errors import ConfigError
from asha_tune.spaces import SearchSpace
from asha_tune.sweep import single
from asha_tune.sweep.records import SweepOutcome
from asha_tune.sweep.session import say
from asha_tune.sweep.settings import SWEEP_FILE, SweepSettings, command_tail
from asha_tune.tracking import Tracker
from asha_tune.tracking.best import ranked_trials
from asha_tune.tracking.records import (
    SEED,
    TrialRecord,
    configuration_id,
    rehearsal_refusal,
    sweep_trials,
    trial_values,
)
from asha_tune.tracking.tags import (
    COMPLETED,
    CONFIRMATION_KIND,
    CONFIRMS_RUN_TAG,
    CONFIRMS_TAG,
    CONFIRMS_TRIAL_TAG,
    KIND_TAG,
)


@dataclass
class Confirmation:
    """A confirmation run (or continued, or found finished): what its report is computed from."""

    outcome: SweepOutcome  # the confirmation's own sweep
    settings: SweepSettings  # the confirmation's
    top: list[TrialRecord]  # the confirmed trials, best first

    @property
    def seeds(self) -> list[int]:
        """The new seeds each configuration ran with (its grid parameter)."""
        return [int(seed) for seed in self.settings.space.parameters[SEED].choices()]  # type: ignore[arg-type]


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
            f"--top {top}: sweep {sweep.name} has only {count(len(full), 'finished full-budget trial')} "
            f"to confirm"
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


def run_confirmation(sweep: SweepSettings, top: int, seeds: int) -> Confirmation:
    """Run (or continue, or find finished) the confirmation of `sweep`'s top `top` trials.

    `sweep` carries the runtime to use (data root, device, cluster address, CPUs): a
    confirmation started earlier takes them too, as `resume` does.
    """
    if sweep.rehearse is not None:
        raise ConfigError(rehearsal_refusal(sweep.name))
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
        settings = settings.with_runtime_of(sweep)
        say(f"confirmation {name} exists: continuing it (finished runs are kept)")
        outcome = single.resume(settings)
    else:
        seed_list = new_seeds(space, records, seeds)
        settings = confirmation_settings(sweep, best, seed_list, name)
        say(
            f"confirming sweep {sweep.name}: its top {len(best)} by {space.scheduler.metric} (selection "
            f"{space.selection.protocol}; trials {', '.join(str(r.number) for r in best)}), each with "
            f"{count(seeds, 'new seed')} ({', '.join(map(str, seed_list))}), to full budget"
        )
        outcome = single.launch(settings)
    if not outcome.finished:
        say(
            f"the confirmation did not finish; continue it with: asha-tune confirm {sweep.name} "
            f"--top {top} --seeds {seeds}{command_tail(sweep)}"
        )
    return Confirmation(outcome, settings, best)
