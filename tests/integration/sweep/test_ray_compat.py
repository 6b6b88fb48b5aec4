"""The one test behind sweep/ray_compat.py: every private Ray call asha-tune makes, exercised on
the Ray version it was checked against. On a Ray upgrade this is the test that says what broke;
fix ray_compat.py, then move CHECKED_RAY."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray

from asha_tune.cluster.processes import free_port
from asha_tune.sweep import ray_compat
from asha_tune.sweep.session import ensure_ray_token
from tests.helpers.processes import wait_for

RAY_SOURCE = Path(ray.__file__).parent


def test_the_installed_ray_is_the_one_checked():
    assert ray.__version__.startswith(ray_compat.CHECKED_RAY + "."), (
        f"Ray {ray.__version__}: ray_compat.py was checked against Ray {ray_compat.CHECKED_RAY}; "
        "run this file, fix what fails in ray_compat.py, then move CHECKED_RAY"
    )


@pytest.mark.parametrize(
    ("grace", "rf", "max_t"), [(1, 2, 4), (1, 3, 30), (5, 3, 30), (2, 2.5, 20), (1, 4, 64)]
)
def test_asha_milestones_are_the_rungs_tunes_asha_builds(grace, rf, max_t):
    from ray.tune.schedulers import ASHAScheduler

    scheduler = ASHAScheduler(
        time_attr="epoch",
        metric="m",
        mode="max",
        max_t=max_t,
        grace_period=grace,
        reduction_factor=rf,
        brackets=1,
    )
    rungs = {milestone for milestone, _ in scheduler._brackets[0]._rungs}  # private: what we mirror
    assert ray_compat.asha_milestones(grace, rf, max_t) == {int(-(-r // 1)) for r in rungs}


def test_asha_accepts_stand_in_trials_and_their_results_set_its_cutoffs():
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    scheduler = ASHAScheduler(
        time_attr="epoch", metric="m", mode="max", max_t=4, grace_period=1, reduction_factor=2
    )
    for i, value in enumerate((10.0, 20.0, 30.0, 40.0)):
        stand_in = ray_compat.stand_in_trial(f"old-{i}")
        scheduler.on_trial_add(None, stand_in)
        scheduler.on_trial_result(None, stand_in, {"epoch": 1, "m": value})
        scheduler.on_trial_remove(None, stand_in)
    new = SimpleNamespace(trial_id="new")
    scheduler.on_trial_add(None, new)
    # Below the replayed trials' median at the first rung: stopped, as on an uninterrupted sweep.
    assert scheduler.on_trial_result(None, new, {"epoch": 1, "m": 5.0}) == TrialScheduler.STOP


def test_a_trials_reported_result_is_read_without_asking_its_actor(monkeypatch):
    from ray.tune.experiment import Trial

    def ask_the_actor(self):  # a blocking ray.get on the trial's actor, on Tune's event loop
        raise AssertionError("asked the actor")

    monkeypatch.setattr(Trial, "_get_default_result_or_future", ask_the_actor)
    trial = Trial("__fake", stub=True, trial_id="t0")
    with pytest.raises(AssertionError, match="asked the actor"):
        _ = trial.last_result  # Tune's own property, before the trial's first report
    assert ray_compat.reported_result(trial) == {}
    trial.update_last_result({"epoch": 1, "val_acc": 50.0, "time_total_s": 2.5})
    assert ray_compat.reported_result(trial)["time_total_s"] == 2.5
    assert ray_compat.reported_result(trial) == trial.last_result


def test_a_tune_trials_storage_is_a_filesystem_and_a_folder(tmp_path):
    from ray.train._internal.storage import StorageContext

    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name="t0")
    fs, folder = ray_compat.trial_storage(SimpleNamespace(storage=storage))
    fs.create_dir(f"{folder}/checkpoint_000000")
    assert (tmp_path / "exp" / "t0" / "checkpoint_000000").is_dir()


def test_the_loggers_and_environment_flags_exist_in_this_ray():
    for name in (*ray_compat.TUNE_LOGGERS, ray_compat.STORAGE_LOGGER):
        importlib.import_module(name)  # a logger named after its module
    sources = "\n".join(p.read_text(errors="ignore") for p in (RAY_SOURCE / "tune").rglob("*.py"))
    sources += "\n".join(p.read_text(errors="ignore") for p in (RAY_SOURCE / "train").rglob("*.py"))
    for flag in ray_compat.TUNE_ENV:
        assert flag in sources, f"{flag}: this Ray no longer reads it"


def test_token_auth_is_reloaded_in_a_process_that_imported_ray_first(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    ensure_ray_token()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    ray_compat.reload_token_auth()  # the private calls exist and run


NODE = """
import json, sys, time
from asha_tune.sweep import ray_compat
node = ray_compat.start_loopback_node(head=True, gcs_port=int(sys.argv[1]), gcs_address=None,
    dashboard_port=int(sys.argv[2]), agent_port=int(sys.argv[3]), num_cpus=1, num_gpus=0,
    object_store_bytes=128 * 1024 * 1024, temp_dir=sys.argv[4], name="head")
print(json.dumps(ray_compat.node_info(node)), flush=True)
while not ray_compat.dead_node_processes(node):
    time.sleep(0.5)
print(json.dumps(ray_compat.dead_node_processes(node)), flush=True)
ray_compat.kill_node(node)
"""


def test_a_loopback_node_starts_reports_and_its_dashboard_lists_it(tmp_path):
    temp = Path(f"/tmp/rc-{os.getpid()}")  # short: Ray's socket paths must fit 107 bytes
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(tmp_path / "token"),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    token = tmp_path / "token"
    token.write_text("a" * 64)
    ports = [free_port() for _ in range(3)]
    node = subprocess.Popen(
        [sys.executable, "-c", NODE, *map(str, ports), str(temp)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        info = json.loads(node.stdout.readline())
        assert len(info["node_id"]) == 56
        assert Path(info["session_dir"]).is_dir()
        url = f"http://127.0.0.1:{ports[1]}"
        nodes = wait_for(lambda: ray_compat.dashboard_nodes(url, token.read_text()), 120, "the dashboard")
        assert [(n["node_id"], n["state"]) for n in nodes] == [(info["node_id"], "ALIVE")]
        assert nodes[0]["resources"]["CPU"] == 1
        assert ray_compat.dashboard_nodes(url, "wrong-token") == []  # the token is checked
        # The dashboard's address, from the GCS (launch --detach); a wrong token gets none.
        ask = f"from asha_tune.sweep import ray_compat; print(ray_compat.dashboard_address('127.0.0.1:{ports[0]}'))"
        for extra, said in (({}, f"127.0.0.1:{ports[1]}"), ({"RAY_AUTH_TOKEN": "b" * 64}, "None")):
            asked = subprocess.run(
                [sys.executable, "-c", ask], env={**env, **extra}, capture_output=True, text=True, timeout=120
            )
            assert asked.stdout.strip() == said, asked.stdout + asked.stderr[-2000:]
        raylets = subprocess.run(
            ["pgrep", "-s", str(node.pid), "-f", "raylet"], capture_output=True, text=True
        )
        os.kill(int(raylets.stdout.split()[0]), signal.SIGKILL)  # a dead raylet is a dead node
        dead = json.loads(node.stdout.readline())
        assert any(kind.startswith("raylet") for kind, _ in dead), dead
        node.wait(timeout=60)
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
        time.sleep(0.5)
        subprocess.run(["rm", "-rf", str(temp)])
