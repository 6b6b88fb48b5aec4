"""The figures `compare` reports, from records: best so far against budget, each sweep's best, a replayed
grid against the published figures. Pure computation on the sweeps tracking.records reads back
(Sweep, TrialRun); the text and CSV are render.py's, the figures plots.py's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from asha_tune.analysis import reference
from asha_tune.analysis.estimates import Estimate
from asha_tune.display import values_text
from asha_tune.tracking.best import best_trial
from asha_tune.tracking.records import Sweep
from asha_tune.tracking.tags import COMPLETED
from asha_tune.trial.selection import SE_SUFFIX, VAL_ACC, binomial_se, target_of, target_selection


def selection_metric(protocol: str, domain: str, metric: str = VAL_ACC, mode: str = "max") -> tuple[str, str]:
    """(metric, mode) that picks the best trial for a target (selection.target_selection): under
    oracle the target's own accuracy, under a label-free protocol that target's score."""
    return target_selection(protocol, domain, metric, mode)


@dataclass(frozen=True)
class CurvePoint:
    sweep: str
    protocol: str
    target: str
    completed: int  # trials ended so far
    trial: int  # the trial that just ended
    budget_epochs: int
    budget_device_s: float
    best_trial: int | None
    selection_metric: str
    best_selection: float | None
    best_acc: float | None  # the reported target accuracy of the best trial so far
    best_acc_se: float | None


def curve(sweep: Sweep, domain: str) -> list[CurvePoint]:
    """Best selection so far against budget spent (the whole sweep's), trial by trial as they
    ended; the best is picked by `tracking.best.ranked_trials`'s rule, as the sweep's final answer."""
    (metric, mode), acc = selection_metric(sweep.protocol, domain, sweep.metric, sweep.mode), f"acc_{domain}"
    points, ended, epochs, seconds = [], [], 0, 0.0
    for k, trial in enumerate(sweep.trials, 1):
        epochs, seconds = epochs + trial.record.epochs, seconds + trial.device_s
        ended.append(trial.record)
        best = best_trial(ended, metric, mode, require=(acc,))
        m = best.metrics if best else {}
        points.append(
            CurvePoint(
                sweep.name,
                sweep.protocol,
                domain,
                k,
                trial.record.number,
                epochs,
                seconds,
                best.number if best else None,
                metric,
                m.get(metric),
                m.get(acc),
                m.get(acc + SE_SUFFIX),
            )
        )
    return points


def first_reaching(points: list[CurvePoint], level: float | None) -> CurvePoint | None:
    if level is None:
        return None
    return next((p for p in points if p.best_acc is not None and p.best_acc >= level - 1e-9), None)


@dataclass(frozen=True)
class GridRow:
    sweep: str
    configuration: str
    trial: int
    target: str
    ours: float
    ours_se: float
    published: float
    difference: float  # ours - published, percentage points
    se_difference: float  # binomial: sqrt(se_ours^2 + se_published^2), published at our n
    seed_spread: float | None  # the known repeat spread for the target (reference.SEED_SPREAD_PP)
    within_2se: bool
    within_seed_spread: bool | None
    within_noise: bool


def grid_rows(sweep: Sweep) -> list[GridRow]:
    """A replayed grid, configuration by configuration: ours against published, and the noise."""
    rows = []
    for trial in sweep.trials:
        figures = sweep.published.get(trial.configuration or "", {})
        for metric, published in figures.items():
            domain = metric.removeprefix("acc_")
            if metric not in trial.record.metrics or trial.record.status != COMPLETED:
                continue
            ours = trial.record.metrics[metric]
            n = trial.n.get(domain) or reference.DOMAIN_SIZES[domain]
            se = trial.record.metrics.get(metric + SE_SUFFIX, binomial_se(ours, n))
            se_diff = math.hypot(se, binomial_se(published, n))
            diff = ours - published
            spread = reference.SEED_SPREAD_PP.get(domain)
            within_se = abs(diff) <= 2 * se_diff
            within_spread = None if spread is None else abs(diff) <= spread
            rows.append(
                GridRow(
                    sweep.name,
                    trial.configuration or "",
                    trial.record.number,
                    domain,
                    ours,
                    se,
                    published,
                    diff,
                    se_diff,
                    spread,
                    within_se,
                    within_spread,
                    within_se or bool(within_spread),
                )
            )
    return rows


def confirmed(sweep: Sweep, trial: int | None, metric: str) -> tuple[float, float, int] | None:
    """Mean, sd and count of a metric over a trial's confirmation runs, where `confirm` ran."""
    runs = sweep.confirmations.get(trial, []) if trial is not None else []
    values = [m[metric] for m in runs if metric in m]
    if not values:
        return None
    e = Estimate(tuple(values))
    return e.mean, e.sd if e.n > 1 else 0.0, e.n


@dataclass
class Group:
    """One target domain under one selection protocol."""

    target: str
    protocol: str
    curves: dict[str, list[CurvePoint]]
    grid_best: float | None  # the best grid's selected trial, reported accuracy
    published_best: tuple[str, float] | None
    best_rows: list[dict[str, Any]]


@dataclass
class Comparison:
    sweeps: list[Sweep]
    groups: list[Group]
    grid: list[GridRow]


def _best_row(
    sweep: Sweep,
    points: list[CurvePoint],
    domain: str,
    grid_best: float | None,
    published: tuple[str, float] | None,
) -> dict[str, Any]:
    last = points[-1] if points else None
    trial = next((t for t in sweep.trials if last and t.record.number == last.best_trial), None)
    row: dict[str, Any] = {
        "sweep": sweep.name,
        "protocol": sweep.protocol,
        "target": domain,
        "best_trial": last.best_trial if last else None,
        "configuration": (trial.configuration or values_text(trial.record.values)) if trial else None,
        "selection_metric": last.selection_metric if last else None,
        "selection": last.best_selection if last else None,
        "selection_se": (
            trial.record.metrics.get(f"{last.selection_metric}{SE_SUFFIX}") if trial and last else None
        ),
        "acc": last.best_acc if last else None,
        "acc_se": last.best_acc_se if last else None,
        "trials": len(points),
        "epochs": last.budget_epochs if last else 0,
        "device_s": last.budget_device_s if last else 0.0,
    }
    for label, level in (("grid_best", grid_best), ("published_best", published[1] if published else None)):
        hit = first_reaching(points, level)
        row[f"matched_{label}_epochs"] = hit.budget_epochs if hit else None
        row[f"matched_{label}_device_s"] = hit.budget_device_s if hit else None
    conf = confirmed(sweep, row["best_trial"], f"acc_{domain}")
    row["confirmed_mean"], row["confirmed_sd"], row["confirmed_n"] = conf if conf else (None, None, 0)
    return row


def compare(sweeps: list[Sweep]) -> Comparison:
    groups = []
    keys = sorted(
        {
            (sweep.protocol, domain)
            for sweep in sweeps
            for t in sweep.trials
            for metric in t.record.metrics
            if (domain := target_of(metric)) is not None
        }
    )
    for protocol, domain in keys:
        members = [s for s in sweeps if s.protocol == protocol]
        curves = {s.name: curve(s, domain) for s in members}
        curves = {k: v for k, v in curves.items() if any(p.best_acc is not None for p in v)}
        grids = [
            v[-1].best_acc
            for k, v in curves.items()
            if next(s for s in members if s.name == k).lists_configurations and v[-1].best_acc is not None
        ]
        grid_best = max(grids) if grids else None
        published = reference.paper_best(domain)
        rows = [
            _best_row(s, curves[s.name], domain, grid_best, published) for s in members if s.name in curves
        ]
        groups.append(Group(domain, protocol, curves, grid_best, published, rows))
    return Comparison(sweeps, groups, [row for s in sweeps if s.lists_configurations for row in grid_rows(s)])
