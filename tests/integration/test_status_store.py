"""`status` and `list` over a real tracking server: tracking/reader.py's REST reading gives what
MLflow's client gives, through MLflow's basic-auth app as `cluster up` starts it (credentials as
MLflow's client finds them; artifacts through the server's proxy), every page of every search."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
import urllib.request

import pytest

from asha_tune.cluster import processes
from asha_tune.errors import AshaTuneError
from asha_tune.monitor import status, sweeps
from asha_tune.tracking import reader
from asha_tune.tracking.client import Tracker, server_environ
from asha_tune.tracking.reader import RestRecords, open_records
from tests.helpers.mlflow import mlflow_store
from tests.helpers.processes import wait_for
from tests.helpers.status_store import every_state, mlflow_records, sweeps_in

ADMIN = ("admin", secrets.token_urlsafe(16))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server --app-name basic-auth` on 127.0.0.1, in a folder of its own, with the
    sweeps of status_store.sweeps_in written through it; stopped by its pid."""
    folder = tmp_path_factory.mktemp("server")
    (folder / "basic_auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'auth.db'}\n"
        f"admin_username = {ADMIN[0]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 600\n"  # as cluster/mlflow_server.py: no hashing per request
    )
    port = processes.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(folder / "basic_auth.ini"),
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
    )
    command = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
               "--backend-store-uri", mlflow_store(folder / "mlflow.db"),
               "--artifacts-destination", str(folder / "artifacts"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    proc = processes.spawn(command, folder / "mlflow.log", env=server_environ(env), cwd=folder)
    uri = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert processes.alive(proc), (folder / "mlflow.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    credentials = {"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}
    saved = {k: os.environ.get(k) for k in credentials}
    os.environ.update(credentials)
    try:
        wait_for(up, 240, "the MLflow server", poll=0.5)
        sweeps_in(uri)
        yield uri
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        processes.stop(proc, signal.SIGTERM, timeout=20)


@pytest.fixture
def signed_in(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    return server


def test_the_rest_reader_gives_what_mlflow_gives_page_after_page(signed_in, monkeypatch):
    light = open_records(signed_in)
    assert isinstance(light, RestRecords)
    monkeypatch.setattr(reader, "PAGE_SIZE", 2)  # every search several pages
    monkeypatch.setattr(Tracker, "page_size", 2)
    started = time.monotonic()
    read = every_state(light)
    print(f"FIGURES the REST reader read every sweep in {time.monotonic() - started:.2f} s")
    assert read == every_state(mlflow_records(signed_in))
    plain = read[1]
    assert plain["num_trials"] == 60  # its space.json, through the server's artifact proxy
    assert [t["status"] for t in plain["trials"]] == ["completed", "pruned", "failed"]


def test_status_and_list_over_the_server(signed_in, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = status("plain", signed_in, tmp_path)
    assert found.lines[0] == "sweep plain: finished"
    assert found.record["trials"]["total"] == 60
    assert [s["name"] for s in sweeps(signed_in).record["sweeps"]] == ["live", "search", "plain"]


def test_a_reader_the_server_refuses_is_one_line(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials either
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(AshaTuneError) as err:
        status("plain", server, tmp_path)
    line = str(err.value)
    assert line.startswith(f"the MLflow tracking server at {server} refused to read its records (HTTP 401")
    assert "\n" not in line
    assert not (tmp_path / ".mlflow").exists()  # a reader creates no credentials


@pytest.fixture(scope="module")
def postgres_store():
    """A PostgreSQL of its own (as `cluster up` runs one: as the postgres user when root) holding
    the sweeps of status_store.sweeps_in, written by MLflow; stopped by its pid."""
    import pwd
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from asha_tune.cluster.postgres import postgres_bin, postgres_user

    try:
        binaries, user = postgres_bin(), postgres_user()
    except Exception as err:
        pytest.skip(f"no PostgreSQL to start here: {err}")
    folder = Path(tempfile.mkdtemp(prefix="asha-tune-pg-", dir="/var/tmp"))
    folder.chmod(0o755)
    if user:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    initdb = [str(binaries / "initdb"), "-D", str(folder / "data"), "-U", "asha", "--auth=trust",
              "-E", "UTF8", "--no-locale"]  # fmt: skip
    done = subprocess.run(initdb, user=user, cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    port = processes.free_port()
    server = processes.spawn(
        [
            str(binaries / "postgres"),
            "-D",
            str(folder / "data"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(folder),
        ],  # fmt: skip
        folder / "postgres.log",
        env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
        cwd=folder,
        user=user,
    )
    try:
        import psycopg

        def up() -> bool:
            try:
                with psycopg.connect(f"postgresql://asha@127.0.0.1:{port}/postgres", autocommit=True) as db:
                    db.execute("CREATE DATABASE mlflow")
                return True
            except psycopg.OperationalError:
                return False

        wait_for(up, 120, "PostgreSQL", poll=0.5)
        uri = f"postgresql://asha@127.0.0.1:{port}/mlflow"
        here = os.getcwd()
        os.chdir(folder)  # MLflow's default artifact root (./mlartifacts) goes there
        try:
            sweeps_in(uri)
        finally:
            os.chdir(here)
        yield uri
    finally:
        processes.stop(server, signal.SIGTERM, timeout=20)
        shutil.rmtree(folder, ignore_errors=True)


def test_the_postgres_reader_gives_what_mlflow_gives(postgres_store):
    light = open_records(postgres_store)
    assert type(light).__name__ == "SqlRecords"  # read with psycopg, not MLflow
    read = every_state(light)
    assert read == every_state(mlflow_records(postgres_store))
    assert [t["status"] for t in read[1]["trials"]] == ["completed", "pruned", "failed"]
