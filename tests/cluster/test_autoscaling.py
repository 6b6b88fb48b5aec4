"""Autoscaling from zero, on a Ray cluster run by Ray's own fake multi-node autoscaler whose node
types are deploy/ray-cluster.aws.yaml's (tests/helpers/autoscaler.py): with no --resource-wait the
sweep sees the autoscaler, asks it, and waits while it adds GPU workers (logical GPUs); the trials
run there, the records are complete; a space no node type can hold stops at once in one line. The
`ray exec` launch that deploy/ documents runs in the head's environment (`--address auto`) and its
trials run on the workers the autoscaler added. Marked `cluster` (minutes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from asha_tune.tracking.tags import NODE_TAG, NODES_TAG
from tests.helpers.autoscaler import FAKE_HEAD_TYPE, FakeAutoscalingCluster, fake_config
from tests.helpers.deploy import DEPLOY, documented_ray_exec, localized
from tests.helpers.processes import PROCESS_TAG_ENV

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


def run_driver(
    cluster: FakeAutoscalingCluster, command: list[str], env: dict, cwd
) -> subprocess.CompletedProcess:
    """Run a driver to its end, sampling the worker nodes alive meanwhile (`.workers`)."""
    seen: dict[str, dict] = {}  # the worker nodes alive at any time while the driver ran
    started = time.monotonic()
    with subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as p:
        reader = threading.Thread(target=lambda: setattr(p, "outputs", p.communicate(timeout=900)))
        reader.start()
        while reader.is_alive():
            seen.update({n["node_id"]: n for n in cluster.alive_workers()})
            reader.join(timeout=1)
    done = subprocess.CompletedProcess(command, p.returncode, *p.outputs)
    done.workers = list(seen.values())
    done.took = time.monotonic() - started
    return done


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
    return run_driver(cluster, command, env, work), work


def wait_until_no_workers(cluster: FakeAutoscalingCluster, timeout: float = 180) -> None:
    """The autoscaler removes idle workers (idle_timeout_minutes 0.2): each test starts from zero."""
    deadline = time.monotonic() + timeout
    while cluster.alive_workers():
        assert time.monotonic() < deadline, "the autoscaler did not remove its idle workers"
        time.sleep(2)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


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
    wait_until_no_workers(autoscaling)
    done, work = launch(autoscaling, "from-zero", SPACE, pacs_root, shared_cache)  # no --resource-wait
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "asking the autoscaler, waiting up to 15m00s" in done.stdout
    assert done.stderr.strip() == "", done.stderr[-3000:]  # Ray's own lines go to the driver's log file
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
    assert {r.data.tags[NODE_TAG] for r in runs} == {done.workers[0]["node_id"]}
    print(
        f"FIGURES autoscaling from zero: sweep of 4 trials in {done.took:.0f} s, "
        f"worker nodes added {len(done.workers)}, no --resource-wait"
    )


def test_a_space_no_node_type_can_hold_stops_in_one_line(autoscaling, pacs_root, shared_cache):
    space = {
        **SPACE,
        "name": "too-big",
        "resources": {"cpu": 16, "gpu": 0.25},
    }  # more CPUs than any node type
    done, work = launch(autoscaling, "too-big", space, pacs_root, shared_cache)  # no --resource-wait
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    errors = error_lines(done.stderr)
    assert len(errors) == 1, errors
    # The workers an earlier test's sweep had the autoscaler add may still be up (idle timeout).
    assert re.match(
        r"asha-tune launch: error: no node of the Ray cluster can run a trial of space too-big "
        r"\(each needs 16 CPU, 0\.25 GPU; nodes: the head \(0 CPU, 0 GPU\)"
        r"(, \d+ others? \([\d.]+ CPU, [\d.]+ GPU\))*\): the autoscaler adds no node for it",
        errors[0],
    ), errors
    assert "asha-tune resume too-big" in errors[0]  # the sweep is kept
    assert done.took < 120  # at once, not after the 900 s default wait
    parent = json.loads((work / "results" / "too-big" / "sweep.json").read_text())["parent_run_id"]
    run = MlflowClient(f"sqlite:///{work}/mlflow.db").get_run(parent)
    assert run.info.status == "KILLED"
    assert run.data.tags["asha_tune.status"] == "interrupted"
    print(f"FIGURES no node type fits: stopped in {done.took:.0f} s (launch to exit), default wait 900 s")


def heads_environment(cluster: FakeAutoscalingCluster, home) -> dict[str, str]:
    """The environment of a `ray exec` shell on the head of a `ray up` cluster: Ray's token in
    ~/.ray/auth_token (the launcher's file_mounts), the address `ray start --head` recorded in
    Ray's temp folder, and no RAY_ADDRESS, RAY_AUTH_* or RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER. The
    one difference: Ray's temp folder is the kit's ($RAY_TMPDIR), not /tmp/ray, which other Ray
    instances on this machine share."""
    (home / ".ray").mkdir(parents=True)
    token = home / ".ray" / "auth_token"
    shutil.copy(cluster.token_file, token)
    token.chmod(0o600)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_", "MLFLOW_")) and k != "ASHA_TUNE_DATA_ROOT"
    }
    env.update(HOME=str(home), RAY_TMPDIR=str(cluster.directory), PYTHONUNBUFFERED="1")
    env[PROCESS_TAG_ENV] = cluster.tag
    return env


def test_the_documented_ray_exec_launch_runs_on_the_workers_from_the_heads_environment(
    autoscaling, pacs_root, shared_cache, tmp_path
):
    wait_until_no_workers(autoscaling)
    documented = documented_ray_exec((DEPLOY / "README.md").read_text())
    assert documented == documented_ray_exec((DEPLOY / "ray-cluster.aws.yaml").read_text())
    work = tmp_path / "work"
    work.mkdir()
    command = localized(
        documented,
        {  # the placeholders a user fills in: the tracking server, the database, the shared disk
            "--tracking-uri": f"sqlite:///{work}/mlflow.db",
            "--study-url": f"sqlite:///{work}/optuna.db",
            "--results-dir": str(work / "results"),
            "--data-root": str(pacs_root),
        },
        # CPU-sized here: small images, few of them, two epochs, four trials, no ImageNet weights.
        *("--name", "ray-exec", "--device", "cpu", "--weights", "none", "--cache-dir", str(shared_cache)),
        *("--set", "data.image_size=32", "--set", "data.limit_per_domain=35", "--set", "train.epochs=2"),
        *("--set", "train.batch_size=16", "--set", "scheduler.kind=fifo", "--set", "search.num_trials=4"),
    )
    assert command[:5] == ["asha-tune", "launch", "--space", "random_layers", "--address"]
    asha_tune = shutil.which("asha-tune", path=os.path.dirname(sys.executable))
    assert asha_tune, "the asha-tune command is not installed beside this Python"
    done = run_driver(
        autoscaling, [asha_tune, *command[1:]], heads_environment(autoscaling, tmp_path / "home"), work
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Joined the head's cluster, and says where (not "auto"), instead of starting a Ray of its own.
    assert f"joined the Ray cluster at {autoscaling.address} (--address auto" in done.stdout
    assert "Ray's logs (trial output" not in done.stdout  # the line a local Ray would print
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    parent = json.loads((work / "results" / "ray-exec" / "sweep.json").read_text())["parent_run_id"]
    experiment = client.get_experiment_by_name("random_layers")
    runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(int(r.data.tags["asha_tune.trial_number"]) for r in runs) == [0, 1, 2, 3]
    workers = {n["node_id"] for n in done.workers}
    heads = {n["node_id"] for n in autoscaling.nodes() if n["is_head"]}
    ran_on = {node for r in runs for node in r.data.tags[NODES_TAG].split(",")}
    assert workers, (ran_on, workers, heads)
    assert ran_on <= workers, (ran_on, workers, heads)
    assert not ran_on & heads, (ran_on, workers, heads)
    print(
        f"FIGURES documented ray exec launch: 4 trials in {done.took:.0f} s from the head's environment, "
        f"on {len(ran_on)} autoscaled worker node(s), none on the head"
    )
