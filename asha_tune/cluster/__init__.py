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

This module starts processes and speaks HTTP; it imports neither Ray nor MLflow (the Ray nodes
are `python -m asha_tune.cluster.node`).
"""

from __future__ import annotations

import base64
import configparser
import getpass
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from pydantic import BaseModel

from asha_tune import defaults
from asha_tune.cluster import processes
from asha_tune.cluster.processes import Proc
from asha_tune.errors import AshaTuneError

STATE_FILE = "cluster.json"
HOST = "127.0.0.1"
PG_USER = "asha"
DATABASES = ("mlflow", "mlflow_auth", "optuna")
START_TIMEOUT_S = 240.0  # a loaded machine: MLflow's server takes a while to import
POSTGRES_ROOT = Path("/usr/lib/postgresql")  # Debian's versioned installs: <version>/bin


class ClusterError(AshaTuneError):
    """The local cluster cannot be started, reached or stopped as asked."""


class Service(BaseModel):
    """One started thing: a Ray node, PostgreSQL or the MLflow server."""

    name: str
    port: int  # what clients connect to (the GCS port for every Ray node: the head's)
    ports: dict[str, int] = {}  # further ports of its own (dashboard, agent)
    proc: Proc | None = None
    node_id: str | None = None

    @property
    def running(self) -> bool:
        return processes.alive(self.proc)


class ClusterState(BaseModel):
    """Everything `status`, `down` and a later `up` need, kept in DIR/cluster.json."""

    directory: Path
    workers: int
    worker_cpus: int
    worker_gpus: int
    head_cpus: int
    ray_temp_dir: Path
    mlflow_user: str
    services: dict[str, Service]

    @property
    def nodes(self) -> list[Service]:
        return [s for name, s in self.services.items() if name == "head" or name.startswith("worker-")]

    @property
    def ray_address(self) -> str:
        return f"{HOST}:{self.services['head'].port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{HOST}:{self.services['head'].ports['dashboard']}"

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.services['mlflow'].port}"

    @property
    def results_dir(self) -> Path:
        return self.directory / "results"

    def database_url(self, database: str) -> str:
        return (
            f"postgresql://{PG_USER}@{HOST}:{self.services['postgres'].port}/{database}"
            f"?passfile={self.directory / 'secrets' / 'pgpass'}"
        )

    def launch_flags(self) -> list[str]:
        """The flags that point `asha-tune launch` at this cluster."""
        return [
            "--address",
            self.ray_address,
            "--tracking-uri",
            self.tracking_uri,
            "--study-url",
            self.database_url("optuna"),
            "--results-dir",
            str(self.results_dir),
        ]

    def save(self) -> None:
        path = self.directory / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)


def default_dir() -> Path:
    return defaults.cluster_dir()


def load(directory: Path) -> ClusterState:
    path = directory / STATE_FILE
    if not path.is_file():
        raise ClusterError(
            f"no local cluster in {directory} (start one with: asha-tune cluster up --dir {directory})"
        )
    return ClusterState.model_validate_json(path.read_text())


# --- credentials ---------------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def ray_token_file() -> Path:
    """Ray's token, where Ray's clients look; created if missing, as `ray start` would."""
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not path.is_file() or not path.read_text().strip():
        _write_private(path, secrets.token_hex(32))
    return path


def ray_token() -> str:
    return os.environ.get("RAY_AUTH_TOKEN") or ray_token_file().read_text().strip()


def mlflow_credentials() -> tuple[str, str]:
    """MLflow's client credentials (env, else ~/.mlflow/credentials, created if missing)."""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return user, password
    path = Path.home() / ".mlflow" / "credentials"
    config = configparser.ConfigParser()
    if path.is_file():
        config.read(path)
    section = config["mlflow"] if config.has_section("mlflow") else None
    if section and section.get("mlflow_tracking_username") and section.get("mlflow_tracking_password"):
        return section["mlflow_tracking_username"], section["mlflow_tracking_password"]
    if not config.has_section("mlflow"):
        config.add_section("mlflow")
    config["mlflow"]["mlflow_tracking_username"] = user or getpass.getuser()
    config["mlflow"]["mlflow_tracking_password"] = secrets.token_urlsafe(18)
    lines = []
    for name in config.sections():
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in config[name].items()]
    _write_private(path, "\n".join(lines) + "\n")
    return config["mlflow"]["mlflow_tracking_username"], config["mlflow"]["mlflow_tracking_password"]


def _secret(directory: Path, name: str, make) -> str:
    path = directory / "secrets" / name
    if not path.is_file():
        _write_private(path, make())
    return path.read_text().strip()


# --- PostgreSQL ----------------------------------------------------------------------------


