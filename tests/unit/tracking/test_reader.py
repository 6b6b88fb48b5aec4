"""tracking/reader.py, the records `status` and `list` read without MLflow: on a real sqlite store
written by MLflow it gives what MLflow's own search gives; a store whose schema it does not know
is read through MLflow instead. (Over a real `mlflow server`: tests/integration/test_status_store.py.)"""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from asha_tune.errors import AshaTuneError
from asha_tune.monitor import status, sweeps
from asha_tune.spaces import load_space
from asha_tune.tracking import reader
from asha_tune.tracking.reader import SqlRecords, open_records
from asha_tune.tracking.sweep_state import MlflowRecords, state_of, sweep_state
from tests.helpers.mlflow import _template, mlflow_store
from tests.helpers.status_store import every_state, mlflow_records, sweeps_in


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    uri = mlflow_store(tmp_path_factory.mktemp("reader") / "mlflow.db")
    sweeps_in(uri)
    return uri


def test_the_sqlite_reader_gives_what_mlflow_gives(store):
    light = open_records(store)
    assert isinstance(light, SqlRecords)
    assert every_state(light) == every_state(mlflow_records(store))


def test_what_the_store_holds_is_read_whole(store):
    """The equivalence above is of something: every shape is there, as written."""
    light = open_records(store)
    plain = sweep_state(light, "plain")
    assert [t.status for t in plain.trials] == ["completed", "pruned", "failed"]  # no confirmation
    assert plain.num_trials == load_space("random_layers").num_trials == 60  # from its space.json
    assert plain.trials[2].failure == "RuntimeError: CUDA out of memory"
    assert plain.trials[2].metrics["val_acc"] != plain.trials[2].metrics["val_acc"]  # NaN
    assert plain.metrics == {"best_val_acc": 55.0}
    search = sweep_state(light, "search")
    assert [len(r.trials) for r in search.replicates] == [2, 1]
    live = sweep_state(light, "live")
    assert live.num_trials == 5  # no space.json: the param launch logged
    assert [t.status for t in live.trials] == ["completed", "completed", "running"]
    assert live.trials[2].metrics["gpu_utilization_percent"] == 82.0
    with pytest.raises(AshaTuneError) as err:
        sweep_state(light, "gone")  # its experiment is deleted
    assert str(err.value) == f"no sweep named gone in {store} (sweeps there: live, plain, search)"


def steady(record: dict) -> dict:
    """A status record without what moves on between two reads of a running sweep."""
    out = {k: v for k, v in record.items() if k not in ("elapsed_s", "eta_s")}
    if "replicates" in out:
        out["replicates"] = [steady(r) for r in out["replicates"]]
    if "sweeps" in out:
        out["sweeps"] = [steady(r) for r in out["sweeps"]]
    return out


def test_status_and_list_say_the_same_through_either_reader(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = ("plain", "search", "live")
    light = [steady(status(name, store, tmp_path).record) for name in names]
    listed = steady(sweeps(store).record)
    monkeypatch.setattr(reader, "KNOWN_SCHEMAS", frozenset())  # every store read through MLflow
    assert isinstance(open_records(store), MlflowRecords)
    assert [steady(status(name, store, tmp_path).record) for name in names] == light
    assert steady(sweeps(store).record) == listed
    assert [s["name"] for s in listed["sweeps"]] == ["live", "search", "plain"]


def test_the_installed_mlflows_schema_is_one_the_reader_knows():
    """A new MLflow brings a new migration: check the reader's queries against it, then add its
    revision to KNOWN_SCHEMAS (until then its stores are read through MLflow, slowly)."""
    with sqlite3.connect(_template()) as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision in reader.KNOWN_SCHEMAS


def test_a_store_of_a_schema_it_does_not_know_is_read_through_mlflow(store, tmp_path):
    """A newer MLflow's migration: not read by the light reader; MLflow says what it says of it,
    in one line."""
    copy = tmp_path / "newer.db"
    shutil.copyfile(store.removeprefix("sqlite:///"), copy)
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    uri = f"sqlite:///{copy}"
    with pytest.raises(AshaTuneError) as err:
        status("plain", uri, tmp_path)
    line = str(err.value)
    assert line.startswith(f"MLflow cannot open the store {uri} (Detected out-of-date database schema")
    assert "found version ffffffffffff" in line  # MLflow's own word on it, as before this reader
    assert "\n" not in line


def test_an_experiment_without_sweeps_and_a_sweep_without_trials(tmp_path):
    uri = mlflow_store(tmp_path / "mlflow.db")
    records = open_records(uri)
    assert records.sweep_runs() == []
    with pytest.raises(AshaTuneError, match="it holds no sweep"):
        sweep_state(records, "x")
    tracker = mlflow_records(uri).tracker
    experiment = tracker.experiment("e")
    tracker.start_run(experiment, "x", tags={"asha_tune.sweep": "x"})
    (run,) = open_records(uri).sweep_runs("x")
    assert state_of(open_records(uri), run).trials == []
