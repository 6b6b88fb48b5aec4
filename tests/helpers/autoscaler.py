"""A Ray cluster run by Ray's own fake multi-node autoscaler, for tests.

`ray start --head --autoscaling-config=F` with provider `fake_multinode` and RAY_FAKE_CLUSTER=1:
Ray's autoscaler (the head's monitor process) adds and removes worker nodes as demand asks, each
a real Ray node (raylet, object store, workers) on this machine, exactly as it would ask AWS for an
instance. The node types are derived from deploy/ray-cluster.aws.yaml: the same types, resources,
min and max workers and idle timeout; their GPUs are logical (Ray schedules by them; trials train
on the CPU). Ray 2.60's wheel lacks the fake provider's example.yaml, which
`ray.cluster_utils.AutoscalingCluster` reads, and that class stops every Ray on the machine
(`ray stop --force`): hence this kit, which writes the config itself and stops exactly what it
started.

Everything stays on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: the fake nodes, which the
monitor starts in-process, take the loopback address), on free ports: the provider's
`gcs_address` points the fake nodes at this head instead of port 6379. Token auth is on; the
token file is the kit's own (clients pass RAY_AUTH_TOKEN_PATH, see `client_env`).

Processes: the head's `ray start --block` is a session leader (its GCS, raylet, monitor,
dashboard); the fake nodes are started by the monitor outside that session, so every process
carries the kit's tag in its environment and `stop()` kills what is left with that tag.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import yaml

from asha_tune.cluster import processes
from asha_tune.cluster.processes import Proc
from tests.helpers.data import REPO
from tests.helpers.processes import PROCESS_TAG_ENV, kill_tagged, wait_for

DEPLOY = REPO / "deploy"
LAUNCHER = DEPLOY / "ray-cluster.aws.yaml"
FAKE_HEAD_TYPE = "ray.head.default"  # the type the fake provider gives its head node
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]
# Shared by the fake nodes (per node, not a scheduling resource: small, for a small machine).
OBJECT_STORE_BYTES = 100 * 1024 * 1024


def fake_config(launcher: dict, gcs_address: str, idle_timeout_minutes: float | None = None) -> dict:
    """The fake-provider config with the launcher's node types (head renamed to the fake head's)."""
    head_name = launcher["head_node_type"]
    types = {}
    for name, spec in launcher["available_node_types"].items():
        resources = dict(spec["resources"])
        if name == head_name:
            types[FAKE_HEAD_TYPE] = {"resources": resources, "node_config": {}, "max_workers": 0}
            continue
        types[name] = {
            "resources": {**resources, "object_store_memory": OBJECT_STORE_BYTES},
            "node_config": {},
            "min_workers": spec.get("min_workers", 0),
            "max_workers": spec["max_workers"],
        }
    return {
        "cluster_name": "fake-" + launcher["cluster_name"],
        "max_workers": launcher["max_workers"],
        "upscaling_speed": launcher.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": (
            launcher.get("idle_timeout_minutes", 5) if idle_timeout_minutes is None else idle_timeout_minutes
        ),
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "auth": {},
        "available_node_types": types,
        "head_node_type": FAKE_HEAD_TYPE,
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


class FakeAutoscalingCluster:
    """A head with no workers; Ray's autoscaler adds the launcher config's worker types on demand."""

    def __init__(self, launcher: Path = LAUNCHER, idle_timeout_minutes: float | None = None):
        self.launcher = yaml.safe_load(launcher.read_text())
        self.idle_timeout_minutes = idle_timeout_minutes
        # Short: Ray's Unix socket paths live under it.
        self.directory = Path(tempfile.mkdtemp(prefix="rfa-", dir="/tmp"))
        self.tag = uuid.uuid4().hex
        self.port = processes.free_port()
        self.dashboard_port = processes.free_port()
        self.head: Proc | None = None
        self.started_s: float | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def token_file(self) -> Path:
        return self.directory / "auth_token"

    @property
    def log(self) -> Path:
        return self.directory / "head.log"

    def env(self) -> dict[str, str]:
        """The environment of the head and of everything it starts (the fake nodes too)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
        env.update(
            {
                "RAY_FAKE_CLUSTER": "1",
                "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                "RAY_TMPDIR": str(self.directory),  # its session and ray_current_cluster, not /tmp/ray
                "RAY_USAGE_STATS_ENABLED": "0",
                PROCESS_TAG_ENV: self.tag,
            }
        )
        return env

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """What a client of this cluster (a driver, `ray job submit`) needs: the token, loopback."""
        env = dict(base if base is not None else os.environ)
        for name in [k for k in env if k.startswith(("RAY_ADDRESS", "RAY_AUTH"))]:
            env.pop(name)
        env.update(
            {
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                "RAY_TMPDIR": str(self.directory),
                PROCESS_TAG_ENV: self.tag,
            }
        )
        return env

    def start(self, timeout: float = 180) -> FakeAutoscalingCluster:
        started = time.monotonic()
        self.token_file.write_text(secrets.token_hex(32))
        self.token_file.chmod(0o600)
        config = self.directory / "autoscaling.json"
        config.write_text(json.dumps(fake_config(self.launcher, self.address, self.idle_timeout_minutes)))
        head = self.launcher["available_node_types"][self.launcher["head_node_type"]]["resources"]
        command = [
            *RAY_CLI,
            "start",
            "--head",
            "--block",
            f"--port={self.port}",
            f"--autoscaling-config={config}",
            f"--num-cpus={head.get('CPU', 0)}",
            f"--num-gpus={head.get('GPU', 0)}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={processes.free_port()}",
            f"--dashboard-agent-listen-port={processes.free_port()}",
            "--min-worker-port=0",
            "--max-worker-port=0",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--disable-usage-stats",
        ]
        self.head = processes.spawn(command, self.log, env=self.env(), cwd=self.directory)
        wait_for(self._up, timeout, f"the fake autoscaling head at {self.address}", poll=0.5)
        self.started_s = time.monotonic() - started
        return self

    def _up(self) -> bool:
        if not processes.alive(self.head):
            raise AssertionError(f"the head exited: {self.log.read_text()[-2000:]}")
        return bool(self.nodes())

    def stop(self) -> None:
        if self.head is not None:
            processes.stop(self.head, signal.SIGTERM, timeout=30)
        kill_tagged(self.tag)  # the fake nodes the monitor started outside the head's session
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> FakeAutoscalingCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- looking at it ---------------------------------------------------------------

    def nodes(self) -> list[dict]:
        """The nodes the head knows (alive and dead): id, state, resources, node type."""
        request = urllib.request.Request(
            self.dashboard_url + "/nodes?view=summary",
            headers={"Authorization": f"Bearer {self.token_file.read_text().strip()}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                summary = json.loads(response.read())["data"]["summary"]
        except (OSError, ValueError, KeyError):
            return []
        return [
            {
                "node_id": n["raylet"]["nodeId"],
                "state": n["raylet"]["state"],
                "resources": n["raylet"].get("resourcesTotal", {}),
                "is_head": n["raylet"].get("isHeadNode", False),
            }
            for n in summary
        ]

    def alive_workers(self) -> list[dict]:
        return [n for n in self.nodes() if n["state"] == "ALIVE" and not n["is_head"]]

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """A `ray` CLI command as a client of this cluster."""
        return subprocess.run(
            [*RAY_CLI, *args], env=self.client_env(), capture_output=True, text=True, timeout=timeout
        )
