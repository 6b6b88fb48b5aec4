"""Autoscaling from zero, on a Ray cluster run by Ray's own fake multi-node autoscaler whose node
types are deploy/ray-cluster.aws.yaml's (tests/helpers/autoscaler.py): the sweep asks, the autoscaler
adds GPU workers (logical GPUs), the trials run there, the records are complete; a space no node
type can hold stops in one line. Marked `cluster` (minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.helpers.autoscaler import FAKE_HEAD_TYPE, FakeAutoscalingCluster, fake_config

pytestmark = pytest.mark.cluster

SPACE = {  # the shipped spaces' resources (cpu 2, gpu 0.25), a CPU-sized trial
    "name": "autoscale-tiny",
    "data": {"source": "art_painting", "targets": ["cartoon"], "image_size": 32, "limit_per_domain": 35},
    "train": {"epochs": 2, "batch_size": 16, "weights": "none", "seed": 0},
    "shaping": {"mode": "random"},
    "scheduler": {"kind": "fifo"},
    "resources": {"cpu": 2, "gpu": 0.25},
    "search": {"algorithm": "random", "num_trials": 4, "max_concurrent": 4, "seed": 0},
    "parameters": {
        "shaping.convs": {"type": "conv_subset", "allowed": [1, 2, 3, 4], "min_size": 1, "max_size": 1},
        "shaping.p0": {"type": "float", "low": 0.1, "high": 0.8},
    },
}


@pytest.fixture(scope="module")
def autoscaling():
    with FakeAutoscalingCluster(idle_timeout_minutes=0.2) as cluster:
        print(f"FIGURES fake autoscaling head: up in {cluster.started_s:.1f} s")
        yield cluster


def launch(cluster: FakeAutoscalingCluster, name: str, space: dict, pacs_root, cache, *extra: str):
    work = cluster.directory / "work"
    work.mkdir(exist_ok=True)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    env = cluster.client_env({k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})
    env.update(ASHA_TUNE_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1")
    command = [
        *(sys.executable, "-m", "asha_tune.cli", "launch", "--space", str(path), "--name", name),
        *("--device", "cpu", "--address", cluster.address, "--data-root", str(pacs_root)),
        *("--tracking-uri", f"sqlite:///{work}/mlflow.db", "--study-url", f"sqlite:///{work}/optuna.db"),
        *("--results-dir", str(work / "results"), *extra),
    ]
    seen: dict[str, dict] = {}  # the worker nodes alive at any time while the driver ran
    with subprocess.Popen(
        command, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as p:
        reader = threading.Thread(target=lambda: setattr(p, "outputs", p.communicate(timeout=900)))
        reader.start()
        while reader.is_alive():
            seen.update({n["node_id"]: n for n in cluster.alive_workers()})
            reader.join(timeout=1)
    done = subprocess.CompletedProcess(command, p.returncode, *p.outputs)
    done.workers = list(seen.values())
    return done, work


def test_the_fake_cluster_has_the_launchers_node_types(autoscaling):
    launcher = autoscaling.launcher
    config = json.loads((autoscaling.directory / "autoscaling.json").read_text())
    assert config == fake_config(launcher, autoscaling.address, 0.2)
    head = launcher["available_node_types"][launcher["head_node_type"]]
    assert config["available_node_types"][FAKE_HEAD_TYPE]["resources"] == head["resources"]
    for name, spec in launcher["available_node_types"].items():
        if name == launcher["head_node_type"]:
            continue
        fake = config["available_node_types"][name]
        assert {k: v for k, v in fake["resources"].items() if k != "object_store_memory"} == spec["resources"]
        assert (fake["min_workers"], fake["max_workers"]) == (spec.get("min_workers", 0), spec["max_workers"])
    assert autoscaling.alive_workers() == []  # it starts from zero workers, as on AWS


def test_a_sweep_from_zero_workers_finishes_on_the_nodes_the_autoscaler_adds(
    autoscaling, pacs_root, shared_cache
):
    assert autoscaling.alive_workers() == []
    started = time.monotonic()
    done, work = launch(autoscaling, "from-zero", SPACE, pacs_root, shared_cache, "--resource-wait", "300")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "asking the autoscaler" in done.stdout
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    parent = json.loads((work / "results" / "from-zero" / "sweep.json").read_text())["parent_run_id"]
    experiment = client.get_experiment_by_name(SPACE["name"])
    runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(int(r.data.tags["asha_tune.trial_number"]) for r in runs) == [0, 1, 2, 3]
    study = optuna.load_study(study_name="from-zero", storage=f"sqlite:///{work}/optuna.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    gpu = autoscaling.launcher["available_node_types"]["gpu_worker"]["resources"]
    assert done.workers, "the autoscaler added no node"
    for node in done.workers:  # each one of the launcher's GPU workers, as the autoscaler made it
        assert {k: node["resources"].get(k) for k in ("CPU", "GPU")} == gpu
    # Four trials of gpu 0.25 share one worker's GPU: the autoscaler needed one node.
    assert len(done.workers) == 1
    print(
        f"FIGURES autoscaling from zero: sweep of 4 trials in {took:.0f} s, worker nodes added {len(done.workers)}"
    )


def test_a_space_no_node_type_can_hold_stops_in_one_line(autoscaling, pacs_root, shared_cache):
    space = {
        **SPACE,
        "name": "too-big",
        "resources": {"cpu": 16, "gpu": 0.25},
    }  # more CPUs than any node type
    done, _ = launch(autoscaling, "too-big", space, pacs_root, shared_cache, "--resource-wait", "20")
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert len(errors) == 1 and errors[0].startswith("asha-tune launch: error: no node of the Ray cluster"), (
        errors
    )
    assert "Traceback" not in done.stderr
