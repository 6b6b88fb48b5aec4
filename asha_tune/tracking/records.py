"""A trial's MLflow run read back as a record: what reports and comparisons are computed from.

Reports read stored records, never a running sweep's memory (STYLE.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from asha_tune.tracking.client import Tracker
from asha_tune.tracking.tags import EPOCHS_RUN_TAG, KIND_TAG, STATUS_TAG, TRIAL_NUMBER_TAG
from asha_tune.trial.selection import CHANCE_PREFIX, SIZE_PREFIX


@dataclass(frozen=True)
class TrialRecord:
    number: int
    run_id: str
    status: str  # completed | pruned | failed | running | interrupted
    epochs: int
    values: dict[str, Any]
    metrics: dict[str, float]  # the last value of every metric
    constants: dict[str, float] = field(default_factory=dict)  # n_<set>, chance_<set> (logged as params)


def constants_from_params(params: dict[str, Any]) -> dict[str, float]:
    """n_<set> and chance_<set> as numbers (MLflow keeps params as strings)."""
    out = {}
    for key, value in params.items():
        if key.startswith((SIZE_PREFIX, CHANCE_PREFIX)):
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                pass
    return out


def sweep_trials(tracker: Tracker, experiment_id: str, parent_run_id: str) -> list[TrialRecord]:
    """The sweep's trial runs; runs nested under it that are not trials (a confirmation's parent
    run, tagged with its kind) are left out."""
    runs = tracker.find_runs(experiment_id, f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return sorted(
        (trial_record(run) for run in runs if KIND_TAG not in run.data.tags), key=lambda r: r.number
    )


def trial_record(run: Any) -> TrialRecord:
    """A trial's MLflow run as a TrialRecord (an MLflow Run object)."""
    tags, params = run.data.tags, run.data.params
    return TrialRecord(
        number=int(tags.get(TRIAL_NUMBER_TAG, -1)),
        run_id=run.info.run_id,
        status=tags.get(STATUS_TAG, "unknown"),
        epochs=int(tags.get(EPOCHS_RUN_TAG, run.data.metrics.get("epoch", 0))),
        values=json.loads(params.get("search", "{}")),
        metrics=dict(run.data.metrics),
        constants=constants_from_params(params),
    )
