"""Sweeps on a real local Ray, with real MLflow and Optuna sqlite stores and real PACS (small)."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from asha_tune.api import launch
from asha_tune.cluster import processes
from asha_tune.cluster.processes import free_port
from asha_tune.sweep import SweepSettings
from asha_tune.tracking import Tracker
from asha_tune.tracking.best import best_trial
from asha_tune.tracking.records import sweep_trials
from benchmarks.scale import ended_trials
from tests.helpers.mlflow import mlflow_store
from tests.helpers.processes import driver_process, kill_tagged, stop_group, tagged_processes, wait_for
from tests.helpers.sweeps import (
    TINY,
    mid_trial,
    mlflow_children,
    quiet_env,
    settings_for,
    space_file,
    study_trials,
)


def test_sweep_end_to_end_with_asha_pruning(tmp_path, pacs_runtime, capsys):
    # train_loss is continuous (no ties), one trial at a time makes ASHA's decisions deterministic,
    # and reduction factor 4 prunes every trial below the best quarter at epochs 1.
    path = space_file(
        tmp_path,
        "e2e",
        shaping={"mode": "random"},
        search={"algorithm": "optuna", "num_trials": 6, "max_concurrent": 1, "seed": 0},
        scheduler={
            "kind": "asha",
            "grace_period": 1,
            "reduction_factor": 4,
            "metric": "train_loss",
            "mode": "min",
        },
        resources={"cpu": 1},
        parameters={
            "shaping.convs": {
                "type": "conv_subset",
                "allowed": [1, 2, 3, 4, 5, 6, 7],
                "min_size": 1,
                "max_size": 2,
            },
            "shaping.p0": {"type": "float", "low": 0.0, "high": 0.9},
        },
    )
    outcome = launch(settings_for(tmp_path, path, "e2e", pacs_runtime))
    assert outcome.finished
    out = capsys.readouterr().out

    parent = outcome.settings.parent_run_id
    children = mlflow_children(tmp_path, "e2e", parent)
    assert len(children) == 6  # exactly the trials requested, all under one parent
    numbers = sorted(int(r.data.tags["asha_tune.trial_number"]) for r in children)
    assert numbers == list(range(6))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    status_by_number = {}
    for run in children:
        status = run.data.tags["asha_tune.status"]
        epochs = int(run.data.tags["asha_tune.epochs_run"])
        history = client.get_metric_history(run.info.run_id, "target_acc")
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))  # every epoch, once
        assert (status == "pruned") == (epochs < 4)
        assert status in ("pruned", "completed")
        # never shorter than the compute the trial's own timings report (a sub-second trial too)
        assert float(run.data.tags["asha_tune.duration_s"]) >= run.data.metrics["time_total"] > 0
        assert run.data.params["shaping.mode"] == "random"
        assert run.data.params["device"] == "cpu"  # the device the trial computed on, from its report
        # resolved values, not None; the trial's metrics and durations, not Ray's bookkeeping
        assert (run.data.params["shaping.shape_fn"], run.data.params["shaping.shape_at_eval"]) == (
            "binarize_a",
            "True",
        )
        assert "time_train" in run.data.metrics
        assert not {
            "time_this_iter_s",
            "time_total_s",
            "timestamp",
            "training_iteration",
            "at_report",
        } & set(run.data.metrics)
        status_by_number[int(run.data.tags["asha_tune.trial_number"])] = status

    trials = study_trials(tmp_path, "e2e")
    assert len(trials) == 6
    pruned = {t.number for t in trials if t.state == TrialState.PRUNED}
    assert pruned, "ASHA stopped no trial"
    assert pruned == {n for n, s in status_by_number.items() if s == "pruned"}
    assert {t.number for t in trials if t.state == TrialState.COMPLETE} == {
        n for n, s in status_by_number.items() if s == "completed"
    }
    for t in trials:
        if t.state == TrialState.PRUNED:
            assert len(t.intermediate_values) < 4
            assert t.value == t.intermediate_values[max(t.intermediate_values)]

    # The reported best is the best in MLflow (full-budget trials, lowest final train_loss).
    finals = {
        int(r.data.tags["asha_tune.trial_number"]): r.data.metrics["train_loss"]
        for r in children
        if r.data.tags["asha_tune.status"] == "completed"
    }
    best_number = min(finals, key=finals.get)
    assert outcome.best.number == best_number
    assert (
        f"best trial {best_number}: train_loss {finals[best_number]:.4g} after 4 epochs (last epoch, "
        "among trials that ran every epoch; selection source_val); shaping.convs="
    ) in out
    assert outcome.best.run_id in out
    assert "look at it in MLflow: asha-tune ui e2e --results-dir " in out
    for ray_box in ("Configuration for experiment", "SearchGenerator", "ResumableASHA", "Tuner.restore"):
        assert ray_box not in out
    parent_run = client.get_run(parent)
    assert parent_run.data.tags["asha_tune.status"] == "completed"
    assert parent_run.data.tags["asha_tune.best_run_id"] == outcome.best.run_id
    # The data it read, as the launch found it: its source and its target, each with its fingerprint.
    data = parent_run.data.tags["asha_tune.data_fingerprint"]
    assert re.fullmatch(r"art_painting [0-9a-f]{16}, cartoon [0-9a-f]{16}", data), data
    assert "Ray dashboard: http://127.0.0.1:" in out
    assert re.search(r"stopped early \d+ · finished \d+ · failed 0 · best epoch so far: train_loss \d", out)
    # Sampled floats read with 4 significant digits; MLflow keeps them exact.
    p0 = outcome.best.values["shaping.p0"]
    assert f"shaping.p0={p0:.4g};" in out
    assert len(repr(p0)) > 8


def test_failed_and_diverged_trials_are_recorded_and_the_sweep_goes_on(tmp_path, tiny_runtime, capfd):
    (tiny_runtime.data_root / "photo" / "dog" / "zz_broken.jpg").write_bytes(b"garbage")
    path = space_file(
        tmp_path,
        "failing",
        TINY,
        search={"algorithm": "grid", "max_concurrent": 2, "max_failures": 1},
        parameters={
            "train.lr": {"type": "grid", "values": [0.001, 1.0e12]},
            "data.targets": {"type": "grid", "values": [["cartoon"], ["photo"]]},
        },
    )
    outcome = launch(settings_for(tmp_path, path, "failing", tiny_runtime))
    assert outcome.finished
    by_values = {json.dumps(t.values, sort_keys=True): t for t in outcome.trials}
    assert len(by_values) == 4
    children = {
        r.info.run_id: r for r in mlflow_children(tmp_path, "failing", outcome.settings.parent_run_id)
    }
    statuses = sorted(t.status for t in outcome.trials)
    assert statuses == ["completed", "failed", "failed", "failed"]
    out = capfd.readouterr()
    for record in outcome.trials:
        run = children[record.run_id]
        if record.values["data.targets"] == ["photo"]:
            assert run.info.status == "FAILED"
            failure = run.data.tags["asha_tune.failure"]
            assert failure.startswith("DataError: cannot read image ")
            assert "photo/dog/zz_broken.jpg" in failure
            assert run.data.tags["asha_tune.retries"] == "0"  # a data error is not retried
            assert f"trial {record.number} failed: {failure} (not retried: it would fail again)" in out.out
        elif record.values["train.lr"] > 1:
            assert run.info.status == "FAILED"
            assert run.data.tags["asha_tune.failure"] == "DivergedError: training loss became nan in epoch 1"
    # One line per failed trial; Ray's tracebacks stay in its log files.
    assert "Traceback" not in out.out + out.err
    assert "Ray's logs (trial output, tracebacks): /" in out.out
    states = sorted(t.state.name for t in study_trials(tmp_path, "failing"))
    assert states == ["COMPLETE", "FAIL", "FAIL", "FAIL"]
    parent = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(outcome.settings.parent_run_id)
    assert parent.data.tags["asha_tune.status"] == "completed"  # one trial completed


def test_fractional_gpus_run_four_trials_at_once(tmp_path, pacs_runtime):
    path = space_file(
        tmp_path,
        "shared_gpu",
        data={"targets": ["cartoon"], "image_size": 32, "limit_per_domain": 140},
        train={"epochs": 10, "batch_size": 8, "weights": "none"},
        shaping={"mode": "random", "convs": [1]},
        search={"algorithm": "random", "num_trials": 4, "max_concurrent": 4},
        scheduler={"kind": "fifo"},
        resources={"cpu": 0.5, "gpu": 0.25},
        parameters={"shaping.p0": {"type": "float", "low": 0.1, "high": 0.5}},
    )
    outcome = launch(settings_for(tmp_path, path, "shared_gpu", pacs_runtime, num_gpus=1))
    assert outcome.finished
    assert len(outcome.trials) == 4
    runs = mlflow_children(tmp_path, "shared_gpu", outcome.settings.parent_run_id)
    spans = [(r.info.start_time, r.info.end_time) for r in runs]
    # Every trial started before any ended: all four shared the one logical GPU at once.
    assert max(start for start, _ in spans) < min(end for _, end in spans)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_resume_after_sigkill_keeps_every_trial_once(tmp_path, pacs_root, shared_cache, process_tag):
    path = space_file(
        tmp_path,
        "resumable",
        shaping={"mode": "random"},
        search={"algorithm": "optuna", "num_trials": 6, "max_concurrent": 2, "seed": 1},
        scheduler={"kind": "asha", "grace_period": 2, "reduction_factor": 2},
        resources={"cpu": 1},
        parameters={
            "shaping.convs": {"type": "conv_subset", "allowed": [1, 4, 7], "min_size": 1, "max_size": 1},
            "shaping.p0": {"type": "float", "low": 0.1, "high": 0.8},
        },
    )
    env = {
        **os.environ,
        "ASHA_TUNE_DATA_ROOT": str(pacs_root),
        "ASHA_TUNE_CACHE_DIR": str(shared_cache),
        "PYTHONUNBUFFERED": "1",
        # Tune saves its view of the trials at most this often: the kill then leaves it stale (it
        # may name checkpoints the trials have since replaced), which a resume must survive.
        "TUNE_GLOBAL_CHECKPOINT_S": "25",
    }
    log = tmp_path / "launch.log"
    cli = [sys.executable, "-m", "asha_tune.cli"]
    with open(log, "w") as out:
        driver = subprocess.Popen(
            cli + ["launch", "--space", str(path), "--name", "rs", "--num-cpus", "2", "--device", "cpu"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        dashboard = wait_for(
            lambda: re.search(r"Ray dashboard: (http://\S+)", log.read_text()), 120, "the dashboard address"
        )
        # The dashboard the sweep printed answers while the sweep runs.
        assert http_ok(dashboard.group(1))
        # The study, not the progress line (printed every 5 s): a sweep this small may end
        # between two lines, and then there is nothing to resume.
        wait_for(lambda: ended_trials(tmp_path), 300, "a finished trial", poll=0.1)
    finally:
        os.kill(driver.pid, signal.SIGKILL)  # the driver only; Ray's processes are orphaned
        driver.wait()
    kill_tagged(process_tag)  # then the orphans, as a reboot would

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    settings = SweepSettings.load("rs", tmp_path / "asha-tune-results")
    experiment = tracker.experiment("resumable")
    before = {
        t.number: t
        for t in sweep_trials(tracker, experiment, settings.parent_run_id)
        if t.status in ("completed", "pruned")
    }
    assert before, "no trial had finished before the kill"
    histories = {
        n: [(m.step, m.value) for m in tracker.client.get_metric_history(t.run_id, "target_acc")]
        for n, t in before.items()
    }

    done = subprocess.run(
        cli + ["resume", "rs"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming" in done.stdout

    after = sweep_trials(tracker, experiment, settings.parent_run_id)
    assert sorted(t.number for t in after) == list(range(6))  # exactly the trials requested, once
    assert all(t.status in ("completed", "pruned") for t in after), (
        [(t.number, t.status, tracker.tags(t.run_id).get("asha_tune.failure")) for t in after],
        done.stdout[-3000:],
    )
    for number, record in before.items():
        kept = next(t for t in after if t.number == number)
        assert kept.run_id == record.run_id
        assert kept.status == record.status
        history = [(m.step, m.value) for m in tracker.client.get_metric_history(kept.run_id, "target_acc")]
        assert history == histories[number]
    for record in after:
        steps = [m.step for m in tracker.client.get_metric_history(record.run_id, "target_acc")]
        assert sorted(steps) == list(range(1, record.epochs + 1))  # no epoch logged twice
    trials = study_trials(tmp_path, "rs")
    assert len(trials) == 6
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    parent = tracker.client.get_run(settings.parent_run_id)
    assert parent.data.tags["asha_tune.status"] == "completed"
    best = best_trial(after, "val_acc", "max")  # the space's default selection metric
    assert f"MLflow run {best.run_id}" in done.stdout


def ray_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_a_crashed_trial_is_retried_from_its_last_checkpoint(tmp_path, pacs_runtime, process_tag):
    import threading

    path = space_file(
        tmp_path,
        "retry",
        train={"epochs": 8, "batch_size": 16, "weights": "none"},
        shaping={"mode": "random", "convs": [1], "p0": 0.5},
        search={"algorithm": "random", "num_trials": 1, "max_concurrent": 1, "max_failures": 2},
        scheduler={"kind": "fifo"},
        resources={"cpu": 1},
        parameters={"train.seed": {"type": "grid", "values": [3]}},
    )
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed = []

    def kill_worker_after_two_epochs():
        deadline = time.time() + 180
        while time.time() < deadline and not killed:
            time.sleep(0.3)
            try:
                client = MlflowClient(db)
                exp = client.get_experiment_by_name("retry")
                runs = client.search_runs([exp.experiment_id], "tags.`asha_tune.trial_number` = '0'")
                steps = {m.step for m in client.get_metric_history(runs[0].info.run_id, "target_acc")}
            except Exception:
                continue
            if len(steps) >= 2:
                for pid in tagged_processes(process_tag, "ImplicitFunc"):
                    os.kill(pid, signal.SIGKILL)  # the trial's worker dies as on an OOM kill
                    killed.append(pid)

    watcher = threading.Thread(target=kill_worker_after_two_epochs, daemon=True)
    watcher.start()
    outcome = launch(settings_for(tmp_path, path, "retry", pacs_runtime))
    watcher.join(timeout=5)
    assert killed, "no trial worker was found to kill"
    (record,) = outcome.trials
    assert record.status == "completed"
    assert record.epochs == 8
    run = MlflowClient(db).get_run(record.run_id)
    assert int(run.data.tags["asha_tune.retries"]) == 1
    assert int(run.data.tags["asha_tune.resumed_from_epoch"]) >= 2  # not restarted from scratch
    steps = [m.step for m in MlflowClient(db).get_metric_history(record.run_id, "target_acc")]
    assert sorted(steps) == list(range(1, 9))

    # The retried trial ends exactly where an uninterrupted one does (CPU determinism; with one
    # thread, as Ray gives a 1-CPU trial, since thread count changes float summation order).
    import torch

    from asha_tune.trial.training import run_trial

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plain = run_trial(outcome.settings.space.trial_config(record.values), pacs_runtime)
    finally:
        torch.set_num_threads(threads)
    assert record.metrics["target_acc"] == plain.final["target_acc"]
    assert record.metrics["train_loss"] == pytest.approx(plain.final["train_loss"], rel=0, abs=1e-9)


def test_launch_joins_an_existing_cluster_by_address(tmp_path, tiny_runtime, process_tag):
    port = free_port()
    env = {"RAY_AUTH_MODE": "token"}
    ray_cli("get-auth-token", "--generate")  # no-op where a token already exists
    started = ray_cli(
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--num-gpus=1",
        "--include-dashboard=false",
        "--disable-usage-stats",
        env=env,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        path = space_file(
            tmp_path,
            "joined",
            TINY,
            search={"algorithm": "random", "num_trials": 2, "max_concurrent": 2},
            # Only the started cluster has a GPU (a logical one): a local Ray could not run these.
            resources={"cpu": 1, "gpu": 0.5},
            parameters={"train.seed": {"type": "int", "low": 0, "high": 9}},
        )
        settings = settings_for(tmp_path, path, "joined", tiny_runtime, address=f"127.0.0.1:{port}")
        settings.num_cpus = None
        outcome = launch(settings)
    finally:
        kill_tagged(process_tag)  # only the cluster this test started, never `ray stop --force`
    assert outcome.finished
    assert [t.status for t in outcome.trials] == ["completed", "completed"]


def test_ui_serves_the_sweeps_store(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracker.experiment("ui-serves-this-store")
    run_id = tracker.start_run(experiment, "a-run", tags={"asha_tune.sweep": "ui-check"})
    port = free_port()
    ui = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "asha_tune.cli",
            "ui",
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: http_ok(f"{base}/"), 120, "the MLflow UI")
        # It serves this store, not another: the experiment and the run written above are there.
        with urllib.request.urlopen(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-serves-this-store", timeout=30
        ) as response:
            assert json.loads(response.read())["experiment"]["experiment_id"] == experiment
        with urllib.request.urlopen(
            f"{base}/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=30
        ) as response:
            tags = {t["key"]: t["value"] for t in json.loads(response.read())["run"]["data"]["tags"]}
        assert tags["asha_tune.sweep"] == "ui-check"
    finally:
        stop_group(ui)


def test_a_terminated_ui_stops_the_server_it_started(tmp_path):
    """SIGTERM to `asha-tune ui` (a service manager, `kill`) stops MLflow's server and its workers."""
    uri = mlflow_store(tmp_path / "mlflow.db")
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "asha_tune.cli", "ui", "--tracking-uri", uri, "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/"), 120, "the MLflow UI")
        servers = tagged_children(ui.pid)
        assert servers, "the UI runs in processes of its own"
        ui.send_signal(signal.SIGTERM)  # this process only, not its group
        assert ui.wait(timeout=60) == 0
        assert wait_for(lambda: not any(processes.alive(p) for p in servers), 60, "the server to stop")
        assert not http_ok(f"http://127.0.0.1:{port}/")
    finally:
        if ui.poll() is None:
            stop_group(ui)


