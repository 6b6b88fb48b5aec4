"""The cluster's MLflow server: basic-auth app on PostgreSQL, artifacts in DIR."""

from __future__ import annotations

import base64
import os
import secrets
import sys
import urllib.error
import urllib.request

from asha_tune.cluster import processes
from asha_tune.cluster.processes import Proc
from asha_tune.cluster.state import HOST, ClusterError, ClusterState, secret
from asha_tune.files import write_private
from asha_tune.tracking.client import server_environ
from asha_tune.tracking.credentials import mlflow_credentials


def start_mlflow(state: ClusterState) -> Proc:
    try:
        import flask_wtf  # noqa: F401  (MLflow's basic-auth app needs it)
    except ImportError:
        raise ClusterError(
            "MLflow's basic-auth app is missing: pip install 'mlflow[auth]' "
            "(or, in a checkout, pip install -e '.[cluster]')"
        ) from None
    user, password = mlflow_credentials()
    if user != state.mlflow_user:
        raise ClusterError(
            f"this cluster's MLflow admin is {state.mlflow_user}, but your MLflow credentials "
            f"are for {user}: set MLFLOW_TRACKING_USERNAME/PASSWORD to the cluster's admin"
        )
    config = state.directory / "secrets" / "basic_auth.ini"
    # The credential cache: without it every request re-hashes the password (seconds on a busy CPU).
    write_private(
        config,
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {state.database_url('mlflow_auth')}\n"
        f"admin_username = {user}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 600\n",
    )
    env = {
        **server_environ(os.environ),
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret(
            state.directory, "mlflow_secret_key", lambda: secrets.token_hex(32)
        ),
    }
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return processes.spawn(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--app-name",
            "basic-auth",
            "--backend-store-uri",
            state.database_url("mlflow"),
            "--artifacts-destination",
            str(state.directory / "mlartifacts"),
            "--host",
            HOST,
            "--port",
            str(state.services["mlflow"].port),
            "--workers",
            "2",
        ],
        state.directory / "logs" / "mlflow.log",
        env=env,
        cwd=state.directory,
    )


def mlflow_request(state: ClusterState, path: str, auth: tuple[str, str] | None) -> int:
    """The HTTP status of a GET on the cluster's MLflow server (0 when it does not answer)."""
    request = urllib.request.Request(state.tracking_uri + path)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0
