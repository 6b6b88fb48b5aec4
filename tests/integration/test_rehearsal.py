"""`asha-tune launch --rehearse` on a real local Ray, MLflow and Optuna: simulated trials, no data,
no torch in the trials, records exactly once and marked, and every reader refusing them; and the
scale benchmark's small version (the three drivers side by side, a SIGKILL and a resume)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from benchmarks.scale import check_records
from tests.helpers.sweeps import quiet_env, space_file

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
        env=quiet_env(),
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


def test_a_rehearsal_killed_halfway_resumes_with_every_trial_once_and_no_metric_twice(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "scale.py"), "--kill-halfway", "--trials", "24"]
        + ["--at-once", "4", "--epoch-s", "0.1", "--keep", str(tmp_path / "runs")],
        cwd=tmp_path,
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "driver SIGKILLed after" in done.stdout, done.stdout
    assert "resume exit 0" in done.stdout, done.stdout
    assert "records: every trial once in MLflow and Optuna (24), no metric twice" in done.stdout, done.stdout
