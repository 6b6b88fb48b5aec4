"""The local cluster under real load and real faults: separate Ray nodes, PostgreSQL, an MLflow
server with basic auth, all on 127.0.0.1; sweeps launched with the flags `cluster up` prints, and
deploy/kuberay/rayjob.yaml's entrypoint submitted as a Ray job (then resubmitted after its driver
was killed, as a RayJob retry does). Faults: a worker node killed, the MLflow server and PostgreSQL
restarted, the head node killed.

Every test here is marked `cluster` (minutes; `.ci/run` runs them after the default suite). Each
fault test prints its figures (trials requested, finished, retried, lost; metric points before
and after the fault) on lines starting with FIGURES.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from asha_tune import cluster as local
from asha_tune.cluster import processes
from asha_tune.cluster.mlflow_server import mlflow_request
from asha_tune.cluster.ray_nodes import ray_nodes
from asha_tune.cluster.state import STATE_FILE
from asha_tune.sweep.checkpoints import checkpoint_due
from asha_tune.sweep.session import ray_token, ray_token_file
from asha_tune.tracking.credentials import mlflow_credentials
from asha_tune.tracking.tags import DRIVER_TAG, RESUMED_FROM_TAG, RETRIES_TAG
from tests.helpers.deploy import localized, rayjob_entrypoint
from tests.helpers.processes import (
    PROCESS_TAG_ENV,
    is_loopback,
    kill_tagged,
    listening,
    started_pids,
    tagged_processes,
    wait_for,
)

pytestmark = pytest.mark.cluster

CLI = [sys.executable, "-m", "asha_tune.cli"]
SMALL = {
    "data": {"source": "art_painting", "targets": ["cartoon"], "image_size": 32, "limit_per_domain": 35},
    "train": {"epochs": 3, "batch_size": 16, "weights": "none", "seed": 0},
    "shaping": {"mode": "random"},
    "scheduler": {"kind": "fifo"},
    "resources": {"cpu": 1},
    "parameters": {
        "shaping.convs": {"type": "conv_subset", "allowed": [1, 2, 3, 4], "min_size": 1, "max_size": 1},
        "shaping.p0": {"type": "float", "low": 0.1, "high": 0.8},
    },
}


def figures(name: str, **values) -> None:
    print(f"FIGURES {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)


# --- one cluster for the module ------------------------------------------------------------


class Harness:
    """The cluster a module's tests share, and the environment their commands run in."""

    def __init__(self, directory: Path, env: dict[str, str], pacs_root: Path):
        self.directory, self.env, self.pacs_root = directory, env, pacs_root
        self.up_output = ""

    @property
    def state(self) -> local.ClusterState:
        return local.load(self.directory)

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.directory
        )

    def up(self) -> subprocess.CompletedProcess:
        done = self.cli("cluster", "up", "--dir", str(self.directory), "--workers", "2", "--worker-cpus", "1")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    def space(self, name: str, **sections) -> Path:
        tree = {"name": name, **yaml.safe_load(yaml.safe_dump(SMALL))}
        for key, value in sections.items():
            tree[key] = {**tree.get(key, {}), **value}
        path = self.directory / "spaces" / f"{name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(tree))
        return path

    def launch(self, space: Path, name: str) -> tuple[subprocess.Popen, Path]:
        """`asha-tune launch` with exactly the flags `cluster up` printed."""
        log = self.directory / "logs" / f"launch-{name}.log"
        with open(log, "w") as out:
            driver = subprocess.Popen(
                [
                    *CLI,
                    "launch",
                    "--space",
                    str(space),
                    "--name",
                    name,
                    "--device",
                    "cpu",
                    "--data-root",
                    str(self.pacs_root),
                    *self.state.launch_flags(),
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
            )
        return driver, log

    def finish(self, driver: subprocess.Popen, log: Path, timeout: float = 900) -> str:
        try:
            driver.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            raise AssertionError(
                f"the sweep did not finish in {timeout} s: {log.read_text()[-3000:]}"
            ) from None
        text = log.read_text()
        assert driver.returncode == 0, text[-4000:]
        return text

    def client(self) -> MlflowClient:
        return MlflowClient(self.state.tracking_uri)

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.state.database_url("optuna"))