def postgres_bin() -> Path:
    """The folder of `initdb` and `postgres`, or a one-line message on how to install them."""
    found = shutil.which("postgres")
    if found and shutil.which("initdb", path=str(Path(found).resolve().parent)):
        return Path(found).resolve().parent
    versions = sorted(
        POSTGRES_ROOT.glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    raise ClusterError(
        "PostgreSQL is not installed (no postgres/initdb on PATH or in /usr/lib/postgresql): "
        "install it, e.g. `sudo apt-get install postgresql` or `brew install postgresql@15`"
    )


def postgres_user() -> str | None:
    """PostgreSQL refuses to run as root: as root it runs as the `postgres` system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError(
            "PostgreSQL refuses to run as root and there is no `postgres` user: "
            "create one (useradd --system postgres) or run as another user"
        ) from None
    return "postgres"


def _prepare_postgres_dir(folder: Path, user: str | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run").mkdir(exist_ok=True)
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for path in (folder, folder / "run"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    if subprocess.run(["test", "-w", str(folder)], user=user).returncode != 0:
        raise ClusterError(
            f"user {user} (PostgreSQL does not run as root) cannot reach {folder}: choose "
            f"a --dir every user can traverse, e.g. under /var/tmp"
        )


def _init_postgres(state: ClusterState, user: str | None) -> None:
    folder = state.directory / "postgres"
    _prepare_postgres_dir(folder, user)
    if (folder / "data" / "PG_VERSION").is_file():
        return
    password = _secret(state.directory, "postgres_password", lambda: secrets.token_urlsafe(24))
    pwfile = folder / "initdb-password"
    _write_private(pwfile, password)
    if user:
        entry = pwd.getpwnam(user)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    try:
        done = subprocess.run(
            [
                str(postgres_bin() / "initdb"),
                "-D",
                str(folder / "data"),
                "-U",
                PG_USER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--no-locale",
            ],
            user=user,
            cwd=folder,
            capture_output=True,
            text=True,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise ClusterError(f"initdb failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")


def _start_postgres(state: ClusterState) -> Proc:
    user = postgres_user()
    _init_postgres(state, user)
    password = _secret(state.directory, "postgres_password", lambda: secrets.token_urlsafe(24))
    port = state.services["postgres"].port
    _write_private(state.directory / "secrets" / "pgpass", f"{HOST}:{port}:*:{PG_USER}:{password}\n")
    folder = state.directory / "postgres"
    return processes.spawn(
        [
            str(postgres_bin() / "postgres"),
            "-D",
            str(folder / "data"),
            "-h",
            HOST,
            "-p",
            str(port),
            "-k",
            str(folder / "run"),
            "-c",
            "max_connections=300",
        ],
        state.directory / "logs" / "postgres.log",
        env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
        cwd=folder,
        user=user,
    )


def _connect(state: ClusterState, database: str = "postgres"):
    try:
        import psycopg
    except ImportError:
        raise ClusterError("the PostgreSQL driver is missing: pip install 'asha-tune[cluster]'") from None
    return psycopg.connect(
        host=HOST,
        port=state.services["postgres"].port,
        user=PG_USER,
        dbname=database,
        passfile=str(state.directory / "secrets" / "pgpass"),
        connect_timeout=5,
        autocommit=True,
    )


def _create_databases(state: ClusterState) -> None:
    with _connect(state) as connection:
        existing = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
        for name in DATABASES:
            if name not in existing:
                connection.execute(f'CREATE DATABASE "{name}"')
    # Create Optuna's tables once, now: two sweeps starting together on an empty database race.
    from asha_tune.sweep.study import prepare_storage

    prepare_storage(state.database_url("optuna"))


# --- MLflow --------------------------------------------------------------------------------


def _start_mlflow(state: ClusterState) -> Proc:
    try:
        import flask_wtf  # noqa: F401  (MLflow's basic-auth app needs it)
    except ImportError:
        raise ClusterError("MLflow's basic-auth app is missing: pip install 'asha-tune[cluster]'") from None
    user, password = mlflow_credentials()
    if user != state.mlflow_user:
        raise ClusterError(
            f"this cluster's MLflow admin is {state.mlflow_user}, but your MLflow credentials "
            f"are for {user}: set MLFLOW_TRACKING_USERNAME/PASSWORD to the cluster's admin"
        )
    config = state.directory / "secrets" / "basic_auth.ini"
    # The credential cache: without it every request re-hashes the password (seconds on a busy CPU).
    _write_private(
        config,
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {state.database_url('mlflow_auth')}\n"
        f"admin_username = {user}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 600\n",
    )
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret(
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


# --- Ray -----------------------------------------------------------------------------------


def _ray_env() -> dict[str, str]:
    """The nodes' environment: token auth with the user's token (a set $RAY_AUTH_TOKEN wins)."""
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(ray_token_file()),
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    return env


def _start_node(state: ClusterState, name: str) -> Proc:
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
        command, state.directory / "logs" / f"ray-{name}.log", env=_ray_env(), cwd=state.directory
    )


def ray_nodes(state: ClusterState) -> list[dict]:
    """The nodes the head knows (alive and dead), from its dashboard, with the cluster's token."""
    request = urllib.request.Request(
        state.dashboard_url + "/nodes?view=summary", headers={"Authorization": f"Bearer {ray_token()}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
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


# --- up, status, down ----------------------------------------------------------------------


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


def _wait(state: ClusterState, name: str, ready, log: Path, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    service = state.services[name]
    while time.monotonic() < deadline:
        if ready():
            return
        if not service.running:
            raise ClusterError(f"{name} exited during start: {_last_line(log)} (log: {log})")
        time.sleep(0.3)
    raise ClusterError(f"{name} did not come up within {timeout:.0f} s (log: {log})")


def _postgres_ready(state: ClusterState) -> bool:
    try:
        with _connect(state):
            return True
    except ClusterError:
        raise
    except Exception:
        return False


def up(
    directory: Path,
    workers: int | None = None,
    worker_cpus: int | None = None,
    worker_gpus: int = 0,
    head_cpus: int = 0,
    say=print,
) -> ClusterState:
    """Start the cluster, or whatever of it is not running, and record what was started.

    A new cluster gets `workers` worker nodes (default 2); an existing one keeps its own.
    """
    directory = directory.resolve()
    if workers is not None and workers < 1:
        raise ClusterError(f"--workers {workers}: a cluster needs at least one worker node")
    postgres_bin()  # fail before anything starts when PostgreSQL is missing
    if (directory / STATE_FILE).is_file():
        state = load(directory)
        if workers is not None and workers != state.workers:
            raise ClusterError(
                f"the cluster in {directory} has {state.workers} workers: "
                f"asha-tune cluster down first to change that"
            )
    else:
        directory.mkdir(parents=True, exist_ok=True)
        state = _new_state(directory, workers or 2, worker_cpus, worker_gpus, head_cpus)
    logs = directory / "logs"
    started: list[str] = []

    def start(name: str, launcher) -> None:
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

    try:
        if not state.services["postgres"].running:
            start("postgres", _start_postgres)
            _wait(state, "postgres", lambda: _postgres_ready(state), logs / "postgres.log")
            _create_databases(state)
        if not state.services["mlflow"].running:
            start("mlflow", _start_mlflow)
        for node in state.nodes:  # the head first: workers join it
            if node.name != "head" and "head" in started and node.running:
                stop_service(state, node.name)  # it belonged to the head that is gone
            if not node.running:
                start(node.name, lambda s, n=node.name: _start_node(s, n))
                if node.name == "head":
                    _wait_node(state, "head")
        for node in state.nodes:
            if node.name in started and node.name != "head":
                _wait_node(state, node.name)
        if "mlflow" in started:
            credentials = mlflow_credentials()
            _wait(state, "mlflow", lambda: mlflow_request(state, "/health", None) == 200, logs / "mlflow.log")
            _wait(
                state,
                "mlflow",
                lambda: (
                    mlflow_request(state, "/api/2.0/mlflow/experiments/search?max_results=1", credentials)
                    == 200
                ),
                logs / "mlflow.log",
            )
    except BaseException:
        for name in reversed(started):  # what this call started; data and records stay
            if state.services[name].proc:
                processes.stop(state.services[name].proc)
                state.services[name].proc = None
        state.save()
        raise
    state.save()
    if started:
        say(f"started {', '.join(started)} in {directory}")
    return state


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


def down(directory: Path, say=print) -> int:
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


def started_pids(state: ClusterState) -> list[int]:
    """Every live process the cluster's services started (their sessions)."""
    return [p.pid for s in state.services.values() if s.proc for p in processes.family(s.proc)]


def describe(state: ClusterState) -> list[str]:
    """What `status` prints: services, Ray nodes as the head sees them, how to use the cluster."""
    lines = [f"local cluster in {state.directory}"]
    for name in ("postgres", "mlflow"):
        service = state.services[name]
        where = state.tracking_uri if name == "mlflow" else f"{HOST}:{service.port}"
        running = f"running (pid {service.proc.pid})" if service.running else "DOWN"
        lines.append(f"  {name:10s} {where:28s} {running}")
    seen = {n["node_id"]: n for n in ray_nodes(state)} if state.services["head"].running else {}
    for node in state.nodes:
        known = seen.get(node.node_id or "", {})
        running = f"running (pid {node.proc.pid})" if node.running else "DOWN"
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
