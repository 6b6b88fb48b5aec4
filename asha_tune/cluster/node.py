"""One Ray node in the foreground, on loopback: what `ray start --block` does for the local cluster.

`ray start` swaps 127.0.0.1 for the machine's network address whenever multi-node clusters are
enabled, so its worker nodes cannot join a head that listens on loopback only. This runner starts
a node the way `ray.cluster_utils.Cluster` does (RayParams + Node), with every address kept on
127.0.0.1, then blocks like `ray start --block`: it exits when signalled, taking the node's
processes with it, and it ends the node if one of them dies (a lost raylet means a lost node).

    python -m asha_tune.cluster.node --gcs-port P --dashboard-port D --agent-port A --num-cpus 0 ...
    python -m asha_tune.cluster.node --address 127.0.0.1:P --agent-port A --num-cpus 1 ...

Token authentication comes from the environment (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Read by Ray at import: keep every address on loopback (see the module docstring).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asha_tune.cluster.node", description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--gcs-port", type=int, help="start a head node whose GCS listens here")
    where.add_argument("--address", help="join the head at this GCS address (127.0.0.1:PORT)")
    p.add_argument("--dashboard-port", type=int, help="head only: the dashboard's port")
    p.add_argument("--agent-port", type=int, required=True, help="the dashboard agent's HTTP port")
    p.add_argument("--num-cpus", type=int, required=True)
    p.add_argument("--num-gpus", type=int, default=0)
    p.add_argument("--object-store-mb", type=int, default=256)
    p.add_argument("--temp-dir", required=True, help="Ray's temp/session folder (short: Unix socket paths)")
    p.add_argument("--name", required=True, help="this node's name in the cluster (head, worker-1, ...)")
    p.add_argument("--ready-file", type=Path, required=True, help="written with the node id once up")
    return p.parse_args(argv)


def start(args: argparse.Namespace):
    import ray._private.node
    import ray._private.parameter

    head = args.gcs_port is not None
    sockets = {kind: Path(args.temp_dir) / f"{args.name}.{kind}" for kind in ("plasma", "raylet")}
    for path in sockets.values():  # left by this node's previous run: a restart would not bind
        path.unlink(missing_ok=True)
    params = ray._private.parameter.RayParams(
        node_ip_address=LOOPBACK,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        object_store_memory=args.object_store_mb * 1024 * 1024,
        temp_dir=args.temp_dir,
        dashboard_agent_listen_port=args.agent_port,
        include_dashboard=head,
        dashboard_host=LOOPBACK,
        dashboard_port=args.dashboard_port,
        node_name=args.name,
        # Nodes of one machine share the session folder: name their sockets, or two nodes
        # starting at once race for the same default name.
        plasma_store_socket_name=str(sockets["plasma"]),
        raylet_socket_name=str(sockets["raylet"]),
        min_worker_port=0,  # worker ports from the OS, never a fixed range shared with other Rays
        max_worker_port=0,
    )
    if head:
        params.gcs_server_port = args.gcs_port
    else:
        params.gcs_address = args.address
        params.include_log_monitor = False  # one per machine, the head's
    return ray._private.node.Node(params, head=head, shutdown_at_exit=True, spawn_reaper=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    node = start(args)
    ready = {"node_id": node.node_id, "pid": os.getpid(), "session_dir": node.get_session_dir_path()}
    tmp = args.ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(ready))
    tmp.replace(args.ready_file)
    print(f"Ray node {node.node_id} up (pid {os.getpid()})", flush=True)
    while True:  # as `ray start --block`: a process that died unexpectedly ends the node
        time.sleep(1)
        dead = [
            (kind, proc.returncode)
            for kind, proc in node.dead_processes()
            if proc.returncode not in (0, 15, -15, 128 + 15)
        ]
        if dead:
            print(f"Ray processes died: {dead}; stopping this node", file=sys.stderr, flush=True)
            node.kill_all_processes(check_alive=False, allow_graceful=False)
            os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
