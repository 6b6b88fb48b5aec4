"""Every use of Ray's private or internal API, in one place, for one Ray version.

Each has a reason, written beside it; together they are what a Ray upgrade can break, so they
live here and nowhere else, behind one test (tests/integration/sweep/test_ray_compat.py) that
pins the Ray version they were checked against and exercises each of them. On an upgrade: run
that test, fix what it shows here, then move `CHECKED_RAY`.

Nothing here imports Ray at module level: importing this module is free.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

CHECKED_RAY = "2.60"  # the Ray minor version every function below was checked against

# Environment flags Ray and Tune read at import or start (set by sweep/session.py around a sweep):
# no TensorBoard files (the CSV and JSON loggers are added explicitly), quiet Ray Train migration
# notices, and Tune's legacy output engine, which prints nothing at verbose 0 (the new one,
# RAY_AIR_NEW_OUTPUT's internal switch, prints a box of internal class names whatever the verbosity).
# Tune's experiment snapshot keeps Tune's own period (TUNE_GLOBAL_CHECKPOINT_S unset: at least 10 s,
# 19 times what one costs): every record is written before each (sweep/writer.py), and a resume
# after a kill runs the epochs since the last one again, each logged once.
TUNE_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}

# Internal logger names: Tune's controller, which logs failed trials' tracebacks and its own
# `Tuner.restore` hint (asha-tune prints one line per failed trial instead), and Train's storage
# module, which logs every checkpoint upload.
TUNE_LOGGERS = ("ray.tune.tune", "ray.tune.execution.tune_controller")
STORAGE_LOGGER = "ray.train._internal.storage"


def reload_token_auth() -> None:
    """Make an already imported Ray re-read RAY_AUTH_MODE and the token.

    Ray reads the auth mode into its config once, at import: a process that imported Ray before
    asha-tune set it (a notebook, a test) must re-read it, as `ray.init` does when it turns token
    auth on itself. Private: ray._private.authentication and ray._raylet's token loader.
    """
    if "ray" not in sys.modules:
        return
    from ray._private.authentication.authentication_token_setup import _enable_token_auth
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]  # compiled

    _enable_token_auth()
    AuthenticationTokenLoader.instance().reset_cache()


def start_loopback_node(
    *,
    head: bool,
    gcs_port: int | None,
    gcs_address: str | None,
    dashboard_port: int | None,
    agent_port: int,
    num_cpus: int,
    num_gpus: int,
    object_store_bytes: int,
    temp_dir: str,
    name: str,
) -> Any:
    """A Ray node whose every address stays on 127.0.0.1, started as `ray.cluster_utils.Cluster`
    starts its nodes (RayParams + Node; private).

    `ray start` swaps 127.0.0.1 for the machine's network address whenever multi-node clusters
    are enabled, so worker nodes could not join a head that listens on loopback only.
    """
    import ray._private.node
    import ray._private.parameter

    sockets = {kind: Path(temp_dir) / f"{name}.{kind}" for kind in ("plasma", "raylet")}
    for path in sockets.values():  # left by this node's previous run: a restart would not bind
        path.unlink(missing_ok=True)
    params: Any = ray._private.parameter.RayParams(  # private, loosely typed
        node_ip_address="127.0.0.1",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        object_store_memory=object_store_bytes,
        temp_dir=temp_dir,
        dashboard_agent_listen_port=agent_port,
        include_dashboard=head,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,  # type: ignore[arg-type]  # an int: Ray annotates it bool
        node_name=name,
        # Nodes of one machine share the session folder: name their sockets, or two nodes
        # starting at once race for the same default name.
        plasma_store_socket_name=str(sockets["plasma"]),
        raylet_socket_name=str(sockets["raylet"]),
        min_worker_port=0,  # worker ports from the OS, never a fixed range shared with other Rays
        max_worker_port=0,
    )
    if head:
        params.gcs_server_port = gcs_port
    else:
        params.gcs_address = gcs_address
        params.include_log_monitor = False  # one per machine, the head's
    return ray._private.node.Node(params, head=head, shutdown_at_exit=True, spawn_reaper=True)


def node_info(node: Any) -> dict[str, Any]:
    """The id and session folder of a node `start_loopback_node` started."""
    return {"node_id": node.node_id, "session_dir": node.get_session_dir_path()}


def dead_node_processes(node: Any) -> list[tuple[str, int | None]]:
    """(kind, exit code) of the node's processes that died (raylet, GCS, ...)."""
    return [(kind, proc.returncode) for kind, proc in node.dead_processes()]


