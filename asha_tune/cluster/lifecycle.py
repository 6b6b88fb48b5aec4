"""`asha-tune cluster up | status | down`: start what is not running, report, stop exactly what
was started."""

from __future__ import annotations

import functools
import json
import os
import secrets
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from asha_tune.cluster import processes
from asha_tune.cluster.mlflow_server import mlflow_request, start_mlflow
from asha_tune.cluster.postgres import create_databases, postgres_bin, postgres_ready, start_postgres
from asha_tune.cluster.processes import Proc
from asha_tune.cluster.ray_nodes import ray_nodes, start_node
from asha_tune.cluster.state import HOST, STATE_FILE, ClusterError, ClusterState, Service, load
from asha_tune.sweep.jobs import ray_token_file
from asha_tune.tracking.credentials import mlflow_credentials

START_TIMEOUT_S = 240.0  # a loaded machine: MLflow's server takes a while to import


def _new_state(
    directory: Path, workers: int, worker_cpus: int | None, worker_gpus: int, head_cpus: int
) -> ClusterState:
    temp = directory / "ray"
    if len(str(temp)) > 60:  # Ray's Unix socket paths live under it and must stay short
        temp = Path(tempfile.gettempdir()) / f"asha-tune-ray-{secrets.token_hex(4)}"
    free = processes.free_port
    services = {
        "postgres": Service(name="postgres", port=free()),
        "mlflow": Service(name="mlflow", port=free()),
        "head": Service(name="head", port=free(), ports={"dashboard": free(), "agent": free()}),
    }
    for i in range(1, workers + 1):
        services[f"worker-{i}"] = Service(
            name=f"worker-{i}", port=services["head"].port, ports={"agent": free()}
        )
    cpus = worker_cpus if worker_cpus is not None else max(1, (os.cpu_count() or 1) // max(workers, 1))
    return ClusterState(
        directory=directory,
        workers=workers,
        worker_cpus=cpus,
        worker_gpus=worker_gpus,
        head_cpus=head_cpus,
        ray_temp_dir=temp,
        mlflow_user=mlflow_credentials()[0],
        services=services,
    )


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip()[:300] if lines else "empty log"


def _wait(
    state: ClusterState, name: str, ready: Callable[[], bool], log: Path, timeout: float = START_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout
    service = state.services[name]
    while time.monotonic() < deadline:
        if ready():
            return
        if not service.running:
            raise ClusterError(f"{name} exited during start: {_last_line(log)} (log: {log})")
        time.sleep(0.3)
    raise ClusterError(f"{name} did not come up within {timeout:.0f} s (log: {log})")


def up(
    directory: Path,
    workers: int | None = None,
    worker_cpus: int | None = None,
    worker_gpus: int = 0,
    head_cpus: int = 0,
    say: Callable[[str], None] = print,
) -> ClusterState:
    """Start the cluster, or whatever of it is not running, and record what was started.

    A new cluster gets `workers` worker nodes (default 2); an existing one keeps its own.
    """
    directory = directory.resolve()
    if workers is not None and workers < 1:
        raise ClusterError(f"--workers {workers}: a cluster needs at least one worker node")
    postgres_bin()  # fail before anything starts when PostgreSQL is missing
    state = _existing_or_new(directory, workers, worker_cpus, worker_gpus, head_cpus)
    started: list[str] = []
    try:
        _start_what_is_down(state, directory, started)
    except BaseException:
        for name in reversed(started):  # what this call started; data and records stay
            if (proc := state.services[name].proc) is not None:
                processes.stop(proc)
                state.services[name].proc = None
        state.save()
        raise
    state.save()
    if started:
        say(f"started {', '.join(started)} in {directory}")
    return state


def _existing_or_new(
    directory: Path, workers: int | None, worker_cpus: int | None, worker_gpus: int, head_cpus: int
) -> ClusterState:
    """The cluster recorded in `directory` (which keeps its own workers), or a new one's plan."""
    if (directory / STATE_FILE).is_file():
        state = load(directory)
        if workers is not None and workers != state.workers:
            raise ClusterError(
                f"the cluster in {directory} has {state.workers} workers: "
                f"asha-tune cluster down first to change that"
            )
        return state
    directory.mkdir(parents=True, exist_ok=True)
    return _new_state(directory, workers or 2, worker_cpus, worker_gpus, head_cpus)


def _start_what_is_down(state: ClusterState, directory: Path, started: list[str]) -> None:
    """Start PostgreSQL, MLflow and the Ray nodes that are not running, in that order, each
    name appended to `started` as it starts (what `up` stops again if a later one fails)."""
    logs = directory / "logs"
    if not state.services["postgres"].running:
        _start(state, directory, started, "postgres", start_postgres)
        _wait(state, "postgres", lambda: postgres_ready(state), logs / "postgres.log")
        create_databases(state)
    if not state.services["mlflow"].running:
        _start(state, directory, started, "mlflow", start_mlflow)
    for node in state.nodes:  # the head first: workers join it
        if node.name != "head" and "head" in started and node.running:
            stop_service(state, node.name)  # it belonged to the head that is gone
        if not node.running:
            _start(state, directory, started, node.name, functools.partial(start_node, name=node.name))
            if node.name == "head":
                _wait_node(state, "head")
    for node in state.nodes:
        if node.name in started and node.name != "head":
            _wait_node(state, node.name)
    if "mlflow" in started:
        _wait_mlflow(state, logs / "mlflow.log")


def _start(
    state: ClusterState,
    directory: Path,
    started: list[str],
    name: str,
    launcher: Callable[[ClusterState], Proc],
) -> None:
    """Launch one service on its recorded ports, refused while another process holds one."""
    service = state.services[name]
    own = [*service.ports.values(), *([] if name.startswith("worker-") else [service.port])]
    if taken := [port for port in own if processes.port_open(port)]:
        raise ClusterError(
            f"cannot start {name}: port {taken[0]} is taken by another process "
            f"(asha-tune cluster down --dir {directory}, then up again)"
        )
    service.proc = launcher(state)
    started.append(name)
    state.save()


def _wait_mlflow(state: ClusterState, log: Path) -> None:
    """Until MLflow's server answers its health check, then an authenticated search."""
    credentials = mlflow_credentials()
    _wait(state, "mlflow", lambda: mlflow_request(state, "/health", None) == 200, log)
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    _wait(state, "mlflow", lambda: mlflow_request(state, search, credentials) == 200, log)


def _wait_node(state: ClusterState, name: str) -> None:
    ready = state.directory / "run" / f"{name}.ready"
    _wait(state, name, ready.is_file, state.directory / "logs" / f"ray-{name}.log")
    state.services[name].node_id = json.loads(ready.read_text())["node_id"]
    state.save()


def stop_service(state: ClusterState, name: str) -> int:
    """Stop one service (PostgreSQL with a fast shutdown); returns how many processes ended."""
    service = state.services[name]
    if service.proc is None:
        return 0
    sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
    count = processes.stop(service.proc, sig)
    service.proc = None
    state.save()
    return count


def down(directory: Path, say: Callable[[str], None] = print) -> int:
    """Stop every process `up` started (workers, head, MLflow, PostgreSQL); keep the data."""
    state = load(directory.resolve())
    order = [n.name for n in reversed(state.nodes)] + ["mlflow", "postgres"]
    total = 0
    for name in order:
        count = stop_service(state, name)
        if count:
            say(f"stopped {name} ({count} processes)")
        total += count
    if not total:
        say(f"nothing was running in {state.directory}")
    return total


def describe(state: ClusterState) -> list[str]:
    """What `status` prints: services, Ray nodes as the head sees them, how to use the cluster."""
    lines = [f"local cluster in {state.directory}"]
    for name in ("postgres", "mlflow"):
        service = state.services[name]
        where = state.tracking_uri if name == "mlflow" else f"{HOST}:{service.port}"
        running = f"running (pid {service.proc.pid})" if service.proc and service.running else "DOWN"
        lines.append(f"  {name:10s} {where:28s} {running}")
    seen = {n["node_id"]: n for n in ray_nodes(state)} if state.services["head"].running else {}
    for node in state.nodes:
        known = seen.get(node.node_id or "", {})
        running = f"running (pid {node.proc.pid})" if node.proc and node.running else "DOWN"
        resources = known.get("resources", {})
        cpu, gpu = resources.get("CPU", 0), resources.get("GPU", 0)
        lines.append(
            f"  {node.name:10s} ray node {(node.node_id or '?')[:12]:15s} {running}; "
            f"Ray says {known.get('state', 'unknown')}, {cpu:g} CPU, {gpu:g} GPU"
        )
    lines.append(f"  Ray dashboard {state.dashboard_url} (token: {ray_token_file()})")
    return lines


def launch_hint(state: ClusterState) -> list[str]:
    flags = state.launch_flags()
    quoted = " ".join(f"'{f}'" if "?" in f else f for f in flags)
    return [
        f"MLflow UI {state.tracking_uri} (user {state.mlflow_user}, password in ~/.mlflow/credentials "
        f"or $MLFLOW_TRACKING_PASSWORD)",
        "launch sweeps on it with:",
        f"  asha-tune launch --space SPACE {quoted}",
        f"stop it with: asha-tune cluster down --dir {state.directory}",
    ]
