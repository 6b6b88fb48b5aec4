"""MLflow records through Tracker, on a real sqlite store: experiments, nested runs, params,
metrics and how asha-tune's statuses map onto MLflow's."""

from __future__ import annotations

import json

import pytest
import requests
from mlflow.tracking import MlflowClient

from asha_tune.dotted import flatten
from asha_tune.errors import ConfigError
from asha_tune.tracking import Tracker
from asha_tune.tracking.client import _unreachable, local_store
from asha_tune.tracking.tags import FAILURE_TAG, STATUS_TAG
from tests.helpers import records
from tests.helpers.mlflow import mlflow_store
from tests.helpers.records import Trial, read_sweep


@pytest.fixture
def store(tmp_path):
    uri = mlflow_store(tmp_path / "records" / "mlflow.db")
    return Tracker(uri), MlflowClient(uri)


def test_flatten_makes_dotted_names():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}


def test_local_store_is_the_sqlite_file_or_none_for_a_server(tmp_path):
    assert local_store(f"sqlite:///{tmp_path}/m.db") == tmp_path / "m.db"
    assert local_store("http://127.0.0.1:5000") is None


def test_a_sqlite_store_writes_ahead_and_a_reader_in_another_process_sees_every_commit(store, tmp_path):
    """WAL and synchronous NORMAL (files.sqlite_write_ahead): no disk sync per commit, so a trial's
    records cost less; what was committed is there for another connection, as before."""
    import sqlite3
    import subprocess
    import sys

    tracker, _ = store
    experiment = tracker.experiment("wal")
    run = tracker.start_run(experiment, "trial-000")
    tracker.write(run, metrics=[("val_acc", 50.0, 1, 1000)])
    db = tmp_path / "records" / "mlflow.db"
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    Tracker(tracker.uri)  # a second Tracker on the same store: the pragmas are set once per engine
    read = "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from metrics').fetchone()[0])"
    out = subprocess.run([sys.executable, "-c", read, str(db)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_an_experiment_is_created_once_with_artifacts_beside_the_store(store, tmp_path):
    tracker, client = store
    first = tracker.experiment("space-a")
    assert tracker.experiment("space-a") == first
    assert tracker.experiment("space-b") != first
    location = client.get_experiment(first).artifact_location
    assert location == (tmp_path / "records" / "mlartifacts" / "space-a").as_uri()


def test_runs_nest_and_params_are_flat_with_lists_as_json(store):
    tracker, client = store
    experiment = tracker.experiment("e")
    parent = tracker.start_run(experiment, "sweep")
    params = {"shaping": {"convs": [1, 7], "p0": 0.7}, "train": {"epochs": 30}}
    params.update({f"extra.p{i}": i for i in range(250)})  # more than one batch of 100
    child = tracker.start_run(experiment, "trial-0", params=params, tags={"k": "v"}, parent_run_id=parent)
    run = client.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["k"] == "v"
    assert run.data.tags[STATUS_TAG] == "running"
    assert json.loads(run.data.params["shaping.convs"]) == [1, 7]
    assert run.data.params["shaping.p0"] == "0.7"
    assert run.data.params["train.epochs"] == "30"
    assert len(run.data.params) == 253
    assert [
        r.info.run_id for r in tracker.find_runs(experiment, f"tags.mlflow.parentRunId = '{parent}'")
    ] == [child]


def test_metrics_keep_their_step_and_skip_what_is_not_a_number(store):
    tracker, client = store
    run = tracker.start_run(tracker.experiment("e"), "t")
    tracker.log_metrics(run, {"val_acc": 50.0, "epoch": 1, "note": "text", "flag": None}, step=1)
    tracker.log_metrics(run, {"val_acc": 60.0, "epoch": 2}, step=2)
    assert [(m.step, m.value) for m in client.get_metric_history(run, "val_acc")] == [(1, 50.0), (2, 60.0)]
    assert set(client.get_run(run).data.metrics) == {"val_acc", "epoch"}
    assert tracker.logged_steps(run, "val_acc") == {1, 2}


@pytest.mark.parametrize(
    ("status", "mlflow_status"),
    [("completed", "FINISHED"), ("pruned", "FINISHED"), ("failed", "FAILED"), ("interrupted", "KILLED")],
)
def test_statuses_map_onto_mlflow_and_a_run_can_be_reopened(store, status, mlflow_status):
    tracker, client = store
    run = tracker.start_run(tracker.experiment("e"), "t")
    tracker.finish(run, status, {FAILURE_TAG: "why"} if status == "failed" else None)
    info = client.get_run(run)
    assert info.info.status == mlflow_status
    assert tracker.status(run) == status
    assert (info.data.tags.get(FAILURE_TAG) == "why") == (status == "failed")
    tracker.reopen(run)
    assert client.get_run(run).info.status == "RUNNING"
    assert tracker.status(run) == "running"


def test_the_epoch_metric_list_names_what_trials_report():
    from asha_tune.tracking.tags import EPOCH_METRICS, is_epoch_metric
    from asha_tune.trial import selection

    for name in (
        selection.VAL_ACC,
        selection.TARGET_ACC,
        selection.se_key(selection.VAL_ACC),
        selection.domain_acc("cartoon"),
        selection.se_key(selection.domain_acc("cartoon")),
    ):
        assert is_epoch_metric(name), name
    assert "time_train" in EPOCH_METRICS
    for ray_or_stamp in ("time_this_iter_s", "timestamp", "training_iteration", "at_report", "n_val"):
        assert not is_epoch_metric(ray_or_stamp)


def test_every_search_reads_every_page(store):
    """MLflow answers a search one page at a time: a sweep larger than a page is read whole (the
    page made small here, so that 30 runs span five pages), and so are the sweeps and experiments
    a store holds."""
    from asha_tune.tracking.client import PAGE_SIZE
    from asha_tune.tracking.records import find_parent, sweep_trials
    from asha_tune.tracking.tags import SWEEP_TAG, TRIAL_NUMBER_TAG

    tracker, client = store
    assert 1000 <= Tracker.page_size == PAGE_SIZE <= 50_000  # MLflow's server takes up to 50,000
    tracker.page_size = 7
    experiment = tracker.experiment("e")
    parent = tracker.start_run(experiment, "big", tags={SWEEP_TAG: "big"})
    for i in range(30):
        tracker.start_run(experiment, f"trial-{i}", tags={TRIAL_NUMBER_TAG: str(i)}, parent_run_id=parent)
    nested = f"tags.mlflow.parentRunId = '{parent}'"
    assert len(client.search_runs([experiment], nested, max_results=7)) == 7  # one page is not all
    assert len(tracker.child_runs(experiment, parent)) == 30
    assert [r.number for r in sweep_trials(tracker, experiment, parent)] == list(range(30))
    for k in range(8):
        tracker.start_run(tracker.experiment(f"space-{k}"), f"s{k}", tags={SWEEP_TAG: f"s{k}"})
    assert len(tracker.experiment_ids()) == 10  # Default, e and eight more: two pages
    assert find_parent(tracker, "s7").info.run_id  # found in the last experiment
    with pytest.raises(ConfigError) as err:
        find_parent(tracker, "nowhere")
    assert str(err.value).endswith(f"(sweeps there: big, {', '.join(f's{k}' for k in range(8))})")


def _raised(make):
    try:
        make()
    except Exception as err:
        return err
    raise AssertionError("nothing raised")


def _refused():
    raise requests.exceptions.ConnectionError("NewConnectionError: [Errno 111] Connection refused")


def _wrapped_once():
    try:
        _refused()
    except Exception as err:  # MLflow's way: its own error while handling requests'
        raise RuntimeError(f"API request failed with exception {err}")  # noqa: B904


def _wrapped_twice():
    try:
        _wrapped_once()
    except Exception as err:
        raise RuntimeError("the sweep's records could not be written") from err


def test_a_server_that_does_not_answer_is_recognised_however_deep_its_error_is_wrapped():
    assert _unreachable(_raised(_refused)) == "connection refused"
    assert _unreachable(_raised(_wrapped_once)) == "connection refused"
    assert _unreachable(_raised(_wrapped_twice)) == "connection refused"
    assert _unreachable(_raised(lambda: 1 / 0)) is None
    looped = RuntimeError("a loop")
    looped.__context__ = RuntimeError("inner")
    looped.__context__.__context__ = looped  # a chain that loops back still ends
    assert _unreachable(looped) is None


def test_a_sweeps_mean_gpu_use_is_over_every_epoch_its_trials_logged(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    on_gpu = [
        Trial({"p": 1}, epochs=[{"val_acc": 50.0, "gpu_utilization_percent": u} for u in (40.0, 60.0)]),
        Trial({"p": 2}, status="pruned", epochs=[{"val_acc": 40.0, "gpu_utilization_percent": 80.0}]),
    ]
    records.trials(client, experiment, records.parent(client, experiment, "gpu", {}), on_gpu)
    on_cpu = [Trial({"p": 1}, epochs=[{"val_acc": 50.0, "system_cpu_percent": 99.0}])]
    records.trials(client, experiment, records.parent(client, experiment, "cpu", {}), on_cpu)
    tracker = Tracker(uri)
    gpu = read_sweep(tracker, "gpu")
    assert sorted(t.gpu_use for t in gpu.trials) == [(40.0, 60.0), (80.0,)]
    assert gpu.gpu_percent == 60.0  # (40 + 60 + 80) / 3: every epoch counts once
    assert read_sweep(tracker, "cpu").gpu_percent is None
