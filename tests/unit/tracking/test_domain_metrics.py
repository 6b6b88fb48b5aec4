"""Domain names in MLflow: `acc_Real World` as it is, names MLflow refuses mapped to safe keys,
and what a trial read (dataset, sources, class order, data path) recorded on its run."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from asha_tune.runner import run_logged_trial
from asha_tune.tracking import Tracker
from asha_tune.tracking.trials import log_constants
from asha_tune.trial import selection
from asha_tune.trial.config import Runtime
from tests.helpers.data import folder_config, make_domains
from tests.helpers.mlflow import mlflow_store


def test_mlflow_takes_a_domain_name_with_a_space_or_an_accent_and_refuses_a_plus(tmp_path):
    """Why metric_name exists: what MLflow itself accepts (a real store, not our regex)."""
    tracker = Tracker(mlflow_store(tmp_path / "mlflow.db"))
    run = tracker.start_run(tracker.experiment("names"), name="r")
    tracker.log_metrics(run, {"acc_Real World": 1.0, "acc_réel": 2.0}, step=1)
    assert set(MlflowClient(tracker.uri).get_run(run).data.metrics) == {"acc_Real World", "acc_réel"}
    with pytest.raises(MlflowException, match="Names may only contain"):
        tracker.log_metrics(run, {"acc_a+b": 1.0}, step=1)


def test_metric_names_of_domains():
    assert selection.domain_acc("Real World") == "acc_Real World"  # OfficeHome's, unchanged
    assert selection.domain_acc("a+b (2)") == "acc_a_b _2_"
    assert selection.size_key(selection.metric_name("val")) == "n_val_domain"  # never n_val's set
    with pytest.raises(ValueError, match=re.escape("domains 'a+b' and 'a&b' would both report as acc_a_b")):
        selection.check_metric_names(["a+b", "a&b"])


def test_a_trial_on_odd_domain_names_is_recorded_under_safe_keys(tmp_path):
    root = make_domains(tmp_path / "odd")
    shutil.move(root / "sketch", root / "sketch+")
    runtime = Runtime(data_root=root, cache_dir=tmp_path / "cache", device="cpu")
    config = folder_config(data={"targets": ["réel", "sketch+"]}, train={"epochs": 1})
    uri = mlflow_store(tmp_path / "mlflow.db")
    logged = run_logged_trial(config, runtime, tracking_uri=uri, checkpoint=tmp_path / "c.pt")
    run = MlflowClient(uri).get_run(logged.run_id)
    metrics, params = run.data.metrics, run.data.params
    assert {"acc_réel", "acc_réel_se", "acc_sketch_", "acc_sketch__se", "final_acc_sketch_"} <= set(metrics)
    assert {"n_réel", "n_sketch_", "chance_sketch_"} <= set(params)
    assert params["data.dataset"] == "folder"
    assert json.loads(params["data.source"]) == ["Real World", "clipart"]
    assert json.loads(params["classes"]) == ["bird", "chien à poils", "grand chat"]
    assert params["data_path"] == "memory"


def test_a_resumed_trial_keeps_the_data_path_of_its_first_attempt(tmp_path):
    """A machine's choice: another attempt may stream where the first fit in memory, and an MLflow
    param cannot change (logging it again with another value would fail the trial)."""
    tracker = Tracker(mlflow_store(tmp_path / "mlflow.db"))
    run = tracker.start_run(tracker.experiment("path"), name="r")
    log_constants(tracker, run, {"data_path": "memory", "n_val": 7, "split_hash": "ab"})
    log_constants(tracker, run, {"data_path": "stream", "n_val": 7, "split_hash": "ab"})
    assert tracker.params(run) == {"data_path": "memory", "n_val": "7", "split_hash": "ab"}
    with pytest.raises(MlflowException):  # the split, by contrast, never changes within a run
        log_constants(tracker, run, {"data_path": "stream", "split_hash": "cd"})
