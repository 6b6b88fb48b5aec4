"""`asha-tune launch --detach` on the local cluster (`asha-tune cluster up`): the driver submitted
as a Ray job, the launching command ending at once; `status` and `logs` following it; its driver
killed (as when the head's pod goes), `status` saying so and how to resubmit; the same command
resubmitting it, the sweep finishing with each trial once; a second driver refused meanwhile.

Marked `cluster` (minutes); the cluster is test_cluster.py's harness, one per module.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.cluster.test_cluster import (  # noqa: F401  # harness: the module's cluster fixture
    CLI,
    assert_mlflow_and_optuna_agree,
    harness,
    job_api,
    job_ended,
    progress,
)
from tests.helpers.processes import tagged_processes, wait_for

pytestmark = pytest.mark.cluster


def test_a_detached_driver_is_followed_resubmitted_after_it_is_lost_and_finishes_the_sweep(harness):  # noqa: F811
    name, epochs = "detached-sweep", 16
    space = harness.space(
        name,
        search={"algorithm": "random", "num_trials": 4, "max_concurrent": 2, "seed": 5},
        train={"epochs": epochs},
        data={"limit_per_domain": 70},
    )
    state = harness.state
    command = ["launch", "--space", str(space), "--name", name, "--device", "cpu"]
    command += ["--data-root", str(harness.pacs_root), *state.launch_flags(), "--detach"]
    store = ("--tracking-uri", state.tracking_uri)

    # A machine with another token than the cluster's: refused in one line, nothing submitted.
    wrong = subprocess.run(
        [*CLI, *command],
        env={**harness.env, "RAY_AUTH_TOKEN": "not-the-token"},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=harness.directory,
    )
    print(f"launch --detach with a wrong token: {wrong.stderr}", flush=True)
    assert wrong.returncode != 0
    assert wrong.stderr.count("\n") == 1, wrong.stderr
    assert "Ray token (from $RAY_AUTH_TOKEN)" in wrong.stderr

    started = time.time()
    done = harness.cli(*command, timeout=120)
    took = time.time() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"as Ray job asha-tune-{name}-1" in done.stdout
    for follow in (f"asha-tune status {name}", f"asha-tune logs {name}", f"asha-tune stop {name}"):
        assert follow in done.stdout
    print(f"launch --detach returned in {took:.1f} s:\n{done.stdout}", flush=True)
    assert took < 60  # the laptop may close: it waits for no trial
    job = job_api(harness, f"/api/jobs/asha-tune-{name}-1")
    assert job["entrypoint"].startswith(f"asha-tune launch --space {space.name} --name {name} ")
    assert job["entrypoint"].endswith("--if-exists resume")
    assert "--detach" not in job["entrypoint"]

    def two_epochs_logged() -> bool:
        found = job_api(harness, f"/api/jobs/asha-tune-{name}-1")
        if found["status"] not in ("PENDING", "RUNNING"):
            logs = job_api(harness, f"/api/jobs/asha-tune-{name}-1/logs")["logs"]
            raise AssertionError(f"the job ended {found['status']}: {found.get('message')}\n{logs[-3000:]}")
        return any(len(h) >= 2 for h in progress(harness, name, name).values())

    wait_for(two_epochs_logged, 600, "a trial with two epochs logged", poll=2)
    status = harness.cli("status", name, *store)
    assert status.returncode == 0, status.stderr
    assert f"sweep {name}: running" in status.stdout
    assert f"driver: Ray job asha-tune-{name}-1: RUNNING" in status.stdout
    logs = harness.cli("logs", name, *store)
    assert logs.returncode == 0, logs.stderr
    assert "joined the Ray cluster at 127.0.0.1:" in logs.stdout  # the driver's own output
    on_cluster = harness.cli("logs", name, "--address", state.ray_address)  # the records not read
    assert on_cluster.returncode == 0, on_cluster.stderr
    assert "joined the Ray cluster at 127.0.0.1:" in on_cluster.stdout
    assert f"asha-tune logs {name} --address {state.ray_address} --follow" in done.stdout

    busy = harness.cli(*command, timeout=120)  # a second driver while one runs: refused
    assert busy.returncode != 0
    assert busy.stderr.count("\n") == 1, busy.stderr
    assert f"already has a driver on the cluster: Ray job asha-tune-{name}-1 is RUNNING" in busy.stderr
    assert [j["submission_id"] for j in job_api(harness, "/api/jobs/") if j.get("submission_id")] == [
        f"asha-tune-{name}-1"
    ]

    drivers = tagged_processes(harness.tag, name)  # the entrypoint's shell and asha-tune
    assert drivers
    for pid in drivers:
        os.kill(pid, signal.SIGKILL)  # the driver lost, as when its pod or node goes
    lost, _ = job_ended(harness, f"asha-tune-{name}-1", timeout=300)
    assert lost == "FAILED"
    status = harness.cli("status", name, *store)
    assert status.returncode == 0, status.stderr
    print(f"status after the driver was killed:\n{status.stdout}", flush=True)
    assert "recorded as running, but its driver is gone" in status.stdout
    assert f"Ray job asha-tune-{name}-1: FAILED; driver lost: resubmit with asha-tune launch" in status.stdout
    assert "--detach" in status.stdout.split("resubmit with", 1)[1].splitlines()[0]

    again = harness.cli(*command, timeout=120)  # the same command: the next driver continues it
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"as Ray job asha-tune-{name}-2" in again.stdout
    followed = harness.cli("logs", name, *store, "--follow", timeout=900)  # until the job ends
    assert followed.returncode == 0, followed.stderr
    finished, log = job_ended(harness, f"asha-tune-{name}-2", timeout=60)
    assert finished == "SUCCEEDED", log[-4000:]
    assert "is gone: continuing it" in log
    assert log.strip().splitlines()[-1] in followed.stdout  # the second driver's, to its last line
    assert_mlflow_and_optuna_agree(harness, name, name, trials=4, epochs=epochs)
    status = harness.cli("status", name, *store)
    assert f"sweep {name}: finished" in status.stdout, status.stdout + status.stderr
    logs = harness.cli("logs", name, *store)  # now the second driver's
    assert logs.returncode == 0, logs.stderr
    assert "is gone: continuing it" in logs.stdout
