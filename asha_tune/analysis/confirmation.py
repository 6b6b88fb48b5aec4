"""The report of a confirmation (`asha-tune confirm`): each confirmed configuration's figures over
its new seeds (mean, sd, a t-based 95 % interval of the mean) beside the sweep's single run, and
whether the sweep's ranking holds. Computed from records; running the confirmation is
sweep/confirm.py's, and asha_tune.api prints and logs this report once it has run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asha_tune.analysis.estimates import Estimate
from asha_tune.display import is_accuracy, values_text
from asha_tune.spaces import SearchSpace
from asha_tune.spaces.space import CONFIGURATION_KEY
from asha_tune.tracking.best import reported_metrics
from asha_tune.tracking.records import SEED, TrialRecord, configuration_id, trial_values
from asha_tune.tracking.tags import COMPLETED
from asha_tune.trial.selection import se_key

REPORT_FILE = "confirmation.json"  # the report, an artifact of the confirmation's parent run
ACCURACY_RANGE = (0.0, 100.0)


def interval(values: list[float], bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """n, mean, sample standard deviation and the t-based 95 % interval of the mean (None for
    the last three with a single value: one run says nothing about its spread), the interval
    clipped to `bounds` (Estimate.ci95)."""
    e = Estimate(tuple(values))
    if e.n < 2:
        return {"n": e.n, "mean": e.mean if e.n else None, "sd": None, "ci95": None, "values": values}
    ci95 = e.ci95(bounds)
    return {"n": e.n, "mean": e.mean, "sd": e.sd, "ci95": list(ci95) if ci95 else None, "values": values}


@dataclass(frozen=True)
class ConfirmationRuns:
    """Which sweep was confirmed and by which confirmation: names and MLflow parent runs."""

    sweep: str
    sweep_run_id: str
    confirmation: str
    confirmation_run_id: str


def confirmation_report(
    space: SearchSpace,
    which: ConfirmationRuns,
    seeds: list[int],
    top: list[TrialRecord],
    children: list[TrialRecord],
) -> dict[str, Any]:
    """Per confirmed trial, each figure over its new seeds beside the sweep's single run, and
    whether the order by confirmed mean of the selection metric is the sweep's order.

    `space` is the confirmed sweep's, `top` its confirmed trials best first, `children` the
    confirmation's runs."""
    metric, mode = space.scheduler.metric, space.scheduler.mode
    rows = [_confirmed_row(space, rank, original, children) for rank, original in enumerate(top, 1)]
    swaps = _rank_by_confirmed_mean(rows, metric, mode)
    return {
        "sweep": which.sweep,
        "sweep_run_id": which.sweep_run_id,
        "confirmation": which.confirmation,
        "confirmation_run_id": which.confirmation_run_id,
        "metric": metric,
        "mode": mode,
        "selection": space.selection.protocol,
        "seeds": seeds,
        "interval": "95 % interval of the mean: mean ± t(0.975, n-1) · sd / sqrt(n), "
        "accuracies clipped to [0, 100]",
        "configurations": rows,
        "ranking_holds": not swaps,
        "swaps": swaps,  # [a, b]: a ranked above b in the sweep, b above a by confirmed mean
    }


def _confirmed_row(
    space: SearchSpace, rank: int, original: TrialRecord, children: list[TrialRecord]
) -> dict[str, Any]:
    """One confirmed trial: each figure over the confirmation's completed runs of its
    configuration (by seed) beside the sweep's single run."""
    metric = space.scheduler.metric
    runs = sorted(
        (
            c
            for c in children
            if c.values.get(CONFIGURATION_KEY) == configuration_id(original) and c.status == COMPLETED
        ),
        key=lambda c: c.values.get(SEED, 0),
    )
    names = [metric, *(m for m in reported_metrics(original) if m != metric)]
    return {
        "trial": original.number,
        "run_id": original.run_id,
        "sweep_rank": rank,
        "values": trial_values(space, original),
        "seeds": [c.values.get(SEED) for c in runs],
        "runs": [c.run_id for c in runs],
        "metrics": {
            name: {
                "sweep": original.metrics.get(name),
                "sweep_se": original.metrics.get(se_key(name)),
                **interval(
                    [c.metrics[name] for c in runs if name in c.metrics],
                    ACCURACY_RANGE if is_accuracy(name) else None,
                ),
            }
            for name in names
        },
    }


def _rank_by_confirmed_mean(rows: list[dict[str, Any]], metric: str, mode: str) -> list[list[int]]:
    """Give each row its `confirmed_rank` (by confirmed mean, rows without one last, ties in the
    sweep's order); return the pairs the two orders disagree on."""
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
    return [
        [a["trial"], b["trial"]]
        for a in rows
        for b in rows
        if a["sweep_rank"] < b["sweep_rank"] and a["confirmed_rank"] > b["confirmed_rank"]
    ]


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