def tagged_children(pid: int) -> list:
    """The processes below `pid` (the UI's server session: gunicorn or uvicorn and its workers)."""
    me = processes.identify(pid)
    return [p for p in processes.family(me) if p.pid != pid] if me else []


def test_sweep_tracks_to_an_mlflow_tracking_server(tmp_path, tiny_runtime):
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_ok(f"{uri}/health"), 120, "the MLflow tracking server")
        path = space_file(
            tmp_path,
            "served",
            TINY,
            search={"algorithm": "random", "num_trials": 2, "max_concurrent": 2},
            parameters={"train.seed": {"type": "int", "low": 0, "high": 9}},
        )
        settings = settings_for(tmp_path, path, "served", tiny_runtime)
        settings.tracking_uri = uri
        outcome = launch(settings)
        assert outcome.finished
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("served")
        children = client.search_runs(
            [experiment.experiment_id], f"tags.mlflow.parentRunId = '{outcome.settings.parent_run_id}'"
        )
        assert len(children) == 2
        assert all(len(client.get_metric_history(r.info.run_id, "target_acc")) == 2 for r in children)
        space = json.loads(
            Path(
                client.download_artifacts(outcome.settings.parent_run_id, "space.json", str(tmp_path))
            ).read_text()
        )
        assert space["name"] == "served"
        assert not (tmp_path / "mlflow.db").exists()  # nothing went to the embedded default
    finally:
        stop_group(server)


