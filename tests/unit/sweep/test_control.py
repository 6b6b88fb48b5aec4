"""The driver's heartbeat and `asha-tune stop`'s request, through a real sqlite MLflow store (no
Ray: the driver's thread is started by hand, and the SIGINT it sends is caught here)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from asha_tune.sweep import control
from asha_tune.sweep.control import Control, driver_seen, request_stop
from asha_tune.tracking import Tracker
from tests.helpers.mlflow import mlflow_store


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """A replicated search's run and its replicate's, the driver's thread turning every 0.1 s."""
    monkeypatch.setattr(control, "POLL_S", 0.1)
    monkeypatch.setattr(control, "HEARTBEAT_S", 0.2)
    uri = mlflow_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("x")
    search = client.create_run(experiment).info.run_id
    replicate = client.create_run(experiment).info.run_id
    settings = SimpleNamespace(tracking_uri=uri, run_id=replicate, replicate_of="s", nested_under=search)
    return Tracker(uri), settings, search, replicate


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_driver_heartbeats_on_its_run_and_its_searchs_and_ignores_a_request_it_did_not_get(runs):
    tracker, settings, search, replicate = runs
    request_stop(tracker, replicate)  # left by a stop for a driver before this one
    driver = Control(settings)
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        driver.start()
        assert wait_until(lambda: "asha_tune.heartbeat" in tracker.tags(search))
        assert wait_until(lambda: "asha_tune.stop_requested" not in tracker.tags(replicate))
        time.sleep(0.5)
    finally:
        driver.stop()
        signal.signal(signal.SIGINT, previous)
    assert not caught
    for run_id in (search, replicate):
        beat = json.loads(tracker.tags(run_id)["asha_tune.heartbeat"])
        assert (beat["host"], beat["pid"]) == (socket.gethostname(), os.getpid())
        assert abs(beat["at"] - time.time()) < 30


def test_a_stop_request_on_the_search_stops_the_driver_as_ctrl_c_does_and_is_removed(runs, capsys):
    tracker, settings, search, replicate = runs
    driver = Control(settings)
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        driver.start()
        assert wait_until(lambda: "asha_tune.heartbeat" in tracker.tags(replicate))
        request_stop(tracker, search)  # `asha-tune stop SEARCH`
        assert wait_until(lambda: bool(caught))
    finally:
        driver.stop()
        signal.signal(signal.SIGINT, previous)
    assert caught == [True]  # once
    assert "asha-tune stop (from " in capsys.readouterr().out
    assert "asha_tune.stop_requested" not in tracker.tags(search)  # no stale request left


def test_a_driver_on_this_machine_is_judged_by_its_process():
    here = socket.gethostname()
    # a process whose command line names asha-tune, as a driver's does
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "asha-tune"])
    try:
        assert wait_until(lambda: b"asha-tune" in Path(f"/proc/{alive.pid}/cmdline").read_bytes())  # exec'd
        seen = driver_seen({"host": here, "pid": alive.pid}, None)
        assert (seen.alive, seen.by_pid, seen.text) == (True, True, f"alive (pid {alive.pid} on {here})")
    finally:
        alive.kill()
        alive.wait()
    seen = driver_seen({"host": here, "pid": alive.pid}, None)
    assert (seen.alive, seen.text) == (False, f"gone (pid {alive.pid} on {here})")
    # a process that does not name asha-tune (a reused pid, a script on the Python API): its
    # heartbeat tells
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert driver_seen({"host": here, "pid": other.pid}, None).alive is None
        beat = {"at": time.time(), "host": here, "pid": other.pid}
        seen = driver_seen(None, beat)
        assert (seen.alive, seen.by_pid) == (True, False)
    finally:
        other.kill()
        other.wait()


def test_a_driver_elsewhere_is_judged_by_its_heartbeats_age():
    now = 10_000.0
    fresh = driver_seen(None, {"at": now - 4, "host": "node-3", "pid": 42}, now)
    assert (fresh.alive, fresh.by_pid, fresh.text) == (
        True,
        False,
        "alive (pid 42 on node-3; heard from 4 s ago)",
    )
    old = driver_seen(None, {"at": now - 600, "host": "node-3", "pid": 42}, now)
    assert (old.alive, old.text) == (False, "silent for 10 min (pid 42 on node-3): taken to be gone")
    unknown = driver_seen({"host": "node-3", "pid": 42}, None, now)  # a driver from before heartbeats
    assert unknown.alive is None
    assert "no heartbeat" in unknown.text
    assert driver_seen(None, None, now).text == "not recorded"
