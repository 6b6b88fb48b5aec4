"""A sweep's state read back from a real sqlite MLflow store: the narrow SQL read of its trials
(tracking/reader.py, without MLflow) gives the rows MLflow's search gives, and only its trials."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from asha_tune.tracking import Tracker
from asha_tune.tracking.reader import SqlRecords, open_records
from asha_tune.tracking.sweep_state import (
    MlflowRecords,
    latest_sweep,
    state_of,
    sweep_state,
    top_sweeps,
)
from tests.helpers.mlflow import mlflow_store


def a_store(tmp_path):
    """Sweep `a` (4 trials: completed, pruned, failed, running; a nested confirmation; a deleted
    run), then sweep `b` launched after it, and a replicate of b's that is no sweep of its own."""
    uri = mlflow_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("x")
    a = client.create_run(
        experiment, run_name="a", tags={"asha_tune.sweep": "a", "asha_tune.status": "running"}
    )
    aid = a.info.run_id
    client.log_param(aid, "search.num_trials", "6")
    for number, status in enumerate(("completed", "pruned", "failed", "running")):
        tags = {
            "mlflow.parentRunId": aid,
            "asha_tune.trial_number": str(number),
            "asha_tune.status": status,
            "asha_tune.started_at": "1000.5",
            "asha_tune.params_hash": "not read",
        }
        if status != "running":
            tags["asha_tune.duration_s"] = str(10.0 * (number + 1))
        if status == "failed":
            tags["asha_tune.failure"] = "ValueError: boom"
        run_id = client.create_run(experiment, tags=tags).info.run_id
        client.log_metric(run_id, "val_acc", 50.0 + number, step=1)
        client.log_metric(run_id, "val_acc", 60.0 + number, step=2)  # the last value is read
        client.log_metric(run_id, "val_acc_se", 2.0, step=2)
        client.log_metric(run_id, "train_loss", 1.0, step=2)  # not read
        if status != "running":
            client.set_terminated(run_id, "FINISHED" if status != "failed" else "FAILED")
    client.create_run(experiment, tags={"mlflow.parentRunId": aid, "asha_tune.kind": "confirmation"})
    deleted = client.create_run(experiment, tags={"mlflow.parentRunId": aid, "asha_tune.trial_number": "9"})
    client.delete_run(deleted.info.run_id)
    b = client.create_run(
        experiment, run_name="b", tags={"asha_tune.sweep": "b", "asha_tune.status": "completed"}
    )
    client.create_run(
        experiment,
        tags={"asha_tune.sweep": "b-r1", "asha_tune.kind": "replicate", "asha_tune.replicate_of": "b"},
    )
    return uri, experiment, aid, b.info.run_id


def trial_rows(records, experiment, parent, metrics):
    return sorted(records.trial_rows(experiment, parent, metrics), key=lambda r: (r.number, r.run_id))


def test_the_sql_read_gives_the_rows_mlflows_search_gives(tmp_path):
    uri, experiment, aid, _ = a_store(tmp_path)
    metrics = ["val_acc", "val_acc_se", "gpu_utilization_percent"]
    light = open_records(uri)
    assert isinstance(light, SqlRecords)  # the narrow read is the one compared
    fast = trial_rows(light, experiment, aid, metrics)
    searched = trial_rows(MlflowRecords(Tracker(uri)), experiment, aid, metrics)
    assert fast == searched
    assert [(r.number, r.status) for r in fast] == [
        (0, "completed"),
        (1, "pruned"),
        (2, "failed"),
        (3, "running"),
    ]
    assert fast[2].failure == "ValueError: boom"
    assert fast[0].failure is None
    assert [r.duration_s for r in fast] == [10.0, 20.0, 30.0, None]
    assert fast[0].started_s == 1000.5
    assert fast[3].ended_ms is None
    assert fast[0].ended_ms is not None
    assert fast[1].metrics == {"val_acc": 61.0, "val_acc_se": 2.0}


def test_a_sweeps_state_counts_its_space_and_its_trials_only(tmp_path):
    uri, _, aid, _ = a_store(tmp_path)
    state = sweep_state(open_records(uri), "a")
    assert state.run_id == aid
    assert state.status == "running"
    assert state.num_trials == 6
    assert len(state.trials) == 4


def test_sweeps_are_listed_newest_first_without_their_replicates(tmp_path):
    uri, _, aid, bid = a_store(tmp_path)
    for records in (open_records(uri), MlflowRecords(Tracker(uri))):
        assert [r.run_id for r in top_sweeps(records)] == [bid, aid]
        assert latest_sweep(records).run_id == bid
        assert state_of(records, latest_sweep(records), with_trials=False).trials == []