def test_each_epoch_logs_the_trials_device_use_and_the_progress_line_ends_on_the_last_picture(
    tmp_path, tiny_runtime, capsys
):
    """trial/usage.py in a real sweep: every epoch of every trial carries its process's CPU and
    memory into its MLflow run; on the CPU, no GPU metric at all. The driver's output is no
    terminal here: plain lines (sweep/progress.py), the last picture always."""
    path = space_file(
        tmp_path,
        "usage",
        TINY,
        search={"algorithm": "random", "num_trials": 2, "max_concurrent": 2},
        parameters={"train.seed": {"type": "int", "low": 0, "high": 9}},
    )
    outcome = launch(settings_for(tmp_path, path, "usage", tiny_runtime))
    assert outcome.finished
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    children = mlflow_children(tmp_path, "usage", outcome.settings.parent_run_id)
    assert len(children) == 2
    for run in children:
        cpu = client.get_metric_history(run.info.run_id, "system_cpu_percent")
        memory = client.get_metric_history(run.info.run_id, "system_memory_mb")
        assert sorted(m.step for m in cpu) == sorted(m.step for m in memory) == [1, 2]  # each epoch once
        assert all(m.value > 0 for m in cpu)  # the trial computed: its process used CPU
        assert all(m.value > 50 for m in memory)  # torch and a model: far more than 50 MB resident
        assert not {"gpu_utilization_percent", "gpu_memory_mb"} & set(run.data.metrics)  # no GPU, no figure
    lines = [line for line in capsys.readouterr().out.splitlines() if "] trials " in line]
    last = lines[-1].split("] ", 1)[1]
    assert last.startswith(
        "trials 2/2 · running 0 · stopped early 0 · finished 2 · failed 0 · best epoch so far: "
    )
    assert "GPU" not in lines[-1]
    assert "ETA" not in lines[-1]