@pytest.fixture(scope="module")
def harness(pacs_root, shared_cache):
    """A cluster (head + 2 one-CPU workers) in a folder every user can traverse (PostgreSQL runs as
    `postgres` when the tests run as root), with a HOME of its own for the credentials."""
    directory = Path(tempfile.mkdtemp(prefix="asha-cluster-", dir="/tmp"))
    directory.chmod(0o755)
    home = Path(tempfile.mkdtemp(prefix="asha-home-"))
    tag = uuid.uuid4().hex
    env = {
        **os.environ,
        "HOME": str(home),
        "ASHA_TUNE_CACHE_DIR": str(shared_cache),
        "PYTHONUNBUFFERED": "1",
        # asha-tune on the PATH, as where it is installed: a Ray job's entrypoint calls it by name.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PROCESS_TAG_ENV: tag,
    }
    # As a user's shell would be: the product must keep a loopback cluster on loopback by itself.
    for name in (
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
        "RAY_ADDRESS",
        "RAY_AUTH_MODE",
        "RAY_AUTH_TOKEN",
        "RAY_AUTH_TOKEN_PATH",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    ):
        env.pop(name, None)
    patch = pytest.MonkeyPatch()
    patch.setenv("HOME", str(home))  # this process reads the same credentials as the commands
    for name in (
        "RAY_AUTH_TOKEN",
        "RAY_AUTH_TOKEN_PATH",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    ):
        patch.delenv(name, raising=False)
    h = Harness(directory, env, pacs_root)
    h.tag = tag
    started = time.time()
    try:
        out = h.up().stdout
        print(f"cluster up in {time.time() - started:.0f} s", flush=True)
        user, password = mlflow_credentials()
        patch.setenv("MLFLOW_TRACKING_USERNAME", user)
        patch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        h.up_output = out
        yield h
    finally:
        h.cli("cluster", "down", "--dir", str(directory))
        if (directory / STATE_FILE).is_file():  # the safety net: whatever is left, by pid
            for service in local.load(directory).services.values():
                if service.proc:
                    processes.stop(service.proc, signal.SIGKILL, timeout=5)
        kill_tagged(tag)
        patch.undo()
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


# --- reading the records -------------------------------------------------------------------


def child_runs(h: Harness, experiment: str, parent: str) -> dict[int, object]:
    client = h.client()
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)
    numbers = [int(r.data.tags["asha_tune.trial_number"]) for r in runs]
    assert len(numbers) == len(set(numbers)), f"a trial has two MLflow runs: {sorted(numbers)}"
    return {int(r.data.tags["asha_tune.trial_number"]): r for r in runs}


def histories(h: Harness, runs: dict[int, object], metric: str = "target_acc") -> dict[int, list[tuple]]:
    client = h.client()
    return {
        n: sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, metric))
        for n, r in runs.items()
    }


def sweep_parent(h: Harness, name: str) -> str:
    return json.loads((h.state.results_dir / name / "sweep.json").read_text())["parent_run_id"]


def sweep_metric(h: Harness, name: str) -> str:
    """What the search optimises (the value Optuna is told), as the sweep recorded it."""
    return json.loads((h.state.results_dir / name / "sweep.json").read_text())["space"]["scheduler"]["metric"]


def assert_mlflow_and_optuna_agree(h: Harness, experiment: str, name: str, trials: int, epochs: int) -> dict:
    """Every requested trial exactly once in both, completed, every epoch once, same values."""
    runs = child_runs(h, experiment, sweep_parent(h, name))
    assert sorted(runs) == list(range(trials)), f"MLflow has trials {sorted(runs)}, wanted {trials}"
    study = h.study(name)
    assert sorted(t.number for t in study.trials) == list(range(trials))
    metric = sweep_metric(h, name)
    history = histories(h, runs, metric)
    for trial in study.trials:
        run = runs[trial.number]
        steps = [step for step, _ in history[trial.number]]
        assert steps == list(range(1, epochs + 1)), f"trial {trial.number}: epochs {steps}"
        assert run.data.tags["asha_tune.status"] == "completed"
        assert trial.state == TrialState.COMPLETE
        assert trial.user_attrs["values"] == json.loads(run.data.params["search"])
        assert trial.value == pytest.approx(run.data.metrics[metric])
        assert trial.intermediate_values == pytest.approx(dict(history[trial.number]))
    return runs


