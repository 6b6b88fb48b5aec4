"""`asha-tune confirm`: re-run the best configurations of a finished sweep with new seeds.

One run per configuration cannot tell apart trials whose figures differ by less than their noise
(reports.Verdict). A confirmation re-runs the top K trials (by the sweep's selection metric and
`best_trial`'s rule) with S seeds the sweep never used, to full budget, and reports per
configuration the mean, standard deviation and 95 % interval of each figure, and whether the
sweep's ranking holds.

A confirmation is itself a sweep, of a list space: one configuration per confirmed trial (its
values without its seed) crossed with the new seeds as a grid parameter, run with FIFO to full
budget on the sweep's cluster and resources. Retries, checkpoints and resuming after a kill are
therefore the sweep's own (sweep/run.py). It is named SWEEP.confirm-topK-seedsS: the same command
again continues it after an interruption, or prints the report of a finished one. Its MLflow
parent run nests under the sweep's parent run; the names of its tags are in tracking.py.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from asha_tune import defaults
from asha_tune.analysis.verdicts import ranked_trials, reported_metrics
from asha_tune.display import values_text
from asha_tune.errors import ConfigError
from asha_tune.spaces import SearchSpace
from asha_tune.spaces.space import CONFIGURATION_KEY
from asha_tune.sweep import SweepSettings
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
from asha_tune.trial.selection import se_key

REPORT_FILE = "confirmation.json"  # the report, an artifact of the confirmation's parent run
SEED = "train.seed"


@dataclass
class ConfirmOutcome:
    sweep: Any  # the confirmation's SweepOutcome
    report: dict[str, Any] | None  # None until every run has ended


def confirmation_name(sweep: str, top: int, seeds: int) -> str:
    return f"{sweep}.confirm-top{top}-seeds{seeds}"


def configuration_id(record: TrialRecord) -> str:
    return f"trial-{record.number}"


# --- what to run --------------------------------------------------------------------------------


def top_trials(
    sweep: SweepSettings, tracker: Tracker, top: int, seeds: int
) -> tuple[list[TrialRecord], list[TrialRecord]]:
    """(the top `top` full-budget trials, best first; all of the sweep's trials), or a ConfigError."""
    if top < 1:
        raise ConfigError(f"--top {top}: confirm at least 1 configuration")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: run at least 1 new seed per configuration")
    if sweep.nested_under:
        raise ConfigError(f"{sweep.name} is itself a confirmation: confirm the sweep it belongs to")
    status = tracker.status(sweep.parent_run_id) if sweep.parent_run_id else "never started"
    if status != COMPLETED:
        raise ConfigError(
            f"sweep {sweep.name} has not finished (it is {status}): only a finished sweep's "
            f"best can be confirmed; continue it with asha-tune resume {sweep.name}"
        )
    space = sweep.space
    records = sweep_trials(tracker, tracker.experiment(space.name), sweep.parent_run_id)
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


def trial_values(space: SearchSpace, record: TrialRecord) -> dict[str, Any]:
    """A trial's settings by path (a listed configuration's resolved), without its seed."""
    values = dict(record.values)
    if CONFIGURATION_KEY in values:
        values = {**space.configuration(values.pop(CONFIGURATION_KEY)).values, **values}
    values.pop(SEED, None)
    return values


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
    from asha_tune.sweep.run import launch, resume, say

    tracker = Tracker(sweep.tracking_uri)
    best, records = top_trials(sweep, tracker, top, seeds)
    name = confirmation_name(sweep.name, top, seeds)
    space = sweep.space
    if (sweep.results_dir / name / "sweep.json").is_file():
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
            f"{seeds} new seed{'s' if seeds > 1 else ''} ({', '.join(map(str, seed_list))}), to full budget"
        )
        outcome = launch(settings)
    if not outcome.finished:
        tail = "" if sweep.results_dir == defaults.results_dir() else f" --results-dir {sweep.results_dir}"
        say(
            f"the confirmation did not finish; continue it with: asha-tune confirm {sweep.name} "
            f"--top {top} --seeds {seeds}{tail}"
        )
        return ConfirmOutcome(outcome, None)
    children = sweep_trials(tracker, tracker.experiment(space.name), settings.parent_run_id)
    report = confirmation_report(sweep, settings, best, children)
    tracker.log_dict(settings.parent_run_id, report, REPORT_FILE)
    say(describe_confirmation(report))
    return ConfirmOutcome(outcome, report)