def test_a_sweep_whose_every_trial_failed_says_so_and_can_be_started_over(tmp_path, tiny_runtime, capsys):
    from asha_tune.cli import sweep_exit
    from asha_tune.errors import ConfigError

    broken = tiny_runtime.data_root / "cartoon" / "dog" / "zz_broken.jpg"
    broken.write_bytes(b"garbage")
    path = space_file(
        tmp_path,
        "allfail",
        TINY,
        search={"algorithm": "random", "num_trials": 2, "max_concurrent": 2},
        parameters={"train.seed": {"type": "int", "low": 0, "high": 9}},
    )
    settings = settings_for(tmp_path, path, "allfail", tiny_runtime)
    outcome = launch(settings)
    assert outcome.finished
    assert [t.status for t in outcome.trials] == ["failed", "failed"]
    assert sweep_exit(outcome) == 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    first_parent = client.get_run(outcome.settings.parent_run_id)
    assert first_parent.info.status == "FAILED"
    assert first_parent.data.tags["asha_tune.status"] == "failed"
    assert first_parent.data.tags["asha_tune.failure"] == "all 2 trials failed"

    # The name is not burnt: launching it again says how to start over, and --restart does.
    with pytest.raises(
        ConfigError, match="ended failed: continue it with asha-tune resume allfail .*--restart"
    ):
        launch(settings_for(tmp_path, path, "allfail", tiny_runtime))
    broken.unlink()
    capsys.readouterr()
    again = launch(settings_for(tmp_path, path, "allfail", tiny_runtime), restart=True)
    assert again.finished
    assert [t.status for t in again.trials] == ["completed", "completed"]
    assert "sweep allfail: the earlier attempt is kept as allfail.attempt-1" in capsys.readouterr().out
    # Nothing recorded was lost: the first attempt lives on under its new name.
    archived = client.get_run(first_parent.info.run_id)
    assert archived.info.run_name == "allfail.attempt-1"
    assert archived.data.tags["asha_tune.restarted_as"] == "allfail"
    assert len(mlflow_children(tmp_path, "allfail", first_parent.info.run_id)) == 2
    assert [t.state.name for t in study_trials(tmp_path, "allfail.attempt-1")] == ["FAIL", "FAIL"]
    assert [t.state.name for t in study_trials(tmp_path, "allfail")] == ["COMPLETE", "COMPLETE"]
    assert SweepSettings.load("allfail.attempt-1", tmp_path / "results").name == "allfail.attempt-1"
    assert SweepSettings.load("allfail", tmp_path / "results").parent_run_id == again.settings.parent_run_id