def checkpoints(h: Harness, name: str) -> int:
    """Epochs the trials have checkpointed (workers write these, not the driver)."""
    total = 0
    for trial_dir in (h.state.results_dir / name).glob("train_trial_*"):
        indices = [int(p.name.split("_")[1]) for p in trial_dir.glob("checkpoint_*")]
        total += max(indices) + 1 if indices else 0
    return total


def trial_actors(h: Harness) -> list[dict]:
    """Every trial actor the head knows (alive and dead): pid, node id, state."""
    url = (
        h.state.dashboard_url + "/api/v0/actors?limit=10000&detail=true&filter_keys=class_name"
        "&filter_predicates=%3D&filter_values=ImplicitFunc"
    )
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ray_token()}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["data"]["result"]["result"]


def trial_nodes(h: Harness, name: str) -> dict[int, list[str]]:
    """Trial number -> the Ray nodes its epochs ran on (result rows' pids, mapped by Ray's actors)."""
    node_of = {a["pid"]: a["node_id"] for a in trial_actors(h)}
    nodes: dict[int, list[str]] = {}
    for result in (h.state.results_dir / name).glob("train_trial_*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        number = rows[0]["config"]["trial_number"]
        nodes[number] = list(dict.fromkeys(node_of[row["pid"]] for row in rows))
    return nodes


class SocketWatch(threading.Thread):
    """Samples the listening sockets of everything the cluster started, while a sweep runs."""

    def __init__(self, h: Harness):
        super().__init__(daemon=True)
        self.h, self.seen, self.stopped = h, set(), threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            state = self.h.state
            pids = started_pids(state)
            for ip, port, pid in listening(pids):
                try:
                    name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
                except OSError:
                    name = "?"
                self.seen.add((ip, port, name))
            time.sleep(1)


# --- the tests -----------------------------------------------------------------------------


def test_up_prints_the_launch_flags_and_status_lists_every_node(harness):
    state = harness.state
    out = harness.up_output
    for flag in ("--address 127.0.0.1:", "--tracking-uri http://127.0.0.1:", "--study-url 'postgresql://"):
        assert flag in out
    assert "passfile=" in out
    assert ray_token() not in out
    assert mlflow_credentials()[1] not in out
    status = harness.cli("cluster", "status", "--dir", str(harness.directory))
    assert status.returncode == 0, status.stdout + status.stderr
    nodes = {n["node_id"]: n for n in ray_nodes(state)}
    for node in state.nodes:  # separate Ray nodes, each known to the head
        assert nodes[node.node_id]["state"] == "ALIVE"
        assert f"{node.name:10s} ray node {node.node_id[:12]}" in status.stdout
    assert [nodes[n.node_id]["resources"].get("CPU", 0) for n in state.nodes] == [0, 1, 1]


def test_sweep_runs_on_several_nodes_and_mlflow_agrees_with_optuna(harness):
    space = harness.space(
        "multinode", search={"algorithm": "optuna", "num_trials": 4, "max_concurrent": 2, "seed": 0}
    )
    watch = SocketWatch(harness)
    watch.start()
    driver, log = harness.launch(space, "multinode")
    try:
        out = harness.finish(driver, log)
    finally:
        watch.stopped.set()
        watch.join()
    assert "joined the Ray cluster at 127.0.0.1:" in out
    assert_mlflow_and_optuna_agree(harness, "multinode", "multinode", trials=4, epochs=3)
    nodes = trial_nodes(harness, "multinode")
    workers = {n.node_id for n in harness.state.nodes if n.name != "head"}
    used = {node for per_trial in nodes.values() for node in per_trial}
    print(f"trials per node: { {n[:8]: sum(n in v for v in nodes.values()) for n in used} }")
    # several nodes, never the 0-CPU head
    assert len(used) >= 2
    assert used <= workers
    # Everything the cluster started, trial workers included, listened on loopback only.
    assert watch.seen, sorted(watch.seen)
    assert all(is_loopback(ip) for ip, _, _ in watch.seen), sorted(watch.seen)
    assert any(name.startswith("ray::") for _, _, name in watch.seen)  # sampled while trials ran


def test_the_cluster_is_authenticated_and_listens_on_loopback_only(harness):
    state = harness.state
    user, password = mlflow_credentials()
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert mlflow_request(state, search, None) == 401
    assert mlflow_request(state, search, (user, password + "x")) == 401
    assert mlflow_request(state, search, (user, password)) == 200
    dashboard = urllib.request.Request(state.dashboard_url + "/nodes?view=summary")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(dashboard, timeout=30)
    assert refused.value.code == 401

    # A Ray client with a wrong token, and one with none, are refused by the GCS.
    probe = f"import ray; ray.init(address='{state.ray_address}'); print('CONNECTED')"
    empty_home = harness.directory / "empty-home"
    empty_home.mkdir(exist_ok=True)
    base = {**harness.env, "HOME": str(empty_home), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    clients = {
        "wrong token": {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"},
        "no token": base,
        "the token": {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(ray_token_file())},
    }
    running = {
        k: subprocess.Popen(
            [sys.executable, "-c", probe],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k, env in clients.items()
    }
    results = {k: p.communicate(timeout=180)[0] for k, p in running.items()}
    for refused_client in ("wrong token", "no token"):
        assert "CONNECTED" not in results[refused_client]
        assert "Unauthenticated" in results[refused_client] or "InvalidAuthToken" in results[refused_client]
    assert "CONNECTED" in results["the token"], results["the token"][-2000:]

    # PostgreSQL wants the password; the cluster's URL names the file that has it.
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(
            host="127.0.0.1",
            port=state.services["postgres"].port,
            user="asha",
            dbname="optuna",
            passfile=str(empty_home / "none"),
            connect_timeout=10,
        )
    optuna.storages.RDBStorage(state.database_url("optuna"))

    sockets = listening(started_pids(state))
    ports = {port for _, port, _ in sockets}
    assert {
        state.services["postgres"].port,
        state.services["mlflow"].port,
        state.services["head"].port,
        state.services["head"].ports["dashboard"],
    } <= ports
    assert all(is_loopback(ip) for ip, _, _ in sockets), sockets


def test_two_sweeps_at_once_do_not_interfere(harness):
    space = harness.space(
        "twin",
        search={"algorithm": "optuna", "num_trials": 3, "max_concurrent": 1, "seed": 3},
        train={"epochs": 2},
    )
    runs = [harness.launch(space, name) for name in ("twin-a", "twin-b")]
    for driver, log in runs:
        harness.finish(driver, log)
    a = assert_mlflow_and_optuna_agree(harness, "twin", "twin-a", trials=3, epochs=2)
    b = assert_mlflow_and_optuna_agree(harness, "twin", "twin-b", trials=3, epochs=2)
    assert sweep_parent(harness, "twin-a") != sweep_parent(harness, "twin-b")
    assert not {r.info.run_id for r in a.values()} & {r.info.run_id for r in b.values()}
    client = harness.client()
    experiment = client.get_experiment_by_name("twin")
    every = client.search_runs([experiment.experiment_id], "", max_results=100)
    assert len(every) == 2 + 6  # two parents, three children each: no stray run from either sweep
    figures("two sweeps", requested="3+3", finished=len(a) + len(b), lost=6 - len(a) - len(b))


def progress(h: Harness, experiment: str, name: str) -> dict[int, list[tuple]]:
    try:
        return histories(h, child_runs(h, experiment, sweep_parent(h, name)))
    except Exception:
        return {}


def last_checkpoint(epoch: int, epochs: int) -> int:
    """The last epoch up to `epoch` at which a FIFO trial of `epochs` epochs wrote a checkpoint."""
    last = 0
    for e in range(1, epoch + 1):
        if checkpoint_due(e, epochs, last, 0.0, frozenset()):
            last = e
    return last


def raylet_or_worker(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore").split("\0")
    except OSError:
        return False
    return command[0].endswith("/raylet") or (command[0].startswith("ray::") and "Agent" not in command[0])


def test_a_lost_worker_node_costs_nothing(harness):
    name = "nodeloss"
    space = harness.space(
        name,
        search={"algorithm": "random", "num_trials": 4, "max_concurrent": 2, "seed": 5, "max_failures": 3},
        train={"epochs": 8},
        data={"limit_per_domain": 70},
    )
    driver, log = harness.launch(space, name)
    state = harness.state
    worker_of = {n.node_id: n.name for n in state.nodes if n.name != "head"}

    def a_worker_mid_trial():
        seen = progress(harness, name, name)
        if not any(len(h) >= 2 for h in seen.values()):
            return None
        busy = [a["node_id"] for a in trial_actors(harness) if a["state"] == "ALIVE"]
        return next((worker_of[node] for node in busy if node in worker_of), None)

    victim = wait_for(a_worker_mid_trial, 600, "a trial with two epochs logged")
    before = progress(harness, name, name)
    node = state.services[victim]
    doomed = [p.pid for p in processes.family(node.proc) if raylet_or_worker(p.pid)]
    for pid in doomed:
        os.kill(pid, signal.SIGKILL)  # the node's raylet and workers, as a crashed machine
    killed_at = time.time()
    print(f"killed {victim}: raylet and {len(doomed) - 1} workers {doomed}", flush=True)
    wait_for(lambda: not processes.alive(node.proc), 60, "the node's runner to end its node")

    def ray_says_dead():
        return {n["node_id"]: n["state"] for n in ray_nodes(harness.state)}.get(node.node_id) == "DEAD"

    wait_for(ray_says_dead, 180, f"Ray to mark {victim} dead")
    print(f"Ray marked {victim} dead {time.time() - killed_at:.0f} s after the kill", flush=True)
    out = harness.finish(driver, log)

    runs = assert_mlflow_and_optuna_agree(harness, name, name, trials=4, epochs=8)
    after = histories(harness, runs)
    kept = sum(point in after[n] for n, points in before.items() for point in points)
    retried = {n: int(r.data.tags[RETRIES_TAG]) for n, r in runs.items() if int(r.data.tags[RETRIES_TAG])}
    assert retried, "no trial was retried after its node died"
    for number in retried:
        # It went on from its last checkpoint before the kill: trials checkpoint as retries need
        # (sweep/checkpoints.py: doubling epochs), so at or after the last one that rule wrote
        # by the last epoch MLflow had, which loses at most half the trial's work (a trial with
        # no checkpoint yet starts over, untagged).
        resumed = int(runs[number].data.tags.get(RESUMED_FROM_TAG, 0))
        assert resumed >= last_checkpoint(max((s for s, _ in before.get(number, [])), default=0), 8)
        nodes = trial_nodes(harness, name)[number]
        # finished on another node
        assert len(nodes) >= 2
        assert nodes[-1] != node.node_id
    figures(
        "worker killed",
        requested=4,
        finished=len(runs),
        retried=len(retried),
        retried_trials=sorted(retried),
        lost=4 - len(runs),
        metric_points_before=sum(map(len, before.values())),
        kept=kept,
        metric_points_after=sum(map(len, after.values())),
        finished_after_kill_s=round(time.time() - killed_at),
    )
    assert kept == sum(map(len, before.values()))  # every metric recorded before the fault is there
    assert not re.search(r"asha-tune [a-z]+: error", out)

    healed = harness.up()  # `up` restarts exactly the lost node, on the cluster's ports
    assert f"started {victim} in" in healed.stdout
    assert harness.state.services[victim].running


def outage_test(harness, name: str, service: str) -> None:
    """A sweep while `service` is stopped and restarted (by `cluster up`): nothing lost."""
    space = harness.space(
        name,
        search={"algorithm": "optuna", "num_trials": 4, "max_concurrent": 2, "seed": 7},
        train={"epochs": 8},
        data={"limit_per_domain": 70},
    )
    driver, log = harness.launch(space, name)
    wait_for(
        lambda: any(len(h) >= 2 for h in progress(harness, name, name).values()),
        600,
        "a trial with two epochs logged",
    )
    before = progress(harness, name, name)
    checkpointed = checkpoints(harness, name)
    stopped_at = time.time()
    server_log = harness.directory / "logs" / "mlflow.log"
    errors_before = server_log.read_text().count('" 500')
    local.stop_service(harness.state, service)
    # Trials keep training while it is down. They checkpoint at doubling epochs (2, 4, 8) and a
    # driver blocked on the store holds back their next report, so a checkpoint during the outage
    # is likely, not certain: keep the service down until one lands, or for 60 s.
    deadline = time.time() + 60
    while time.time() < deadline and not checkpoints(harness, name) - checkpointed:
        time.sleep(0.5)
    during = checkpoints(harness, name) - checkpointed
    restarted = harness.up()
    assert f"started {service} in" in restarted.stdout
    outage = time.time() - stopped_at
    out = harness.finish(driver, log)
    runs = assert_mlflow_and_optuna_agree(harness, name, name, trials=4, epochs=8)
    after = histories(harness, runs)
    kept = sum(point in after[n] for n, points in before.items() for point in points)
    figures(
        f"{service} restarted",
        requested=4,
        finished=len(runs),
        retried=sum(int(r.data.tags[RETRIES_TAG]) > 0 for r in runs.values()),
        lost=4 - len(runs),
        outage_s=round(outage),
        epochs_checkpointed_during_outage=during,
        metric_points_before=sum(map(len, before.values())),
        kept=kept,
        metric_points_after=sum(map(len, after.values())),
        optuna_retry_warnings=out.count("unreachable; retrying"),
        mlflow_server_500s=server_log.read_text().count('" 500') - errors_before,
    )
    assert kept == sum(map(len, before.values()))
    assert not re.search(r"asha-tune [a-z]+: error", out)


def test_mlflow_server_restart_loses_no_metric(harness):
    outage_test(harness, "mlflow-outage", "mlflow")


def test_postgres_restart_loses_nothing(harness):
    outage_test(harness, "postgres-outage", "postgres")


# --- the RayJob's driver ----------------------------------------------------------------------


def cluster_token_file(h: Harness) -> Path:
    """The Ray token the cluster's nodes use: the one `cluster up` made in the harness's HOME."""
    return Path(h.env["HOME"]) / ".ray" / "auth_token"


def job_api(h: Harness, path: str) -> dict:
    """Ray's job REST API on the head's dashboard (what `ray job status/logs` read), with the token."""
    token = cluster_token_file(h).read_text().strip()
    request = urllib.request.Request(
        h.state.dashboard_url + path, headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def submit_job(h: Harness, entrypoint: str, submission_id: str) -> None:
    """`ray job submit` as KubeRay's submitter does (`ray job submit --address ... -- ENTRYPOINT`,
    the entrypoint's words after `--`): to the head's dashboard, with the Ray token."""
    env = {**h.env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(cluster_token_file(h))}
    done = subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", h.state.dashboard_url]
        + ["--submission-id", submission_id, "--no-wait", "--", *shlex.split(entrypoint)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def job_ended(h: Harness, submission_id: str, timeout: float = 900) -> tuple[str, str]:
    """(status, driver output) once the job has ended."""
    ended = ("SUCCEEDED", "FAILED", "STOPPED")
    status = wait_for(
        lambda: (s := job_api(h, f"/api/jobs/{submission_id}")["status"]) in ended and s,
        timeout,
        f"job {submission_id} to end",
        poll=2,
    )
    return status, job_api(h, f"/api/jobs/{submission_id}/logs")["logs"]


def test_the_rayjob_entrypoint_runs_as_a_job_and_its_retry_after_a_lost_driver_continues(harness):
    state = harness.state
    epochs = 24  # long enough that the first driver still runs while a second submission is refused
    command = localized(
        rayjob_entrypoint(),
        {  # the cluster's services in place of the Kubernetes ones, this machine's disk for the volume
            "--tracking-uri": state.tracking_uri,
            "--study-url": state.database_url("optuna"),
            "--results-dir": str(state.results_dir),
            "--data-root": str(harness.pacs_root),
        },
        # CPU-sized here: small images, no ImageNet weights, CPU trials on the 1-CPU workers.
        *("--device", "cpu", "--weights", "none", "--set", "resources.gpu=0", "--set", "resources.cpu=1"),
        *(
            "--set",
            "data.image_size=32",
            "--set",
            "data.limit_per_domain=70",
            "--set",
            f"train.epochs={epochs}",
        ),
        *("--set", "train.batch_size=16", "--set", "scheduler.kind=fifo", "--set", "search.num_trials=4"),
        *("--set", "search.max_concurrent=2"),
    )
    assert command[:2] == ["asha-tune", "launch"]
    assert "--if-exists" in command
    name = command[command.index("--name") + 1]
    space = command[command.index("--space") + 1]
    entrypoint = shlex.join(command)

    submit_job(harness, entrypoint, "rayjob-1")

    def two_epochs_logged() -> bool:
        job = job_api(harness, "/api/jobs/rayjob-1")
        if job["status"] not in ("PENDING", "RUNNING"):
            logs = job_api(harness, "/api/jobs/rayjob-1/logs")["logs"]
            raise AssertionError(f"the job ended {job['status']}: {job.get('message')}\n{logs[-3000:]}")
        return any(len(h) >= 2 for h in progress(harness, space, name).values())

    wait_for(two_epochs_logged, 600, "a trial with two epochs logged", poll=2)
    # A second submission while the first driver runs is refused, and changes nothing.
    submit_job(harness, entrypoint, "rayjob-busy")
    busy, busy_log = job_ended(harness, "rayjob-busy", timeout=300)
    assert busy == "FAILED", busy_log[-2000:]
    assert "is being run by another driver" in busy_log, busy_log[-2000:]
    assert job_api(harness, "/api/jobs/rayjob-1")["status"] == "RUNNING", "the sweep ended too soon"

    before = progress(harness, space, name)
    drivers = tagged_processes(harness.tag, name)  # the entrypoint's shell and asha-tune
    assert drivers
    for pid in drivers:
        os.kill(pid, signal.SIGKILL)  # the driver lost, as when its pod or node goes
    lost, first_log = job_ended(harness, "rayjob-1", timeout=300)
    assert lost == "FAILED", first_log[-2000:]
    parent = harness.client().get_run(sweep_parent(harness, name))
    assert parent.data.tags["asha_tune.status"] == "running"  # nobody closed it: the driver was killed

    submit_job(harness, entrypoint, "rayjob-2")  # what KubeRay's retry does (backoffLimit)
    status, log = job_ended(harness, "rayjob-2")
    assert status == "SUCCEEDED", log[-4000:]
    assert f"sweep {name} was recorded as running, but its driver" in log
    assert "is gone: continuing it" in log
    assert "resuming: finished trials are kept" in log
    runs = assert_mlflow_and_optuna_agree(harness, space, name, trials=4, epochs=epochs)
    after = histories(harness, runs)
    kept = sum(point in after[n] for n, points in before.items() for point in points)
    assert kept == sum(map(len, before.values()))
    driver = json.loads(harness.client().get_run(sweep_parent(harness, name)).data.tags[DRIVER_TAG])
    assert driver["ray_job"] == job_api(harness, "/api/jobs/rayjob-2")["driver_info"]["id"]

    submit_job(harness, entrypoint, "rayjob-3")  # re-applied after it finished: it reports, succeeds
    again, again_log = job_ended(harness, "rayjob-3", timeout=300)
    assert again == "SUCCEEDED"
    assert f"sweep {name} has finished (4 trials): nothing to resume" in again_log
    assert_mlflow_and_optuna_agree(harness, space, name, trials=4, epochs=epochs)
    figures(
        "rayjob driver killed",
        requested=4,
        finished=len(runs),
        lost=4 - len(runs),
        metric_points_before=sum(map(len, before.values())),
        kept=kept,
        metric_points_after=sum(map(len, after.values())),
        retried_job="SUCCEEDED",
        busy_job="FAILED (refused)",
    )


# --- the head node lost -------------------------------------------------------------------------


def test_a_lost_head_ends_the_driver_in_one_line_and_resume_continues_after_up(harness):
    name = "headloss"
    space = harness.space(
        name,
        search={"algorithm": "random", "num_trials": 4, "max_concurrent": 2, "seed": 11},
        train={"epochs": 8},
        data={"limit_per_domain": 70},
    )
    driver, log = harness.launch(space, name)
    wait_for(
        lambda: any(len(h) >= 2 for h in progress(harness, name, name).values()),
        600,
        "a trial with two epochs logged",
    )
    before = progress(harness, name, name)
    state = harness.state
    head = state.services["head"]
    doomed = processes.family(head.proc)
    for proc in doomed:  # the head's runner, GCS, raylet, dashboard and workers, as a crashed machine
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed_at = time.time()
    try:
        driver.wait(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        raise AssertionError(f"the driver did not end: {log.read_text()[-3000:]}") from None
    ended_s = time.time() - killed_at
    out = log.read_text()
    assert driver.returncode == 3, out[-3000:]
    errors = [line for line in out.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        f"asha-tune launch: error: lost the Ray cluster's head at {state.ray_address}"
    )
    assert "asha-tune cluster up" in errors[0]
    assert f"asha-tune resume {name} --results-dir {state.results_dir}" in errors[0]
    # not Ray's abort
    assert "rpc_client" not in out
    assert "The program will terminate" not in out
    # Every record closed: nothing RUNNING, the trials resumable.
    parent = harness.client().get_run(sweep_parent(harness, name))
    assert parent.info.status == "KILLED"
    assert parent.data.tags["asha_tune.status"] == "interrupted"
    assert "lost the Ray cluster's head" in parent.data.tags["asha_tune.failure"]
    children = child_runs(harness, name, sweep_parent(harness, name))
    assert all(r.info.status != "RUNNING" for r in children.values())
    assert all(r.data.tags["asha_tune.status"] != "running" for r in children.values())
    interrupted = [n for n, r in children.items() if r.data.tags["asha_tune.status"] == "interrupted"]
    trials = harness.study(name).trials
    assert all(t.state != TrialState.RUNNING for t in trials)
    parked = [t.number for t in trials if t.state == TrialState.WAITING]
    assert interrupted
    # Every interrupted trial is parked for resume; so is a trial the searcher had just asked for
    # when the head went, whose Ray trial never started (no MLflow run of its own yet).
    assert set(interrupted) <= set(parked), (parked, interrupted)
    assert not (set(parked) - set(interrupted)) & set(children), (parked, interrupted, sorted(children))

    harness.up()  # the head back, on the cluster's ports (its workers restarted with it)
    resumed = harness.cli(
        "resume", name, "--results-dir", str(state.results_dir), "--device", "cpu", timeout=900
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    runs = assert_mlflow_and_optuna_agree(harness, name, name, trials=4, epochs=8)
    after = histories(harness, runs)
    kept = sum(point in after[n] for n, points in before.items() for point in points)
    silent_s = int(re.search(r"no answer for (\d+) s", errors[0]).group(1))
    figures(
        "head killed",
        head_silent_when_watch_fired_s=silent_s,
        requested=4,
        finished=len(runs),
        lost=4 - len(runs),
        driver_ended_after_kill_s=round(ended_s),
        watch_limit_s=30,
        exit_code=driver.returncode,
        records_running_after=0,
        trials_interrupted=len(interrupted),
        metric_points_before=sum(map(len, before.values())),
        kept=kept,
        metric_points_after=sum(map(len, after.values())),
    )
    assert kept == sum(map(len, before.values()))


def test_down_stops_exactly_what_up_started(pacs_root, tmp_path):
    directory = Path(tempfile.mkdtemp(prefix="asha-cluster-", dir="/tmp"))
    directory.chmod(0o755)
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)  # someone else's process
    try:
        up = subprocess.run(
            [*CLI, "cluster", "up", "--dir", str(directory), "--workers", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        state = local.load(directory)
        procs = [p for s in state.services.values() if s.proc for p in processes.family(s.proc)]
        pids = [p.pid for p in procs]
        ports = {port for _, port, _ in listening(pids)}
        assert len(pids) > 10
        assert ports
        down = subprocess.run(
            [*CLI, "cluster", "down", "--dir", str(directory)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert down.returncode == 0, down.stderr
        assert re.findall(r"stopped (head|worker-1|mlflow|postgres)", down.stdout) == [
            "worker-1",
            "head",
            "mlflow",
            "postgres",
        ]
        survivors = [p.pid for p in procs if processes.alive(p)]
        assert not survivors, survivors
        assert not [p for p in ports if processes.port_open(p)]
        assert bystander.poll() is None  # untouched
        status = subprocess.run(
            [*CLI, "cluster", "status", "--dir", str(directory)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 1
        assert status.stdout.count("DOWN") == 4
        figures("down", processes_started=len(pids), listening_ports=len(ports), left_running=len(survivors))
    finally:
        bystander.kill()
        if (directory / STATE_FILE).is_file():
            for service in local.load(directory).services.values():
                if service.proc:
                    processes.stop(service.proc, signal.SIGKILL, timeout=5)
        shutil.rmtree(directory, ignore_errors=True)