# --- the report ---------------------------------------------------------------------------------


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (two-sided 95 %)."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def interval(values: list[float]) -> dict[str, Any]:
    """n, mean, sample standard deviation and the t-based 95 % interval of the mean (None for
    the last three with a single value: one run says nothing about its spread)."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci95": None, "values": []}
    mean = statistics.fmean(values)
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "ci95": None, "values": values}
    sd = statistics.stdev(values)
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "values": values}


def confirmation_report(
    sweep: SweepSettings, confirmation: SweepSettings, top: list[TrialRecord], children: list[TrialRecord]
) -> dict[str, Any]:
    """Per confirmed trial, each figure over its new seeds beside the sweep's single run, and
    whether the order by confirmed mean of the selection metric is the sweep's order."""
    metric, mode = sweep.space.scheduler.metric, sweep.space.scheduler.mode
    rows = []
    for rank, original in enumerate(top, 1):
        runs = sorted(
            (
                c
                for c in children
                if c.values.get(CONFIGURATION_KEY) == configuration_id(original) and c.status == COMPLETED
            ),
            key=lambda c: c.values.get(SEED, 0),
        )
        names = [metric, *(m for m in reported_metrics(original) if m != metric)]
        rows.append(
            {
                "trial": original.number,
                "run_id": original.run_id,
                "sweep_rank": rank,
                "values": trial_values(sweep.space, original),
                "seeds": [c.values.get(SEED) for c in runs],
                "runs": [c.run_id for c in runs],
                "metrics": {
                    name: {
                        "sweep": original.metrics.get(name),
                        "sweep_se": original.metrics.get(se_key(name)),
                        **interval([c.metrics[name] for c in runs if name in c.metrics]),
                    }
                    for name in names
                },
            }
        )
    sign = -1 if mode == "max" else 1
    confirmed = sorted(
        rows,
        key=lambda r: (
            r["metrics"][metric]["mean"] is None,
            sign * (r["metrics"][metric]["mean"] or 0),
            r["sweep_rank"],
        ),
    )
    for position, row in enumerate(confirmed, 1):
        row["confirmed_rank"] = position
    swaps = [
        [a["trial"], b["trial"]]
        for a in rows
        for b in rows
        if a["sweep_rank"] < b["sweep_rank"] and a["confirmed_rank"] > b["confirmed_rank"]
    ]
    return {
        "sweep": sweep.name,
        "sweep_run_id": sweep.parent_run_id,
        "confirmation": confirmation.name,
        "confirmation_run_id": confirmation.parent_run_id,
        "metric": metric,
        "mode": mode,
        "selection": sweep.space.selection.protocol,
        "seeds": confirmation.space.parameters[SEED].choices(),
        "interval": "95 % interval of the mean: mean ± t(0.975, n-1) · sd / sqrt(n)",
        "configurations": rows,
        "ranking_holds": not swaps,
        "swaps": swaps,  # [a, b]: a ranked above b in the sweep, b above a by confirmed mean
    }


def _cell(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "no finished run"
    if stats["sd"] is None:
        return f"{stats['mean']:.2f} (1 run)"
    low, high = stats["ci95"]
    return f"{stats['mean']:.2f} ± {stats['sd']:.2f} [{low:.2f}, {high:.2f}]"


def describe_confirmation(report: dict[str, Any]) -> str:
    """The printed report: one block per configuration, then whether the ranking holds."""
    lines = [
        f"confirmation {report['confirmation']} of sweep {report['sweep']} (selection "
        f"{report['selection']}, seeds {', '.join(map(str, report['seeds']))}): mean ± sd "
        f"[95 % interval, t] over the new seeds, beside the sweep's single run ± its standard error"
    ]
    for row in report["configurations"]:
        lines.append(
            f"#{row['sweep_rank']} trial {row['trial']} (confirmed #{row['confirmed_rank']}, "
            f"{len(row['runs'])} runs): {values_text(row['values'])}"
        )
        for name, stats in row["metrics"].items():
            single = stats["sweep"]
            se = f" ± {stats['sweep_se']:.2f}" if stats["sweep_se"] is not None else ""
            sweep_text = f"{single:.2f}{se}" if single is not None else "-"
            lines.append(f"  {name:16s} sweep {sweep_text:>14s}   confirmed {_cell(stats)}")
    if report["ranking_holds"]:
        lines.append(
            f"ranking holds: by confirmed mean {report['metric']}, the top "
            f"{len(report['configurations'])} keep the sweep's order"
        )
    else:
        swapped = "; ".join(f"trial {b} now above trial {a}" for a, b in report["swaps"])
        lines.append(f"ranking does not hold: by confirmed mean {report['metric']}, {swapped}")
    return "\n".join(lines)