def test_a_trial_that_raised_is_one_line_with_its_traceback_file(tmp_path):
    from types import SimpleNamespace

    from asha_tune.sweep.callbacks import failure_line

    error_file = tmp_path / "error.txt"
    error_file.write_text(
        "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA error: out of memory\n"
    )
    trial = SimpleNamespace(config={"trial_number": 3}, num_failures=2, error_file=str(error_file))
    assert failure_line(trial, None) == (
        f"trial 3 failed after 1 retry: RuntimeError: CUDA error: out of memory (traceback: {error_file})"
    )
    result = {"failed": 1.0, "failure": "WeightsError: weights file /x does not exist"}
    assert (
        failure_line(SimpleNamespace(config={"trial_number": 4}, num_failures=0, error_file=None), result)
        == "trial 4 failed: WeightsError: weights file /x does not exist (not retried: it would fail again)"
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_driver_leaves_nothing_running_and_resumes(
    signum, tmp_path, pacs_root, shared_cache, process_tag
):
    path = space_file(
        tmp_path,
        "stopped",
        # One trial at a time, so that once the first epoch shows, two whole trials (each started
        # by the driver) are still to run: the signal lands before the sweep can end. With two at
        # once and 4 epochs, all three trials ended within 5 s of the first epoch's line, and a
        # loaded CI machine's driver saw the signal after they had (exit 0).
        train={"epochs": 6, "batch_size": 16, "weights": "none"},
        shaping={"mode": "random", "convs": [1]},
        search={"algorithm": "random", "num_trials": 3, "max_concurrent": 1, "seed": 0},
        scheduler={"kind": "fifo"},
        resources={"cpu": 1},
        parameters={"shaping.p0": {"type": "float", "low": 0.1, "high": 0.8}},
    )
    link = tmp_path / "pacs-link"  # the data root it was launched with, removed before the resume
    link.symlink_to(pacs_root)
    env = quiet_env(ASHA_TUNE_CACHE_DIR=str(shared_cache), RAY_AUTH_TOKEN_PATH=str(tmp_path / "token"))
    cli = [sys.executable, "-m", "asha_tune.cli"]
    log = tmp_path / "launch.log"
    with driver_process(
        cli + ["launch", "--space", str(path), "--name", "st", "--num-cpus", "2", "--data-root", str(link)],
        tmp_path,
        env,
        log,
    ) as driver:
        wait_for(lambda: mid_trial(tmp_path, "st"), 300, "a trial's first epoch", poll=0.1)
        driver.send_signal(signum)  # the driver only, as `kill` or Ctrl-C would
        assert driver.wait(timeout=180) == 130
    text = log.read_text()
    assert "the sweep did not finish; continue it with: asha-tune resume st" in text
    for noise in (
        "Tuner.restore",
        "Traceback",
        "Token authentication is enabled",
        "Configuration for experiment",
    ):
        assert noise not in text
    # asha-tune made the token it manages and says where it is.
    assert (tmp_path / "token").is_file()
    assert f"paste the one in {tmp_path / 'token'}" in text

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("stopped")
    runs = client.search_runs([experiment.experiment_id])
    assert runs
    assert all(r.info.status != "RUNNING" for r in runs)
    assert all(r.data.tags["asha_tune.status"] != "running" for r in runs)
    assert "interrupted" in {r.data.tags["asha_tune.status"] for r in runs}
    trials = study_trials(tmp_path, "st")
    assert trials
    assert all(t.state != TrialState.RUNNING for t in trials)
    assert TrialState.WAITING in {t.state for t in trials}  # parked until resume
    if signum == signal.SIGINT:
        return

    # Resume needs its data: the folder it was launched with is gone, and --data-root replaces it.
    link.unlink()
    lost = subprocess.run(
        cli + ["resume", "st"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert lost.returncode == 2
    assert (
        lost.stderr.strip()
        == f"asha-tune resume: error: data root {link}: no such folder (it should hold PACS' domain folders)"
    )
    done = subprocess.run(
        cli + ["resume", "st", "--data-root", str(pacs_root)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert SweepSettings.load("st", tmp_path / "asha-tune-results").runtime.data_root == pacs_root.absolute()
    final = sweep_trials(
        Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}"),
        experiment.experiment_id,
        SweepSettings.load("st", tmp_path / "asha-tune-results").parent_run_id,
    )
    assert [t.status for t in final] == ["completed"] * 3
    assert sorted(t.state.name for t in study_trials(tmp_path, "st")) == ["COMPLETE"] * 3
    # A finished sweep: nothing to resume, and no Ray is started to find that out.
    again = subprocess.run(
        cli + ["resume", "st"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0
    assert "sweep st has finished (3 trials): nothing to resume" in again.stdout
    assert "Ray dashboard" not in again.stdout


def sweep_record(tmp_path: Path, name: str) -> dict:
    """Everything a sweep decided and measured, by trial number (timings left out)."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    settings = SweepSettings.load(name, tmp_path / "results")
    record = {}
    for run in mlflow_children(tmp_path, settings.space.name, settings.parent_run_id):
        number = int(run.data.tags["asha_tune.trial_number"])
        histories = {
            m: [(x.step, x.value) for x in client.get_metric_history(run.info.run_id, m)]
            for m in ("target_acc", "train_loss", "source_acc")
        }
        record[number] = (run.data.params["search"], run.data.tags["asha_tune.status"], histories)
    study = {
        t.number: (t.params, t.state.name, t.intermediate_values, t.value)
        for t in study_trials(tmp_path, name)
    }
    return {"mlflow": record, "optuna": study}


@pytest.mark.slow  # two sweeps of 4 trials, one at a time: about 100 s on 2 shared cores
def test_a_reproducible_sweep_gives_the_same_answer_twice(tmp_path, pacs_runtime):
    # train_loss is continuous (accuracies on 35 images tie often, and ties decide nothing).
    path = space_file(
        tmp_path,
        "repro",
        train={"epochs": 3, "batch_size": 16, "weights": "none", "seed": 0},
        shaping={"mode": "random"},
        search={"algorithm": "optuna", "num_trials": 4, "max_concurrent": 3, "seed": 3, "reproducible": True},
        scheduler={
            "kind": "asha",
            "grace_period": 1,
            "reduction_factor": 2,
            "metric": "train_loss",
            "mode": "min",
        },
        resources={"cpu": 1},
        parameters={
            "shaping.convs": {"type": "conv_subset", "allowed": [1, 4, 7], "min_size": 1, "max_size": 2},
            "shaping.p0": {"type": "float", "low": 0.0, "high": 0.9},
        },
    )
    first = launch(settings_for(tmp_path, path, "repro-a", pacs_runtime))
    second = launch(settings_for(tmp_path, path, "repro-b", pacs_runtime))
    a, b = sweep_record(tmp_path, "repro-a"), sweep_record(tmp_path, "repro-b")
    assert len(a["mlflow"]) == 4
    assert {s for _, s, _ in a["mlflow"].values()} == {"pruned", "completed"}  # ASHA decided something
    assert a == b  # same configurations, same stops, same metrics, bit for bit
    assert first.best.number == second.best.number
    # How: one trial at a time (with 3 at once, arrival order would steer ASHA and TPE).
    runs = sorted(
        mlflow_children(tmp_path, "repro", first.settings.parent_run_id), key=lambda r: r.info.start_time
    )
    assert all(later.info.start_time >= earlier.info.end_time for earlier, later in itertools.pairwise(runs))


def test_a_cluster_where_no_node_fits_a_trial_stops_after_the_wait(
    tmp_path, tiny_runtime, process_tag, capsys
):
    from asha_tune.errors import ConfigError

    port = free_port()
    ray_cli("get-auth-token", "--generate")
    started = ray_cli(
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=1",
        "--num-gpus=0",
        "--include-dashboard=false",
        "--disable-usage-stats",
        env={"RAY_AUTH_MODE": "token"},
    )
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        path = space_file(
            tmp_path,
            "nofit",
            TINY,
            search={"algorithm": "random", "num_trials": 2},
            resources={"cpu": 1, "gpu": 0.5},
            parameters={"train.seed": {"type": "int", "low": 0, "high": 9}},
        )
        settings = settings_for(
            tmp_path, path, "nofit", tiny_runtime, address=f"127.0.0.1:{port}", resource_wait_s=3
        )
        settings.num_cpus = None
        begin = time.monotonic()
        with pytest.raises(ConfigError) as err:
            launch(settings)
        waited = time.monotonic() - begin
    finally:
        kill_tagged(process_tag)
    message = str(err.value)
    # A `ray start` cluster has no autoscaler: it waits only as long as asked, for a node joined by hand.
    assert message.startswith(
        "no node of the Ray cluster can run a trial of space nofit (each needs 1 CPU, 0.5 GPU; "
        "nodes: the head (1 CPU, 0 GPU)), and it has no autoscaler to add one, after waiting 3s"
    )
    assert "--resource-wait SECONDS" in message
    assert "asha-tune resume nofit" in message
    assert 3 <= waited < 120
    assert "waiting up to 3s for one to join" in capsys.readouterr().out
    parent = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(settings.parent_run_id)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["asha_tune.status"] == "interrupted"
    assert all(t.state != TrialState.RUNNING for t in study_trials(tmp_path, "nofit"))


def test_launch_works_where_ray_was_imported_first(tmp_path, tiny_runtime, process_tag):
    # Ray reads its auth mode at import; asha-tune turns token auth on later and must make an
    # already imported Ray re-read it (else GCS refuses the driver: "Failed to start GCS").
    path = space_file(
        tmp_path,
        "imported",
        TINY,
        search={"algorithm": "random", "num_trials": 1},
        train={"epochs": 1, "batch_size": 8, "weights": "none"},
        parameters={"train.seed": {"type": "int", "low": 0, "high": 9}},
    )
    code = (
        "import sys, ray; from asha_tune.cli import main; "
        f"sys.exit(main(['launch', '--space', {str(path)!r}, '--name', 'imp', '--data-root', "
        f"{str(tiny_runtime.data_root)!r}, '--cache-dir', {str(tiny_runtime.cache_dir)!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "best trial 0: val_acc" in done.stdout


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks a machine where torch has no CUDA"
)
def test_a_trial_given_a_gpu_that_torch_cannot_use_fails_at_once_and_says_why(tmp_path, tiny_runtime, capsys):
    """A logical GPU (--num-gpus 1) stands for one that torch cannot drive (a driver too old for
    the build): the trial must not train on the CPU for hours unnoticed."""
    import torch

    path = space_file(
        tmp_path,
        "unusable_gpu",
        TINY,
        search={"algorithm": "random", "num_trials": 2, "max_concurrent": 2, "max_failures": 2},
        resources={"cpu": 1, "gpu": 0.5},
        parameters={"train.lr": {"type": "float", "low": 0.001, "high": 0.01}},
    )
    runtime = tiny_runtime.model_copy(update={"device": "auto"})
    started = time.monotonic()
    outcome = launch(settings_for(tmp_path, path, "unusable_gpu", runtime, num_gpus=1))
    assert outcome.finished
    assert [t.status for t in outcome.trials] == ["failed", "failed"]
    out = capsys.readouterr().out
    for run in mlflow_children(tmp_path, "unusable_gpu", outcome.settings.parent_run_id):
        failure = run.data.tags["asha_tune.failure"]
        assert failure.startswith(
            f"DeviceError: Ray gave this trial GPU 0, but torch {torch.__version__} is built for CUDA "
            f"{torch.version.cuda} and finds no CUDA device"
        )
        assert "\n" not in failure
        # not retried
        assert run.info.status == "FAILED"
        assert run.data.tags["asha_tune.retries"] == "0"
        assert run.data.tags["asha_tune.epochs_run"] == "0"  # at once: not one epoch on the CPU
        assert "device" not in run.data.params
        assert failure in out
    assert time.monotonic() - started < 240