def kill_node(node: Any) -> None:
    node.kill_all_processes(check_alive=False, allow_graceful=False)


def trial_storage(trial: Any) -> tuple[Any, str]:
    """(pyarrow filesystem, folder) where Tune keeps a trial's files, local or remote: what
    deleting a finished trial's checkpoints needs (internal attributes of Tune's Trial)."""
    return trial.storage.storage_filesystem, trial.storage.trial_fs_path


def asha_milestones(grace_period: int, reduction_factor: float, max_t: int) -> frozenset[int]:
    """The epochs at which Tune's ASHA decides whether a trial goes on: its `_Bracket`'s rungs,
    recomputed by the same formula (private), so trials never checkpoint at a decision epoch."""
    import math

    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return frozenset(math.ceil(grace_period * reduction_factor**k) for k in range(count))


def reported_result(trial: Any) -> dict[str, Any]:
    """A Tune trial's last reported result, {} before its first, read without a wait. Tune's own
    `Trial.last_result`, on a trial that has not reported yet, fetches default metrics from its
    actor with a blocking `ray.get` (Trial._get_default_result_or_future): a round trip to a busy
    worker on Tune's event loop, at every trial start, that holds every other trial's report back."""
    metadata = getattr(trial, "run_metadata", None)  # Ray 2.60: where last_result keeps what was reported
    if metadata is None:
        return trial.last_result or {}
    return metadata.last_result or {}


def stand_in_trial(trial_id: str) -> Any:
    """Something Tune's ASHA accepts as a trial in on_trial_add/result/remove: it reads only
    `trial_id`. Rebuilding its rungs after `Tuner.restore` replays stored results through it."""
    return SimpleNamespace(trial_id=trial_id)


