"""The cluster's PostgreSQL: a data folder in DIR, a password of its own, three databases
(MLflow's runs, MLflow's users, Optuna's studies)."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from asha_tune.cluster import processes
from asha_tune.cluster.processes import Proc
from asha_tune.cluster.state import HOST, PG_USER, ClusterError, ClusterState, secret
from asha_tune.files import write_private

DATABASES = ("mlflow", "mlflow_auth", "optuna")
POSTGRES_ROOT = Path("/usr/lib/postgresql")  # Debian's versioned installs: <version>/bin


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
    password = secret(state.directory, "postgres_password", lambda: secrets.token_urlsafe(24))
    pwfile = folder / "initdb-password"
    write_private(pwfile, password)
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


def start_postgres(state: ClusterState) -> Proc:
    user = postgres_user()
    _init_postgres(state, user)
    password = secret(state.directory, "postgres_password", lambda: secrets.token_urlsafe(24))
    port = state.services["postgres"].port
    write_private(state.directory / "secrets" / "pgpass", f"{HOST}:{port}:*:{PG_USER}:{password}\n")
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


def _connect(state: ClusterState, database: str = "postgres") -> Any:
    try:
        import psycopg
    except ImportError:
        raise ClusterError(
            "the PostgreSQL driver is missing: pip install 'psycopg[binary]' "
            "(or, in a checkout, pip install -e '.[cluster]')"
        ) from None
    return psycopg.connect(
        host=HOST,
        port=state.services["postgres"].port,
        user=PG_USER,
        dbname=database,
        passfile=str(state.directory / "secrets" / "pgpass"),
        connect_timeout=5,
        autocommit=True,
    )


def create_databases(state: ClusterState) -> None:
    with _connect(state) as connection:
        existing = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
        for name in DATABASES:
            if name not in existing:
                connection.execute(f'CREATE DATABASE "{name}"')
    # Create Optuna's tables once, now: two sweeps starting together on an empty database race.
    from asha_tune.sweep.study import prepare_storage

    prepare_storage(state.database_url("optuna"))


def postgres_ready(state: ClusterState) -> bool:
    try:
        with _connect(state):
            return True
    except ClusterError:
        raise
    except Exception:
        return False
