"""Reports read stored records (MLflow), never a running sweep's memory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .display import count, metric_text, values_text
from .tracking import KIND_TAG, STATUS_TAG, Tracker

FINAL_STATUSES = frozenset({"completed", "pruned", "failed"})  # how a trial can end


@dataclass(frozen=True)
class TrialRecord:
    number: int
    run_id: str
    status: str  # completed | pruned | failed | running | interrupted
    epochs: int
    values: dict[str, Any]
    metrics: dict[str, float]  # the last value of every metric


def sweep_trials(tracker: Tracker, experiment_id: str, parent_run_id: str) -> list[TrialRecord]:
    """The sweep's trials: its parent's children, but not a nested confirmation run (KIND_TAG)."""
    runs = tracker.find_runs(experiment_id, f"tags.mlflow.parentRunId = '{parent_run_id}'")
    records = []
    for run in runs:
        tags = run.data.tags
        if KIND_TAG in tags:
            continue
        records.append(TrialRecord(
            number=int(tags.get("asha_tune.trial_number", -1)),
            run_id=run.info.run_id,
            status=tags.get(STATUS_TAG, "unknown"),
            epochs=int(tags.get("asha_tune.epochs_run", run.data.metrics.get("epoch", 0))),
            values=json.loads(run.data.params.get("search", "{}")),
            metrics=dict(run.data.metrics),
        ))
    return sorted(records, key=lambda r: r.number)


def best_trial(records: list[TrialRecord], metric: str, mode: str) -> TrialRecord | None:
    """The best last-epoch value among trials that ran every epoch; else among all that ended.

    Trials that ASHA stopped after a few epochs are scored on fewer epochs, so they only
    compete when no trial ran the full budget.
    """
    scored = [r for r in records if r.status in ("completed", "pruned") and metric in r.metrics]
    full = [r for r in scored if r.status == "completed"]
    pool = full or scored
    if not pool:
        return None
    pick = max if mode == "max" else min
    return pick(pool, key=lambda r: r.metrics[metric])


def describe_best(best: TrialRecord | None, metric: str) -> str:
    """The final answer, by `best_trial`'s rule (a trial's last epoch, full-budget trials first)."""
    if best is None:
        return "no trial reported a result"
    rule = ("last epoch, among trials that ran every epoch" if best.status == "completed"
            else "last epoch; no trial ran every epoch, so among those stopped early")
    return (f"best trial {best.number}: {metric_text(metric, best.metrics[metric])} after "
            f"{count(best.epochs, 'epoch')} ({rule}); {values_text(best.values)}; MLflow run {best.run_id}")
