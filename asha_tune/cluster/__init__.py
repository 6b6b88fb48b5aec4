"""A local cluster on one machine: a Ray head and N worker nodes, PostgreSQL, an MLflow server.

`up` starts them all on 127.0.0.1, each with authentication on, and records every process it
started (pid and start time) in DIR/cluster.json; `down` stops exactly those processes and their
sessions, by pid; `status` lists the nodes and services. `up` on a cluster that is partly down
restarts what is missing on the same ports, so the URLs a sweep recorded stay valid, and nothing
recorded is lost: PostgreSQL's data, MLflow's artifacts and the sweeps' results stay in DIR.

Credentials go where each client looks by default, so `asha-tune launch` finds them:
- Ray's token: $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, created if missing (as `ray start`
  does); the nodes read the same file.
- MLflow (its basic-auth app): the user in $MLFLOW_TRACKING_USERNAME/PASSWORD or else
  ~/.mlflow/credentials (created if missing) is the server's admin.
- PostgreSQL: a password of this cluster in DIR/secrets/pgpass, which the URLs name
  (`?passfile=`), so no URL, flag or log line holds a secret.

The modules: state (cluster.json: services, ports, URLs), processes (start, identify, stop by
pid), postgres, mlflow_server, ray_nodes (the nodes, `python -m asha_tune.cluster.node`), node (one
Ray node in the foreground, on loopback), lifecycle (up, status, down).

May import: the sweep package (the Ray token, the study's tables, ray_compat for the node runner),
tracking's credentials, the shared kernel. It imports neither Ray nor MLflow itself: it starts
their processes and speaks HTTP to them.
"""

from __future__ import annotations

import importlib
from typing import Any

# What `asha-tune cluster` uses, imported on first use: `cluster.processes` alone stays light.
_API = {
    **dict.fromkeys(("describe", "down", "launch_hint", "stop_service", "up"), "lifecycle"),
    **dict.fromkeys(("ClusterError", "ClusterState", "default_dir", "load"), "state"),
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(f"asha_tune.cluster.{_API[name]}"), name)
    raise AttributeError(f"module 'asha_tune.cluster' has no attribute {name!r}")
