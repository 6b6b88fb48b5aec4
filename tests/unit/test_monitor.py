"""`asha-tune stop` and `status` on records alone (a real sqlite MLflow store, no driver): what
they say of a sweep whose driver is gone, is elsewhere, or never answers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from asha_tune.errors import AshaTuneError
from asha_tune.monitor import NotRunningError, status, stop
from tests.helpers.mlflow import mlflow_store


def running_sweep(tmp_path, driver=None, heartbeat=None):
    uri = mlflow_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("x")
    tags = {"asha_tune.sweep": "s", "asha_tune.status": "running"}
    if driver is not None:
        tags["asha_tune.driver"] = json.dumps(driver)
    if heartbeat is not None:
        tags["asha_tune.heartbeat"] = json.dumps(heartbeat)
    run_id = client.create_run(experiment, tags=tags).info.run_id
    return uri, client, run_id


def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass", "asha-tune"])
    gone.wait()
    return gone.pid


def test_stop_of_a_sweep_whose_driver_is_gone_is_one_line_that_offers_resume(tmp_path):
    here, pid = socket.gethostname(), dead_pid()
    uri, client, run_id = running_sweep(tmp_path, driver={"host": here, "pid": pid})
    with pytest.raises(NotRunningError) as err:
        stop("s", uri, tmp_path, wait_s=0)
    assert str(err.value) == (
        f"sweep s is recorded as running, but its driver is gone (pid {pid} on {here}): nothing to stop; "
        "asha-tune resume s continues it"
    )
    assert err.value.exit_code != 0
    assert "asha_tune.stop_requested" not in client.get_run(run_id).data.tags  # nothing asked
    lines = status("s", uri, tmp_path).lines
    assert lines[0] == "sweep s: recorded as running, but its driver is gone"


def test_stop_asks_a_driver_elsewhere_through_the_store(tmp_path):
    beat = {"at": time.time(), "host": "node-3", "pid": 42}
    uri, client, run_id = running_sweep(tmp_path, heartbeat=beat)
    said = stop("s", uri, tmp_path, wait_s=0)
    assert (
        said
        == f"sweep s: asked its driver to stop; asha-tune status s --tracking-uri {uri} tells when it has"
    )
    request = json.loads(client.get_run(run_id).data.tags["asha_tune.stop_requested"])
    assert request["by"].startswith(socket.gethostname())


def test_stop_says_so_when_the_driver_never_closes_the_records(tmp_path):
    beat = {"at": time.time(), "host": "node-3", "pid": 42}
    uri, _, _ = running_sweep(tmp_path, heartbeat=beat)
    with pytest.raises(AshaTuneError) as err:
        stop("s", uri, tmp_path, wait_s=1.5)
    assert str(err.value).startswith("asked sweep s to stop, but its records still say running after 2 s")


def test_a_store_that_does_not_answer_is_one_line_at_once(tmp_path):
    started = time.monotonic()
    with pytest.raises(AshaTuneError) as err:
        status("s", "http://127.0.0.1:9", tmp_path)  # nothing listens on port 9
    assert str(err.value).startswith("the MLflow tracking server at http://127.0.0.1:9 did not answer")
    assert "\n" not in str(err.value)
    assert time.monotonic() - started < 30


def test_stop_leaves_no_request_behind_when_the_driver_closes_its_records_after_clearing_it(tmp_path):
    """The driver removes the request it acted on, then closes its records: `stop`, polling in
    between, sees neither a request nor an ended sweep and asks again; that request is its own to
    remove once the records say interrupted (CI under load left it on the parent run)."""
    import threading

    beat = {"at": time.time(), "host": "node-3", "pid": 42}
    uri, client, run_id = running_sweep(tmp_path, heartbeat=beat)
    driver = MlflowClient(uri)

    def a_driver_elsewhere() -> None:
        while "asha_tune.stop_requested" not in driver.get_run(run_id).data.tags:
            time.sleep(0.05)
        driver.delete_tag(run_id, "asha_tune.stop_requested")  # Control.stop: the request it acted on
        time.sleep(2.5)  # Tune's graceful stop: stop polls, finds no request, asks again
        driver.set_tag(run_id, "asha_tune.status", "interrupted")  # records.close

    thread = threading.Thread(target=a_driver_elsewhere)
    thread.start()
    said = stop("s", uri, tmp_path, wait_s=30)
    thread.join()
    assert said.startswith("sweep s stopped: its records are closed as interrupted")
    assert "asha_tune.stop_requested" not in client.get_run(run_id).data.tags
