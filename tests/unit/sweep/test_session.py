"""The session's decisions that need no Ray: how long to wait for the autoscaler (report by report),
the head watch, where `--address auto` leads, and the environment Ray gets."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from asha_tune.errors import ConfigError
from asha_tune.spaces import load_space
from asha_tune.sweep import SweepSettings, ray_compat, session
from asha_tune.sweep.ray_compat import AutoscalerReport, _v1_report
from asha_tune.sweep.session import AutoscalerWait, head_lost_s, resolve_address, session_environ
from asha_tune.sweep.study import create_study
from asha_tune.tracking import Tracker
from asha_tune.tracking.records import sweep_trials
from asha_tune.tracking.tags import TRIAL_NUMBER_TAG
from asha_tune.trial.config import Runtime

NEED = {"CPU": 2.0, "GPU": 0.25}


def report(stamp: float, requested=(NEED,), launching=(), infeasible=(), failed=()) -> AutoscalerReport:
    return AutoscalerReport(stamp, tuple(launching), tuple(failed), tuple(requested), tuple(infeasible))


def test_the_wait_goes_on_while_the_autoscaler_adds_a_node():
    watch = AutoscalerWait(NEED)
    assert watch.update(report(1, requested=())) is None  # the request has not reached it yet
    assert watch.update(report(2, launching=["gpu_worker"])) is None
    for stamp in range(3, 30):  # a node takes minutes to boot: as long as it is launching, wait
        assert watch.update(report(stamp, launching=["gpu_worker"])) is None
    assert watch.progress() == "the autoscaler is adding 1 gpu_worker"


def test_the_wait_stops_when_the_autoscaler_has_seen_the_request_and_adds_nothing():
    watch = AutoscalerWait(NEED)
    for stamp in range(1, 10):  # reports before the request reached it do not count
        assert watch.update(report(stamp, requested=())) is None
    assert watch.update(report(10)) is None
    assert watch.update(report(10)) is None  # the same report again does not count either
    assert watch.update(report(11)) is None
    why = watch.update(report(12))
    assert why
    assert why.startswith("the autoscaler adds no node for it (none of its node types can hold one")


def test_a_failed_launch_is_named_and_a_launch_restarts_the_count():
    watch = AutoscalerWait(NEED)
    watch.update(report(1))
    watch.update(report(2))
    assert watch.update(report(3, launching=["gpu_worker"])) is None  # it is adding one after all
    watch.update(report(4, failed=["gpu_worker"]))
    watch.update(report(5))
    why = watch.update(report(6))
    assert why
    assert why.endswith("its launches of gpu_worker failed (ray status)")


def test_an_infeasible_request_stops_at_once():
    why = AutoscalerWait(NEED).update(report(1, requested=(), infeasible=({"CPU": 2, "GPU": 0.25},)))
    assert why == "none of the autoscaler's node types can hold one"


def test_the_v1_report_says_what_the_autoscaler_adds_and_is_none_where_none_runs():
    # As Ray 2.60's v1 monitor writes them (captured from a local Ray and the fake autoscaler).
    now = round(time.time(), 3)
    mirror = {
        "time": now,
        "autoscaler_report": {
            "active_nodes": {"node_f46b": 1},
            **{"pending_nodes": [], "pending_launches": {}, "failed_nodes": []},
            "node_type_mapping": {"f46b": "node_f46b"},
        },
        "load_metrics_report": {"request_demand": []},
    }
    assert _v1_report(json.dumps(mirror).encode()) is None
    assert _v1_report(None) is None
    scaling = {
        "time": now,
        "autoscaler_report": {
            "active_nodes": {"ray.head.default": 1},
            "pending_nodes": [["ff01", "gpu_worker", "uninitialized"]],
            "pending_launches": {"gpu_worker": 1},
            "failed_nodes": [["127.0.0.1", "cpu_worker"]],
            "node_type_mapping": {"ff00": "ray.head.default"},
        },
        "load_metrics_report": {"request_demand": [[{"GPU": 0.25, "CPU": 2}, 1]]},
    }
    parsed = _v1_report(json.dumps(scaling).encode())
    assert parsed == AutoscalerReport(now, ("gpu_worker", "gpu_worker"), ("cpu_worker",), (NEED,), ())
    stale = {**scaling, "time": now - 600}
    assert (
        _v1_report(json.dumps(stale).encode()) is None
    )  # a monitor that stopped reporting runs no autoscaler


DRIVER = (  # a stand-in for a sweep's driver, bound as a real one is (watch._exit_on)
    "import sys, time; from asha_tune.sweep import watch; watch._exit_on(watch.EXIT_SIGNAL); "
    "print('ready', flush=True); time.sleep(120)"
)


def sweep_with_a_running_trial(tmp_path) -> tuple[SweepSettings, str]:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = load_space("quickstart", ["train.epochs=1"])
    tracker = Tracker(tracking)
    experiment = tracker.experiment(space.name)
    parent = tracker.start_run(experiment, "lost")
    tracker.start_run(experiment, "trial-000", parent_run_id=parent, tags={TRIAL_NUMBER_TAG: "0"})
    settings = SweepSettings(
        name="lost",
        space=space,
        results_dir=tmp_path / "results",
        tracking_uri=tracking,
        study_url=f"sqlite:///{tmp_path / 'optuna.db'}",
        parent_run_id=parent,
        runtime=Runtime(data_root=tmp_path / "pacs", device="cpu"),
    )
    settings.save()
    create_study(settings.study_url, "lost", space).ask()  # a RUNNING trial
    return settings, experiment


def watch_command(
    port: int, driver: int, settings: SweepSettings, experiment: str, lost_s: int = 2
) -> list[str]:
    return [
        *(
            sys.executable,
            "-m",
            "asha_tune.sweep.watch",
            "--gcs",
            f"127.0.0.1:{port}",
            "--lost-s",
            str(lost_s),
        ),
        *("--parent", str(driver), "--sweep-file", str(settings.sweep_dir / "sweep.json")),
        *("--experiment", experiment, "--program", "asha-tune launch"),
    ]


def test_the_head_watch_closes_the_records_and_ends_the_driver_with_status_3(tmp_path):
    settings, experiment = sweep_with_a_running_trial(tmp_path)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    assert driver.stdout.readline().strip() == "ready"
    watch = subprocess.Popen(
        watch_command(port, driver.pid, settings, experiment), stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(4)
        # the head answers: nothing happens
        assert driver.poll() is None
        assert watch.poll() is None
        server.close()  # the head is gone
        stopped = time.monotonic()
        assert driver.wait(timeout=60) == 3
        ended_s = time.monotonic() - stopped
        stderr = watch.communicate(timeout=30)[1]
    finally:
        driver.kill()
        watch.kill()
        server.close()
    lines = stderr.splitlines()
    assert len(lines) == 1, lines
    silent = int(lines[0].split("no answer for ")[1].split(" s)")[0])
    assert lines[0] == (
        f"asha-tune launch: error: lost the Ray cluster's head at 127.0.0.1:{port} (no answer for {silent} s); "
        f"the sweep is kept: once the head is back (asha-tune cluster up, for a local cluster), "
        f"asha-tune resume lost --results-dir {settings.results_dir}"
    )
    assert 2 <= silent < 10
    assert ended_s < 30
    tracker = Tracker(settings.tracking_uri)
    assert tracker.status(settings.run_id) == "interrupted"
    assert [r.status for r in sweep_trials(tracker, experiment, settings.run_id)] == ["interrupted"]
    trials = optuna.load_study(study_name="lost", storage=settings.study_url).trials
    assert [t.state for t in trials] == [TrialState.WAITING]  # parked: resume takes it back


def test_the_watch_ends_without_a_word_when_the_driver_ends_first(tmp_path):
    settings, experiment = sweep_with_a_running_trial(tmp_path)
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    watch = subprocess.Popen(
        watch_command(1, driver.pid, settings, experiment, lost_s=20), stderr=subprocess.PIPE, text=True
    )
    driver.wait(timeout=30)
    assert watch.wait(timeout=30) == 0
    assert watch.stderr.read() == ""
    assert Tracker(settings.tracking_uri).status(settings.run_id) == "running"  # left for a takeover


def test_rays_own_abort_comes_after_the_watch(monkeypatch):
    for name in (session.HEAD_LOST_ENV, ray_compat.GCS_RECONNECT_ENV):
        monkeypatch.delenv(name, raising=False)
    assert head_lost_s() == 30
    env = session_environ("10.0.0.5:6379")
    assert float(env[ray_compat.GCS_RECONNECT_ENV]) >= head_lost_s() + 60
    assert ray_compat.GCS_RECONNECT_ENV not in session_environ(None)  # a local Ray: Ray's default
    monkeypatch.setenv(ray_compat.GCS_RECONNECT_ENV, "300")  # a cluster whose GCS restarts itself
    assert head_lost_s() == 290
    assert float(session_environ("10.0.0.5:6379")[ray_compat.GCS_RECONNECT_ENV]) >= 350
    monkeypatch.setenv(session.HEAD_LOST_ENV, "12")
    assert head_lost_s() == 12


def test_address_auto_never_joins_a_ray_it_did_not_find_in_rays_temp_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address("10.0.0.5:6379") == "10.0.0.5:6379"
    assert resolve_address(None) is None
    with pytest.raises(ConfigError, match=r"^--address auto: no Ray cluster was started on this machine"):
        resolve_address("auto")
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6380\n")
    assert resolve_address("auto") == "127.0.0.1:6380"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")  # as Ray: the environment wins over the file
    assert resolve_address("auto") == "10.0.0.9:6379"


def test_the_cli_and_the_sweep_runs_import_no_ray():
    # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (loopback clusters) and the auth mode once, at
    # import: imported before the session sets them, a driver joins with the wrong address.
    code = "import sys, asha_tune.cli, asha_tune.api; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stdout + done.stderr
