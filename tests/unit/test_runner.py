"""One trial outside Ray (`asha-tune trial`'s Python API): its MLflow run, its tags and how an
epoch is logged; on synthetic PACS and a real sqlite store."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from asha_tune.runner import run_logged_trial
from asha_tune.tracking import Tracker
from asha_tune.tracking.tags import ADAPTATION_TAG, SELECTION_IMAGES_TAG, STATUS_TAG
from asha_tune.tracking.trials import log_epoch, trial_tags
from asha_tune.trial.config import TrialConfig
from tests.helpers.mlflow import mlflow_store

TINY = {
    "data": {"targets": ["cartoon"], "image_size": 32},
    "train": {"epochs": 2, "batch_size": 8, "weights": "none"},
}


def test_only_modes_that_see_target_images_say_which():
    random = trial_tags(
        TrialConfig.model_validate(
            {"shaping": {"mode": "random", "convs": [1], "p0": 0.5}, "data": {"targets": ["cartoon"]}}
        )
    )
    assert ADAPTATION_TAG not in random  # every run says what selection saw; only these adapt
    assert random[SELECTION_IMAGES_TAG] == "labelled target images (cartoon): the reported ones themselves"
    tags = trial_tags(
        TrialConfig.model_validate({"shaping": {"mode": "bn_only"}, "data": {"targets": ["sketch"]}})
    )
    assert tags[ADAPTATION_TAG].startswith("transductive: all images of sketch")


def test_an_epoch_logs_its_constants_once_as_params_and_the_rest_as_metrics(tmp_path):
    tracker = Tracker(mlflow_store(tmp_path / "mlflow.db"))
    run = tracker.start_run(tracker.experiment("e"), "t")
    for epoch, acc in ((1, 40.0), (2, 45.0)):
        log_epoch(
            tracker,
            run,
            {"epoch": epoch, "val_acc": acc, "n_val": 70, "chance_val": 14.29, "split_hash": "ab12"},
        )
    data = MlflowClient(tracker.uri).get_run(run).data
    assert data.params == {"n_val": "70", "chance_val": "14.29", "split_hash": "ab12"}
    assert set(data.metrics) == {"epoch", "val_acc"}
    assert data.metrics["val_acc"] == 45.0


def test_a_logged_trial_is_one_finished_run_with_its_config_and_final_metrics(tiny_runtime, tmp_path):
    config = TrialConfig.model_validate({**TINY, "shaping": {"mode": "random", "convs": [1], "p0": 0.5}})
    uri = mlflow_store(tmp_path / "mlflow.db")
    logged = run_logged_trial(config, tiny_runtime, tracking_uri=uri, checkpoint=tmp_path / "c.pt")
    run = MlflowClient(uri).get_run(logged.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[STATUS_TAG] == "completed"
    assert run.data.tags["asha_tune.fingerprint"] == config.fingerprint()
    assert run.data.params["shaping.p0"] == "0.5"
    assert json.loads(run.data.params["shaping.convs"]) == [1]
    assert run.data.metrics["final_target_acc"] == logged.result.final["target_acc"]
    assert json.loads((tmp_path / "c.json").read_text()) == {"mlflow_run_id": logged.run_id}
    history = MlflowClient(uri).get_metric_history(logged.run_id, "target_acc")
    assert [m.step for m in history] == [1, 2]


def test_a_logged_trial_records_the_device_it_used(tiny_runtime, tmp_path):
    config = TrialConfig.model_validate(TINY)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logged = run_logged_trial(config, tiny_runtime, tracking_uri=uri, checkpoint=tmp_path / "c.pt")
    run = MlflowClient(uri).get_run(logged.run_id)
    assert run.data.params["device"] == "cpu"
    assert "asha_tune.resumed_on_device" not in run.data.tags


def test_a_resume_on_another_device_keeps_the_first_as_a_param_and_tags_the_new_one(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = tracker.start_run(tracker.experiment("e"), "t")
    tracker.log_device(run, "cpu")
    tracker.log_device(run, "cpu")  # the same device again: nothing changes, no error
    tracker.log_device(run, "cuda:0 NVIDIA H200")  # `resume --device cuda`
    data = MlflowClient(tracker.uri).get_run(run).data
    assert data.params == {"device": "cpu"}
    assert data.tags["asha_tune.resumed_on_device"] == "cuda:0 NVIDIA H200"