def dashboard_nodes(dashboard_url: str, token: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The nodes a head knows, alive and dead, from its dashboard's internal `/nodes` endpoint
    (the state API needs a driver; `asha-tune cluster status` has none)."""
    request = urllib.request.Request(
        dashboard_url + "/nodes?view=summary", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            summary = json.loads(response.read())["data"]["summary"]
    except (OSError, ValueError, KeyError):
        return []
    return [
        {
            "node_id": n["raylet"]["nodeId"],
            "name": n["raylet"].get("nodeName", ""),
            "state": n["raylet"]["state"],
            "resources": n["raylet"].get("resourcesTotal", {}),
        }
        for n in summary
    ]


# --- joining a cluster ---------------------------------------------------------------------------

# Read by the driver's Ray core at `ray.init`: how long it tries to reach a lost GCS before it ends
# the process with a fatal log line, which Python cannot catch (sweep/session.py's head watch must
# act first, so the session sets it above the watch's own limit).
GCS_RECONNECT_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"
GCS_RECONNECT_DEFAULT_S = 60.0


def ray_address_file() -> Path:
    """Where `ray start --head` records the cluster it started on this machine, by Ray's rule
    (ray._common.utils.get_ray_address_file): $RAY_TMPDIR, else $TMPDIR on Linux, else /tmp; then
    ray/ray_current_cluster. Computed here without importing Ray, which reads the environment
    (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, the auth mode) once, at import, before the session sets it."""
    temp = os.environ.get("RAY_TMPDIR") or (
        os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None
    )
    return Path(temp or "/tmp") / "ray" / "ray_current_cluster"


def bootstrap_address() -> str | None:
    """The GCS address in `ray_address_file()`, which `ray.init(address="auto")` joins; None when
    there is none."""
    try:
        return ray_address_file().read_text().strip() or None
    except OSError:
        return None


def live_driver_jobs() -> set[str]:
    """The Ray job ids (hex) of drivers alive on the cluster this process joined: the GCS job
    table (private: ray._private.state; the public state API needs the dashboard)."""
    import ray._private.state

    return {job["JobID"] for job in ray._private.state.jobs() if not job["IsDead"]}


def dashboard_address(gcs_address: str, timeout_s: float = 10) -> str | None:
    """The head's dashboard, host:port, as its GCS records it (the key `ray job submit --address
    HOST:GCS_PORT` reads: ray.dashboard.utils.ray_address_to_api_server_url), asked once with a
    time limit (Ray's own helper retries for 40 s; private: ray._raylet's standalone GCS client).
    None when the GCS does not answer or has no dashboard."""
    from ray._raylet import InnerGcsClient  # type: ignore[attr-defined]  # compiled

    ms = int(timeout_s * 1000)
    try:
        client = InnerGcsClient.standalone(gcs_address, None, ms)
        found = client.internal_kv_get(b"dashboard", namespace=b"dashboard", timeout=timeout_s)
    except Exception:
        return None
    return found.decode() if found else None


# --- the autoscaler's view ---------------------------------------------------------------------
# Ray 2.60 has no public API that tells whether an autoscaler runs or what it will do with a
# request: `ray.autoscaler.sdk` only sends requests (request_resources). The autoscaler's own
# reports are what `ray status` reads: v1 (the default for `ray up`, KubeRay and the fake
# multi-node provider) writes a JSON report to the GCS key-value store; v2 answers the GCS's
# GetClusterStatus. The monitor of a cluster without an autoscaler (manual `ray start`, SLURM,
# `asha-tune cluster`, a local Ray) reports too, as a read-only mirror that can add nothing.

V1_STATUS_KEY = "__autoscaling_status"  # ray._private.ray_constants.DEBUG_AUTOSCALING_STATUS
V2_ENABLED_KEY = "__autoscaler_v2_enabled"  # ray._raylet.GCS_AUTOSCALER_V2_ENABLED_KEY
STALE_REPORT_S = 120.0  # a report older than this: the autoscaler is not running


@dataclass(frozen=True)
class AutoscalerReport:
    """One report of an autoscaler that can add nodes."""

    stamp: float  # changes with every report
    launching: tuple[str, ...]  # node types it is adding now
    failed: tuple[str, ...]  # node types whose launch failed recently
    requested: tuple[dict[str, float], ...]  # request_resources bundles it has seen
    infeasible: tuple[dict[str, float], ...]  # bundles it says no node type can hold (v2 only)


def _bundles(pairs: Any) -> tuple[dict[str, float], ...]:
    return tuple({k: float(v) for k, v in bundle.items()} for bundle, _count in pairs or [])


def _v1_report(raw: bytes | None) -> AutoscalerReport | None:
    if not raw:
        return None
    status = json.loads(raw)
    report = status.get("autoscaler_report")
    if not report or time.time() - float(status.get("time", 0)) > STALE_REPORT_S:
        return None
    types = report.get("node_type_mapping") or {}
    if all(kind == f"node_{node}" for node, kind in types.items()):
        return None  # the read-only mirror (format_readonly_node_type): nothing it can add
    launching = [node[-2] for node in report.get("pending_nodes") or [] if len(node) >= 2]
    launching += [kind for kind, n in (report.get("pending_launches") or {}).items() for _ in range(n)]
    return AutoscalerReport(
        stamp=float(status["time"]),
        launching=tuple(launching),
        failed=tuple(node[-1] for node in report.get("failed_nodes") or []),
        requested=_bundles((status.get("load_metrics_report") or {}).get("request_demand")),
        infeasible=(),
    )


def _v2_report(gcs_address: str) -> AutoscalerReport | None:
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # compiled
    from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply  # type: ignore[attr-defined]

    reply = GetClusterStatusReply()
    reply.ParseFromString(GcsClient(address=gcs_address).get_cluster_status(timeout_s=10))
    state = reply.autoscaling_state
    if not state.autoscaler_state_version:
        return None  # no v2 autoscaler has reported

    def constraints(items: Any) -> tuple[dict[str, float], ...]:
        return tuple(dict(r.request.resources_bundle) for item in items for r in item.resource_requests)

    return AutoscalerReport(
        stamp=float(state.autoscaler_state_version),
        launching=tuple(
            [r.ray_node_type_name for r in state.pending_instance_requests for _ in range(r.count)]
            + [i.ray_node_type_name for i in state.pending_instances]
        ),
        failed=tuple(r.ray_node_type_name for r in state.failed_instance_requests),
        requested=constraints(reply.cluster_resource_state.cluster_resource_constraints),
        infeasible=constraints(state.infeasible_cluster_resource_constraints),
    )


def autoscaler_report(gcs_address: str) -> AutoscalerReport | None:
    """The latest report of the cluster's autoscaler, or None where no autoscaler that can add
    nodes runs. Needs a connected driver (`ray.init`)."""
    from ray.experimental.internal_kv import _internal_kv_get

    if _internal_kv_get(V2_ENABLED_KEY) == b"1":
        return _v2_report(gcs_address)
    return _v1_report(_internal_kv_get(V1_STATUS_KEY))
