"""Reports read stored records (MLflow), never a running sweep's memory.

A best trial is printed with its noise: the binomial standard error and size of its evaluation
set, that set's chance level, whether the runner-up is within two standard errors (then more
seeds are needed: `asha-tune confirm`), and whether the best is near chance at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from asha_tune.display import count, is_accuracy, metric_text, values_text
from asha_tune.tracking.records import TrialRecord, constants_from_params
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
    SIZE_PREFIX,
    TARGET_ACC,
    TARGET_SET,
    VAL_ACC,
    VAL_SET,
    se_key,
    target_of,
)

MEANINGFUL_RUN = (
    "a meaningful run needs ImageNet weights (--weights imagenet), 224 px images "
    "(data.image_size: 224) and a GPU (e.g. asha-tune launch --space random_layers)"
)


class Scored(Protocol):
    """What the ranking reads of a trial (a TrialRecord, an analysis.replicates.TrialOutcome)."""

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
    replicate's winner (analysis/replicates.py) and compare's best so far."""
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


def figure(record: TrialRecord, metric: str) -> str:
    """`val_acc 61.2 ± 1.0% (n = 2,344; chance 19.3%)`; a metric without an error as metric_text."""
    value, se = record.metrics[metric], record.metrics.get(se_key(metric))
    if se is None or not is_accuracy(metric):
        return metric_text(metric, value)
    where = evaluation_set(metric)
    n, chance = record.constants.get(f"{SIZE_PREFIX}{where}"), record.constants.get(f"{CHANCE_PREFIX}{where}")
    about = [f"n = {int(n):,}"] if n is not None else []
    about += [f"chance {chance:.1f}%"] if chance is not None else []
    return f"{metric} {value:.1f} ± {se:.1f}%" + (f" ({'; '.join(about)})" if about else "")


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


def _near_chance(best: TrialRecord, metric: str) -> str | None:
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
    near = _near_chance(best, metric)
    return Verdict(best, runner_up, separable, gap, threshold, max(contenders, 1), near)


def describe_best(
    records: list[TrialRecord], metric: str, mode: str, protocol: str, confirm: str | None = None
) -> str:
    """The final answer, by `best_trial`'s rule, with its noise (see `Verdict`).

    `confirm` is the command that confirms this sweep (`asha-tune confirm NAME`), shown when the
    top is not separable.
    """
    verdict = judge(records, metric, mode)
    if verdict is None:
        return "no trial reported a result"
    best = verdict.best
    rule = (
        "last epoch, among trials that ran every epoch"
        if best.status == COMPLETED
        else "last epoch; no trial ran every epoch, so among those stopped early"
    )
    lines = [
        f"best trial {best.number}: {figure(best, metric)} after {count(best.epochs, 'epoch')} "
        f"({rule}; selection {protocol}); {values_text(best.values)}; MLflow run {best.run_id}"
    ]
    reported = [figure(best, m) for m in reported_metrics(best) if m != metric]
    if reported:
        lines.append(f"  reported on the targets: {', '.join(reported)}")
    if verdict.separable is False and verdict.runner_up is not None:
        top = max(2, verdict.contenders)
        hint = f": {confirm} --top {top} --seeds 3" if confirm else ""
        lines.append(
            f"  not separable: the runner-up, trial {verdict.runner_up.number} "
            f"({figure(verdict.runner_up, metric)}), is {verdict.gap:.1f} points away, within two "
            f"standard errors of the difference ({verdict.threshold:.1f}): the top of the sweep is not "
            f"separable without more seeds; re-run the best configurations with new seeds{hint}"
        )
    if verdict.near_chance:
        lines.append(
            _chance_line(best, verdict.near_chance, "and the sweep's ranking says nothing about the methods")
        )
    return "\n".join(lines)


def _chance_line(record: TrialRecord, name: str, consequence: str) -> str:
    chance = record.constants[f"{CHANCE_PREFIX}{evaluation_set(name)}"]
    return (
        f"  near chance: {name} {record.metrics[name]:.1f}% is within two standard errors of its chance "
        f"level {chance:.1f}% (always guessing the majority class): this trial has learnt next to "
        f"nothing, {consequence}; {MEANINGFUL_RUN}"
    )


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


def describe_trial(final: dict[str, Any], epochs: int, protocol: str) -> str:
    """`asha-tune trial`'s final figures, with the same noise and chance levels as a sweep's best."""
    from asha_tune.trial.selection import constants_of

    record = TrialRecord(
        number=0,
        run_id="",
        status=COMPLETED,
        epochs=epochs,
        values={},
        metrics={k: v for k, v in final.items() if isinstance(v, (int, float))},
        constants=constants_from_params(constants_of(final)),
    )
    from asha_tune.trial.selection import SELECTED_EPOCH, label_free

    lines = [
        f"done: {count(epochs, 'epoch')}, {figure(record, VAL_ACC)} (selection {protocol})",
        f"  reported on the targets: {', '.join(figure(record, m) for m in reported_metrics(record))}",
    ]
    info = label_free(protocol)
    if info is not None and info.metric in record.metrics:
        better = "lower" if info.direction == "min" else "higher"
        lines[0] = (
            f"done: {count(epochs, 'epoch')}, {metric_text(info.metric, record.metrics[info.metric])} "
            f"(selection {protocol}, on unlabelled target images; {better} is better); "
            f"{figure(record, VAL_ACC)} on held-out source images"
        )
    if SELECTED_EPOCH in record.metrics:
        lines.insert(1, f"  figures of epoch {int(record.metrics[SELECTED_EPOCH])} (selection.epoch best)")
    near = _near_chance(record, VAL_ACC)
    if near:
        lines.append(_chance_line(record, near, "so its figures say nothing about the method"))
    return "\n".join(lines)
