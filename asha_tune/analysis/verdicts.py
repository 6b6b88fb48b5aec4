"""Reports read stored records (MLflow), never a running sweep's memory.

A best trial (chosen, and its noise judged, by tracking/best.py) is printed with its noise: the
binomial standard error and size of its evaluation set, that set's chance level, whether the
runner-up is within two standard errors (then more seeds are needed: `asha-tune confirm`), and
whether the best is near chance at all.
"""

from __future__ import annotations

from typing import Any

from asha_tune.display import count, is_accuracy, metric_text, values_text
from asha_tune.tracking.best import evaluation_set, judge, near_chance, reported_metrics
from asha_tune.tracking.records import TrialRecord, constants_from_params
from asha_tune.tracking.tags import (
    COMPLETED,
)
from asha_tune.trial.selection import (
    CHANCE_PREFIX,
    SIZE_PREFIX,
    VAL_ACC,
    se_key,
)

MEANINGFUL_RUN = (
    "a meaningful run needs ImageNet weights (--weights imagenet), 224 px images "
    "(data.image_size: 224) and a GPU (e.g. asha-tune launch --space random_layers)"
)


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


def describe_best(
    records: list[TrialRecord], metric: str, mode: str, protocol: str, confirm: str | None = None
) -> str:
    """The final answer, by `best_trial`'s rule, with its noise (see tracking.best.Verdict).

    `confirm` is the command that confirms this sweep (`asha-tune confirm NAME`), shown when the
    top is not separable.
    """
    verdict = judge(records, metric, mode)
    if verdict is None:  # e.g. interrupted in its first trial: that trial's epochs are no answer
        return (
            "no answer yet: no trial has ended with a result "
            "(running, interrupted and failed trials are not ranked)"
        )
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
    near = near_chance(record, VAL_ACC)
    if near:
        lines.append(_chance_line(record, near, "so its figures say nothing about the method"))
    return "\n".join(lines)
