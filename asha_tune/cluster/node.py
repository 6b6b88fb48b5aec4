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
from typing import Any

from asha_tune.files import write_atomic
from asha_tune.sweep import ray_compat

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


def start(args: argparse.Namespace) -> Any:
    return ray_compat.start_loopback_node(
        head=args.gcs_port is not None,
        gcs_port=args.gcs_port,
        gcs_address=args.address,
        dashboard_port=args.dashboard_port,
        agent_port=args.agent_port,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        object_store_bytes=args.object_store_mb * 1024 * 1024,
        temp_dir=args.temp_dir,
        name=args.name,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    node = start(args)
    ready = {**ray_compat.node_info(node), "pid": os.getpid()}
    write_atomic(args.ready_file, json.dumps(ready))
    print(f"Ray node {ready['node_id']} up (pid {os.getpid()})", flush=True)
    while True:  # as `ray start --block`: a process that died unexpectedly ends the node
        time.sleep(1)
        dead = [
            (kind, code)
            for kind, code in ray_compat.dead_node_processes(node)
            if code not in (0, 15, -15, 128 + 15)
        ]
        if dead:
            print(f"Ray processes died: {dead}; stopping this node", file=sys.stderr, flush=True)
            ray_compat.kill_node(node)
            os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
