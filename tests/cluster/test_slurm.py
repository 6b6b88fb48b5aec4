"""deploy/slurm/asha-tune.sbatch on a real SLURM: two nodes on this machine (tests/helpers/slurm.py),
the script submitted with sbatch as a user would, its Ray head and worker started with srun, the
sweep's driver joined to them; the sweep finishes with complete records and trials on both nodes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.helpers.data import REPO
from tests.helpers.slurm import SlurmCluster, missing_programs, node_address

SCRIPT = REPO / "deploy" / "slurm" / "asha-tune.sbatch"
SPACE = {
    "name": "slurm-tiny",
    "data": {"source": "art_painting", "targets": ["cartoon"], "image_size": 32, "limit_per_domain": 35},
    "train": {"epochs": 2, "batch_size": 16, "weights": "none", "seed": 0},
    "shaping": {"mode": "random"},
    "scheduler": {"kind": "fifo"},
    "resources": {"cpu": 1},
    "search": {"algorithm": "random", "num_trials": 4, "max_concurrent": 2, "seed": 0},
    "parameters": {
        "shaping.convs": {"type": "conv_subset", "allowed": [1, 2, 3, 4], "min_size": 1, "max_size": 1},
        "shaping.p0": {"type": "float", "low": 0.1, "high": 0.8},
    },
}


def test_the_sbatch_script_refuses_an_unknown_command():
    done = subprocess.run(["bash", str(SCRIPT), "sweep"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "usage: sbatch" in done.stderr
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def user_environment(folder: Path, cache: Path) -> dict[str, str]:
    """A user's shell with this checkout's environment activated (`ray`, `asha-tune`, `python`)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    venv_bin = Path(sys.executable).parent
    ray = venv_bin / "ray"
    if not ray.exists():  # a venv sharing another's site-packages has no `ray` script of its own
        ray = bin_dir / "ray"
        ray.write_text(f'#!/bin/sh\nexec {sys.executable} -m ray.scripts.scripts "$@"\n')
        ray.chmod(0o755)
    home = folder / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(
        HOME=str(home),
        PATH=f"{bin_dir}:{venv_bin}:{env.get('PATH', '/usr/bin:/bin')}",
        RAY_TMPDIR=str(folder),  # Ray's sessions and ray_current_cluster in the test's folder
        ASHA_TUNE_CACHE_DIR=str(cache),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.mark.cluster
@pytest.mark.skipif(bool(missing_programs()), reason=f"SLURM/munge not installed: {missing_programs()}")
def test_the_sbatch_script_runs_a_sweep_on_a_two_node_slurm(pacs_root, shared_cache):
    folder = Path(tempfile.mkdtemp(prefix="asha-slurm-", dir="/tmp"))  # short: Ray's socket paths
    folder.chmod(0o755)
    job_dir = folder / "job"
    job_dir.mkdir()
    (job_dir / "space.yaml").write_text(yaml.safe_dump(SPACE))
    env = user_environment(folder, shared_cache)
    try:
        run_the_script(folder, job_dir, env, pacs_root)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_the_script(folder: Path, job_dir: Path, env: dict[str, str], pacs_root: Path) -> None:
    with SlurmCluster(folder / "slurm", nodes=2, cpus=2) as slurm:
        args = [
            "launch",
            *("--space", str(job_dir / "space.yaml"), "--name", "slurm-sweep", "--device", "cpu"),
            *(
                "--tracking-uri",
                f"sqlite:///{job_dir}/mlflow.db",
                "--study-url",
                f"sqlite:///{job_dir}/optuna.db",
            ),
            *("--results-dir", str(job_dir / "results"), "--data-root", str(pacs_root)),
        ]
        started = time.monotonic()
        # The script's own resources, less what this machine lacks (GPUs; 2 CPUs per node).
        job = slurm.sbatch(SCRIPT, args, env, job_dir, options=["--cpus-per-task=2", "--gpus-per-task=0"])
        state = slurm.wait_job(job, timeout=900)
        took = time.monotonic() - started
        out = (job_dir / f"asha-tune-{job}.out").read_text()
        assert state == "COMPLETED", out[-5000:]
    assert f"Ray head on n1 at {node_address(1)}:" in out
    assert "Ray worker on n2" in out
    assert "Ray cluster up: 2 nodes" in out
    assert f"joined the Ray cluster at {node_address(1)}:" in out
    # The records are complete: every trial once, completed, in MLflow and Optuna alike.
    client = MlflowClient(f"sqlite:///{job_dir}/mlflow.db")
    parent = json.loads((job_dir / "results" / "slurm-sweep" / "sweep.json").read_text())["parent_run_id"]
    assert client.get_run(parent).info.status == "FINISHED"
    experiment = client.get_experiment_by_name("slurm-tiny")
    runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(int(r.data.tags["asha_tune.trial_number"]) for r in runs) == [0, 1, 2, 3]
    assert all(r.data.tags["asha_tune.status"] == "completed" for r in runs)
    study = optuna.load_study(study_name="slurm-sweep", storage=f"sqlite:///{job_dir}/optuna.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    # Trials ran on both SLURM nodes' Ray nodes (Tune records each result's node address).
    ips = set()
    for result in (job_dir / "results" / "slurm-sweep").glob("train_trial_*/result.json"):
        ips |= {json.loads(line)["node_ip"] for line in result.read_text().splitlines() if line.strip()}
    assert ips == {node_address(1), node_address(2)}, ips
    print(
        f"FIGURES slurm: slurm up in {slurm.started_s:.1f} s, job (Ray head + worker + 4-trial sweep) {took:.0f} s"
    )
