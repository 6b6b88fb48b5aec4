"""`asha-tune launch --rehearse` on a real local Ray, MLflow and Optuna: simulated trials, no data,
no torch in the trials, records exactly once and marked, and every reader refusing them; and the
scale benchmark's small version (the three drivers side by side, a SIGKILL and a resume)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from benchmarks.scale import check_records
from tests.helpers.sweeps import quiet_env, space_file
from tests.helpers.terminal import run_on_terminal, screen

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "asha_tune.cli"]


def test_a_rehearsal_runs_the_sweep_with_simulated_trials_and_its_records_stay_apart(tmp_path, process_tag):
    space = space_file(
        tmp_path,
        "scale",
        base={"train": {"epochs": 4, "weights": "none"}, "shaping": {"mode": "random", "convs": [1]}},
        search={"algorithm": "random", "num_trials": 10, "max_concurrent": 2, "seed": 0},
        scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 2},
        resources={"cpu": 1},
        parameters={"shaping.p0": {"type": "float", "low": 0.0, "high": 0.9}},
    )
    # No data root anywhere: a rehearsal reads no data.
    env = {k: v for k, v in quiet_env().items() if k != "ASHA_TUNE_DATA_ROOT"}
    env["ASHA_TUNE_REHEARSAL_TIMINGS"] = str(tmp_path / "timings")
    (tmp_path / "timings").mkdir()
    done = subprocess.run(
        [*CLI, "launch", "--space", str(space), "--name", "scale", "--rehearse", "0.05", "--num-cpus", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rehearsal: 10 of 10 trials recorded in MLflow and Optuna (" in done.stdout
    assert "best trial" not in done.stdout  # simulated scores name no best trial
    assert check_records(tmp_path, 10) == "every trial once in MLflow and Optuna (10), no metric twice"

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("scale").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`asha_tune.sweep` = 'scale'")
    assert parent.data.tags["asha_tune.rehearsal"] == "true"
    assert parent.data.tags["asha_tune.status"] == "completed"
    assert not any(k.startswith("best_") for k in parent.data.metrics)  # no best figures
    study = optuna.load_study(study_name="scale", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.user_attrs["rehearsal"] is True
    starts = [
        json.loads(line)
        for path in (tmp_path / "timings").glob("*.jsonl")
        for line in path.read_text().splitlines()
        if '"start"' in line
    ]
    assert len(starts) == 10
    assert not any(s["torch"] for s in starts)  # no trial process loaded torch

    refusal = (
        "sweep scale is a rehearsal (launch --rehearse: simulated trials): its scores are not "
        "results, so compare, report, confirm and warm starts refuse it"
    )
    for command in (
        ["compare", "scale", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        ["confirm", "scale", "--top", "2", "--seeds", "2"],
        ["launch", "--space", str(space), "--name", "warm", "--warm-start", "scale", "--rehearse"],
    ):
        refused = subprocess.run([*CLI, *command], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert refused.returncode == 2, (command, refused.stdout[-2000:], refused.stderr[-2000:])
        assert refused.stderr.strip().endswith(refusal), (command, refused.stderr[-2000:])
        assert "Traceback" not in refused.stderr


def test_the_scale_benchmark_runs_three_drivers_and_checks_the_records(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--trials", "16", "--at-once", "4"]
        + ["--epoch-s", "0.05", "--keep", str(tmp_path / "runs"), "--out", str(tmp_path / "scale.json")],
        cwd=tmp_path,
        env={**quiet_env(), "ASHA_TUNE_RECORDS_PROCESS": "1"},  # as a sweep of 50 trials or more
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| driver | trials, at once | wall s | trials/s | driver CPU per trial")
    assert [row.split(":")[0] for row in table[1:]] == ["| A", "| B", "| C"]
    assert "at 4 at once: C's median wait" in done.stdout
    assert "arm C, 16 trials at 4: records: every trial once in MLflow and Optuna (16), no metric twice" in (
        done.stdout
    )
    rows = json.loads((tmp_path / "scale.json").read_text())["rows"]
    for row in rows:  # every arm's trials reported through Tune, timed from inside the trials
        assert row["results"] >= 16
        assert row["wait_median_ms"] >= 0
        assert row["cpu_s"] > 0
    # C's records were written from a process of its own, whose CPU has a column of its own.
    assert [row.get("records_cpu_s", 0) > 0 for row in rows] == [False, False, True]


def test_a_rehearsal_killed_halfway_resumes_with_every_trial_once_and_no_metric_twice(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--kill-halfway", "--trials", "24"]
        + ["--at-once", "4", "--epoch-s", "0.1", "--keep", str(tmp_path / "runs")],
        cwd=tmp_path,
        # Records from a process of their own, as a sweep of 50 trials or more: it dies with the
        # SIGKILLed driver, and writes nothing the resume then writes again.
        env={**quiet_env(), "ASHA_TUNE_RECORDS_PROCESS": "1"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "driver SIGKILLed after" in done.stdout, done.stdout
    assert "resume exit 0" in done.stdout, done.stdout
    assert "records: every trial once in MLflow and Optuna (24), no metric twice" in done.stdout, done.stdout
    # The resumed driver's last progress line counts every trial, those that ended after Tune's
    # last snapshot (which it does not run again) included.
    log = (tmp_path / "runs" / "kill-24-4" / "resume.log").read_text().splitlines()
    progress = [line for line in log if line.startswith("[")]
    assert "] trials 24/24 · running 0 · " in progress[-1], progress[-3:]


def test_on_a_terminal_the_sweeps_progress_is_one_line_updated_in_place(tmp_path):
    """`launch` on a pseudo-terminal, as a user's terminal runs it: the progress line is redrawn
    in place while trials run (rich), and the screen keeps the sweep's header, its last picture
    and its summary; every trial logs its process's CPU and memory per epoch."""
    space = space_file(
        tmp_path,
        "live",
        base={"train": {"epochs": 3, "weights": "none"}, "shaping": {"mode": "random", "convs": [1]}},
        search={"algorithm": "random", "num_trials": 4, "max_concurrent": 2, "seed": 0},
        scheduler={"kind": "fifo"},
        resources={"cpu": 1},
        parameters={"shaping.p0": {"type": "float", "low": 0.0, "high": 0.9}},
    )
    env = {k: v for k, v in quiet_env().items() if k != "ASHA_TUNE_DATA_ROOT"}
    status, raw = run_on_terminal(
        [*CLI, "launch", "--space", str(space), "--name", "live", "--rehearse", "0.2", "--num-cpus", "2"],
        cwd=tmp_path,
        env=env,
    )
    assert status == 0, raw[-3000:]
    assert raw.count("\r\x1b[2K[") >= 3, raw[-3000:]  # the line redrawn over itself, again and again
    rows = screen(raw)
    progress = [row for row in rows if "] trials " in row]
    assert len(progress) == 1, rows  # one line, updated in place: the last picture stays
    assert re.search(
        r"\] trials 4/4 · running 0 · stopped early 0 · finished 4 · failed 0 · best epoch so far: val_acc [\d.]+% "
        r"\(trial \d, epoch 3\)$",
        progress[0],
    ), progress[0]
    assert any(row.startswith("rehearsal: 4 of 4 trials recorded in MLflow and Optuna") for row in rows), rows
    assert "Traceback" not in raw

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("live").experiment_id
    children = client.search_runs([experiment], "tags.`mlflow.parentRunId` != ''")
    assert len(children) == 4
    for run in children:
        assert [m.step for m in client.get_metric_history(run.info.run_id, "system_cpu_percent")] == [1, 2, 3]
        assert client.get_metric_history(run.info.run_id, "system_memory_mb")[0].value > 10
        assert "gpu_utilization_percent" not in run.data.metrics  # no GPU given: no GPU figure
