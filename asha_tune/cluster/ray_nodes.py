"""The cluster's Ray nodes: each `python -m asha_tune.cluster.node` in a session of its own,
with the user's token."""

from __future__ import annotations

import os
import sys

from asha_tune.cluster import processes
from asha_tune.cluster.processes import Proc
from asha_tune.cluster.state import ClusterState
from asha_tune.sweep import ray_compat
from asha_tune.sweep.session import ensure_ray_token, ray_token


def ray_env() -> dict[str, str]:
    """The nodes' environment: token auth with the user's token (a set $RAY_AUTH_TOKEN wins)."""
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(ensure_ray_token()),
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    return env


def start_node(state: ClusterState, name: str) -> Proc:
    service = state.services[name]
    ready = state.directory / "run" / f"{name}.ready"
    ready.unlink(missing_ok=True)
    ready.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "asha_tune.cluster.node",
        "--name",
        name,
        "--agent-port",
        str(service.ports["agent"]),
        "--temp-dir",
        str(state.ray_temp_dir),
        "--ready-file",
        str(ready),
    ]
    if name == "head":
        command += [
            "--gcs-port",
            str(service.port),
            "--dashboard-port",
            str(service.ports["dashboard"]),
            "--num-cpus",
            str(state.head_cpus),
        ]
    else:
        command += [
            "--address",
            state.ray_address,
            "--num-cpus",
            str(state.worker_cpus),
            "--num-gpus",
            str(state.worker_gpus),
        ]
    return processes.spawn(
        command, state.directory / "logs" / f"ray-{name}.log", env=ray_env(), cwd=state.directory
    )


def ray_nodes(state: ClusterState) -> list[dict]:
    """The nodes the head knows (alive and dead), from its dashboard, with the cluster's token."""
    return ray_compat.dashboard_nodes(state.dashboard_url, ray_token())
