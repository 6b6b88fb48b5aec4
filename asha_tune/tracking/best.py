"""Which trial is a sweep's best, by one rule, and what its noise says: facts about records, so the
sweep writes them on its parent run (`summary`) and every report reads them the same way.

The rule (`ranked_trials`): a trial's last-epoch value of the selection metric; trials that ran
every epoch first, then those stopped early; ties to the lower trial number. analysis/verdicts.py
prints the answer; this module decides it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from asha_tune.tracking.records import TrialRecord
from asha_tune.tracking.tags import (
    BEST_RUN_TAG,
    BEST_TRIAL_TAG,
    COMPLETED,
    NEAR_CHANCE_TAG,
    PRUNED,
    SEPARABLE_TAG,
)
from asha_tune.trial.selection import (
    CHANCE_PREFIX,
    TARGET_ACC,
    TARGET_SET,
    VAL_ACC,
    VAL_SET,
    se_key,
    target_of,
)


class Scored(Protocol):
    """What the ranking reads of a trial (a TrialRecord, an analysis.replicate_stats.TrialOutcome)."""

    @property
    def number(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def metrics(self) -> Mapping[str, float]: ...


S = TypeVar("S", bound=Scored)


def _finite(record: Scored, key: str) -> bool:
    value = record.metrics.get(key)
    return isinstance(value, (int, float)) and math.isfinite(value)


def ranked_trials(records: Iterable[S], metric: str, mode: str, require: Sequence[str] = ()) -> list[S]:
    """Trials by their last-epoch value, best first: those that ran every epoch, then those that
    were stopped early (scored on fewer epochs, they only lead when no trial ran the full budget);
    ties to the lower trial number. Only trials that ended with a finite `metric` (and a finite
    value of each `require`d metric, e.g. the accuracy a winner reports) are ranked.

    The one rule for every answer a sweep gives: its best trial, a confirmation's top K, each
    replicate's winner (analysis/replicate_stats.py) and compare's best so far."""
    scored = [
        r
        for r in records
        if r.status in (COMPLETED, PRUNED) and all(_finite(r, key) for key in (metric, *require))
    ]
    sign = -1 if mode == "max" else 1
    return sorted(scored, key=lambda r: (r.status != COMPLETED, sign * r.metrics[metric], r.number))


def best_trial(records: Iterable[S], metric: str, mode: str, require: Sequence[str] = ()) -> S | None:
    """The best last-epoch value among trials that ran every epoch; else among all that ended.

    Trials that ASHA stopped after a few epochs are scored on fewer epochs, so they only
    compete when no trial ran the full budget.
    """
    ranked = ranked_trials(records, metric, mode, require)
    return ranked[0] if ranked else None


# --- noise ---------------------------------------------------------------------------------------


def evaluation_set(metric: str) -> str | None:
    """The set an accuracy is measured on, as named in n_<set> and chance_<set>."""
    if metric == VAL_ACC:
        return VAL_SET
    if metric == TARGET_ACC:
        return TARGET_SET
    return target_of(metric)


def reported_metrics(record: TrialRecord) -> list[str]:
    """The target accuracies a trial reports: acc_<domain> for each target, then target_acc."""
    domains = sorted(k for k in record.metrics if target_of(k) is not None)
    return domains + ([TARGET_ACC] if TARGET_ACC in record.metrics else [])


@dataclass(frozen=True)
class Verdict:
    """What the noise says about a sweep's best trial.

    Not separable: the runner-up (the next trial by `best_trial`'s rule, from the same pool) is
    within two standard errors of the difference, |best - runner-up| <= 2·sqrt(se1² + se2²).
    Near chance: the selection metric, or the mean target accuracy, is less than two of its
    standard errors above its evaluation set's chance level (the majority-class rate).
    """

    best: TrialRecord
    runner_up: TrialRecord | None
    separable: bool | None  # None: no runner-up, or no standard errors to compare
    gap: float  # |best - runner-up|
    threshold: float  # 2·sqrt(se1² + se2²)
    contenders: int  # trials (the best included) within that distance of the best
    near_chance: str | None  # the metric found near chance, if any


def _combined(a: TrialRecord, b: TrialRecord, metric: str) -> float | None:
    se_a, se_b = a.metrics.get(se_key(metric)), b.metrics.get(se_key(metric))
    return None if se_a is None or se_b is None else 2 * math.sqrt(se_a**2 + se_b**2)


def near_chance(best: TrialRecord, metric: str) -> str | None:
    """`metric`, or else target_acc, where it is within two standard errors of its chance level."""
    for name in dict.fromkeys([metric, TARGET_ACC]):
        where = evaluation_set(name)
        chance = best.constants.get(f"{CHANCE_PREFIX}{where}")
        se = best.metrics.get(se_key(name))
        if (
            name in best.metrics
            and chance is not None
            and se is not None
            and best.metrics[name] - chance < 2 * se
        ):
            return name
    return None


def judge(records: list[TrialRecord], metric: str, mode: str) -> Verdict | None:
    ranked = ranked_trials(records, metric, mode)
    if not ranked:
        return None
    best = ranked[0]
    pool = [r for r in ranked if (r.status == COMPLETED) == (best.status == COMPLETED)]
    runner_up = pool[1] if len(pool) > 1 else None
    separable, gap, threshold = None, math.nan, math.nan
    combined = _combined(best, runner_up, metric) if runner_up is not None else None
    if runner_up is not None and combined is not None:
        gap, threshold = abs(best.metrics[metric] - runner_up.metrics[metric]), combined
        separable = gap > threshold
    contenders = sum(
        1
        for r in pool
        if (t := _combined(best, r, metric)) is not None
        and abs(best.metrics[metric] - r.metrics[metric]) <= t
    )
    near = near_chance(best, metric)
    return Verdict(best, runner_up, separable, gap, threshold, max(contenders, 1), near)


def summary(records: list[TrialRecord], metric: str, mode: str) -> tuple[dict[str, float], dict[str, str]]:
    """A parent run's summary of its best trial, so sweeps compare as rows in MLflow: metrics
    best_<metric> and best_<reported> with their standard errors; tags with the trial and verdicts."""
    verdict = judge(records, metric, mode)
    if verdict is None:
        return {}, {}
    best = verdict.best
    names = [metric, *(m for m in reported_metrics(best) if m != metric)]
    metrics = {
        f"best_{k}": best.metrics[k] for name in names for k in (name, se_key(name)) if k in best.metrics
    }
    separable = {None: "unknown (no runner-up with standard errors)", True: "yes"}.get(
        verdict.separable,
        f"no: runner-up trial {verdict.runner_up.number if verdict.runner_up else '?'} within two standard "
        f"errors ({verdict.gap:.2f} <= {verdict.threshold:.2f}); confirm with more seeds",
    )
    near = f"yes: {verdict.near_chance} within two standard errors of chance" if verdict.near_chance else "no"
    tags = {
        BEST_TRIAL_TAG: str(best.number),
        BEST_RUN_TAG: best.run_id,
        SEPARABLE_TAG: separable,
        NEAR_CHANCE_TAG: near,
    }
    return metrics, tags
