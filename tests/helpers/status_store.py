"""A store with sweeps of every shape `status` and `list` read, written by MLflow itself (its client
and asha-tune's Tracker): what tests compare tracking/reader.py against MLflow's own reading of."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from mlflow.tracking import MlflowClient

from asha_tune.spaces import load_space
from asha_tune.tracking import Tracker
from asha_tune.tracking.sweep_state import MlflowRecords, SweepRecords, sweep_state, top_sweeps
from tests.helpers.records import Trial, parent, replicated, trials

SWEEPS = ["plain", "search", "live"]  # the sweeps of `sweeps_in`, by name


def space() -> dict:
    """A real space, as launch records it (space.json: status counts its trials from it)."""
    return load_space("random_layers").model_dump(mode="json")


def sweeps_in(uri: str) -> None:
    """`plain` (finished: completed, pruned and failed trials, a NaN metric, a confirmation nested
    under it, a deleted run), `search` (a replicated search of two replicates), `live` (running,
    written through the Tracker as the driver writes: started_at, a running trial, GPU use), and a
    sweep in a deleted experiment, that no search sees."""
    client = MlflowClient(uri)
    experiment = client.create_experiment("status")
    epochs = [{"val_acc": 50.0, "val_acc_se": 3.0}, {"val_acc": 55.0, "val_acc_se": 2.5}]
    plain = parent(client, experiment, "plain", space(), tags={"asha_tune.results_dir": "/r/plain"})
    client.log_metric(plain, "best_val_acc", 55.0)
    made = [Trial({"train.lr": 0.1}, "completed", epochs), Trial({"train.lr": 0.2}, "pruned", epochs[:1])]
    made.append(Trial({"train.lr": 0.3}, "failed", [{"val_acc": math.nan}]))
    ids = trials(client, experiment, plain, made)
    client.set_tag(ids[2], "asha_tune.failure", "RuntimeError: CUDA out of memory")
    client.set_tag(ids[0], "asha_tune.duration_s", "12.5")
    client.create_run(experiment, tags={"mlflow.parentRunId": plain, "asha_tune.kind": "confirmation"})
    gone = client.create_run(experiment, tags={"mlflow.parentRunId": plain, "asha_tune.trial_number": "7"})
    client.delete_run(gone.info.run_id)
    replicated(client, experiment, "search", space(), [made[:2], made[:1]])

    tracker = Tracker(uri)
    live = tracker.start_run(
        experiment,
        "live",
        params={"search": {"num_trials": 5, "max_concurrent": 2}, "scheduler": {"metric": "val_acc"}},
        tags={"asha_tune.sweep": "live", "asha_tune.driver": json.dumps({"host": "node-1", "pid": 7})},
    )
    for number in range(3):
        trial = tracker.start_run(
            experiment,
            f"trial-{number}",
            tags={"asha_tune.trial_number": str(number), "asha_tune.started_at": "1000.0"},
            parent_run_id=live,
        )
        metrics = [("val_acc", 40.0 + e + number, e, 1000 + e) for e in (1, 2)]
        metrics += [("gpu_utilization_percent", 80.0 + number, 2, 1002), ("val_acc_se", math.inf, 2, 1002)]
        tracker.write(trial, metrics=metrics)
        if number < 2:
            tracker.write(trial, tags={"asha_tune.duration_s": f"{10 + number}"})
            tracker.finish(trial, "completed")

    old = client.create_experiment("old")
    parent(client, old, "gone", space())
    client.delete_experiment(old)


def mlflow_records(uri: str) -> MlflowRecords:
    return MlflowRecords(Tracker(uri))


def _nan_free(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"  # so that NaN read one way equals NaN read the other
    if isinstance(value, dict):
        return {k: _nan_free(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_free(v) for v in value]
    return value


def every_state(records: SweepRecords) -> list[Any]:
    """The sweeps listed (their parent runs) and every sweep's state, as plain data."""
    listed = [asdict(r) for r in top_sweeps(records)]
    return _nan_free([listed, *(asdict(sweep_state(records, name)) for name in SWEEPS)])
