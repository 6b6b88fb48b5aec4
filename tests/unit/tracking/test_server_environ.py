"""MLflow servers asha-tune starts run without MLflow 3's job runner, unless the user turns it on."""

from __future__ import annotations

from pathlib import Path

from asha_tune.tracking.client import server_environ

REPO = Path(__file__).resolve().parents[3]


def test_the_job_runner_is_off_unless_the_environment_says_otherwise():
    assert server_environ({"PATH": "/bin"}) == {"PATH": "/bin", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    assert server_environ({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"}) == {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"
    }


def test_the_deployed_tracking_server_turns_it_off_too():
    entrypoint = (REPO / "deploy" / "tracking" / "mlflow-entrypoint.sh").read_text()
    export = 'export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"'
    assert entrypoint.index(export) < entrypoint.index("exec mlflow server")
