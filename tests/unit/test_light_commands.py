"""The commands that only read or check (help, spaces, a dry run, compare, report) start in a fraction
of a second: they import neither torch nor Ray (report not Optuna either; status and list not even
MLflow). Each runs in a fresh interpreter that reports what it
imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from asha_tune.tracking.tags import EPOCHS_RUN_TAG, STATUS_TAG, SWEEP_TAG, TRIAL_NUMBER_TAG
from tests.helpers.mlflow import mlflow_store

HEAVY = ("torch", "torchvision", "ray")
PROBE = """
import contextlib, io, json, sys
from asha_tune.cli import main
out = io.StringIO()
try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(json.loads(sys.argv[1]))
except SystemExit as exit_:
    code = exit_.code
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted({m.split('.')[0] for m in sys.modules})}))
"""


def run(argv: list[str], cwd) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def a_sweep_in(store: str) -> None:
    """One finished sweep with two trials, as launch records it (enough for compare to read)."""
    client = MlflowClient(tracking_uri=store)
    experiment = client.create_experiment("light")
    parent = client.create_run(experiment, run_name="s", tags={SWEEP_TAG: "s", STATUS_TAG: "completed"})
    pid = parent.info.run_id
    client.log_param(pid, "selection.protocol", "source_val")
    client.log_param(pid, "search.algorithm", "optuna")
    for number, (val, acc) in enumerate(((50.0, 40.0), (60.0, 45.0))):
        tags = {
            "mlflow.parentRunId": pid,
            TRIAL_NUMBER_TAG: str(number),
            STATUS_TAG: "completed",
            EPOCHS_RUN_TAG: "2",
        }
        run_id = client.create_run(experiment, run_name=f"trial-{number}", tags=tags).info.run_id
        client.log_param(run_id, "search", json.dumps({"shaping.p0": 0.1 * number}))
        for key, value in {"val_acc": val, "acc_cartoon": acc, "time_train": 1.0, "time_eval": 0.5}.items():
            client.log_metric(run_id, key, value, step=2)
        client.set_terminated(run_id, "FINISHED")
    client.set_terminated(pid, "FINISHED")


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["trial", "--help"],
        ["spaces"],
        ["launch", "--space", "random_layers", "--dry-run"],
        ["launch", "--space", "paper_grid", "--dry-run"],
    ],
    ids=["help", "trial-help", "spaces", "dry-run", "dry-run-grid"],
)
def test_a_light_command_imports_neither_torch_nor_ray(argv, tmp_path):
    result = run(argv, tmp_path)
    assert result["code"] == 0, result["out"]
    assert result["out"].strip()  # it did its work
    assert not set(HEAVY) & set(result["modules"]), set(HEAVY) & set(result["modules"])


def test_compare_imports_neither_torch_nor_ray(tmp_path):
    store = mlflow_store(tmp_path / "mlflow.db")
    a_sweep_in(store)
    result = run(["compare", "s", "--tracking-uri", store, "--out", str(tmp_path / "out")], tmp_path)
    assert result["code"] == 0, result["out"]
    assert "== target cartoon" in result["out"]
    assert (tmp_path / "out" / "comparison.csv").is_file()
    assert "mlflow" in result["modules"]  # it did read the store
    assert not set(HEAVY) & set(result["modules"]), set(HEAVY) & set(result["modules"])


def test_report_imports_neither_torch_nor_ray_nor_optuna(tmp_path):
    store = mlflow_store(tmp_path / "mlflow.db")
    a_sweep_in(store)
    page = tmp_path / "s.html"
    result = run(["report", "s", "--tracking-uri", store, "--out", str(page)], tmp_path)
    assert result["code"] == 0, result["out"]
    assert "s: target cartoon · selection source_val" in result["out"]
    assert page.is_file()
    assert {"mlflow", "plotly", "jinja2"} <= set(result["modules"])  # it read the store, drew, wrote
    assert not {*HEAVY, "optuna"} & set(result["modules"]), {*HEAVY, "optuna"} & set(result["modules"])


def test_the_python_api_is_there_and_importing_the_package_stays_light(tmp_path):
    probe = (
        "import sys, asha_tune; light = not {'torch', 'ray'} & {m.split('.')[0] for m in sys.modules}; "
        "from asha_tune import launch, resume, confirm, run_trial, load_space, SweepSettings, run_compare, run_report; "
        "print(light, launch.__module__, run_trial.__module__, confirm.__module__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.stdout.split() == [
        "True",
        "asha_tune.api",
        "asha_tune.trial.training",
        "asha_tune.api",
    ], done.stderr


def test_status_and_list_import_no_mlflow_and_stop_neither_torch_nor_ray_nor_optuna(tmp_path):
    store = mlflow_store(tmp_path / "mlflow.db")
    a_sweep_in(store)
    heavy = {*HEAVY, "optuna"}
    status = run(["status", "s", "--tracking-uri", store], tmp_path)
    assert status["code"] == 0, status["out"]
    assert status["out"].startswith("sweep s: finished\n")
    listed = run(["list", "--tracking-uri", store, "--json"], tmp_path)
    assert listed["code"] == 0, listed["out"]
    assert [s["name"] for s in json.loads(listed["out"])["sweeps"]] == ["s"]
    stop = run(["stop", "s", "--tracking-uri", store], tmp_path)
    assert stop["code"] == 1
    assert (
        stop["out"].strip() == "asha-tune stop: error: sweep s is not running (it finished): nothing to stop"
    )
    for result in (status, listed):  # read MLflow's tables without MLflow (tracking/reader.py)
        assert not {*heavy, "mlflow", "sqlalchemy", "alembic"} & set(result["modules"])
    assert "mlflow" in stop["modules"]  # stop writes through MLflow
    assert not heavy & set(stop["modules"])
