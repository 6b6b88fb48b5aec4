"""The tracking server as deployed: `mlflow server` started here with the arguments of
deploy/k8s/tracking.yaml and of deploy/tracking/compose.yaml (read from the files), its basic-auth
app configured as there, then asked as its clients ask: with the Host header each of the other
manifests' URLs makes (the RayJob's driver, the cluster launcher's and SLURM's drivers, a
port-forward or SSH tunnel). MLflow 3 refuses a Host outside --allowed-hosts with 403 on every
API route but /health, so the readiness probe alone proves nothing.

Only what names services that do not exist here is replaced: the PostgreSQL store by SQLite, the
S3 artifact destination by a folder, the listening address and port by 127.0.0.1 and a free port.
Marked `cluster`: two servers of four workers each take about a minute to start on 2 cores.
"""

from __future__ import annotations

import base64
import configparser
import http.client
import os
import re
import secrets
import shlex
import signal
import sys
import time
from urllib.parse import urlparse

import pytest
import yaml

from asha_tune.cluster import processes
from tests.helpers.data import REPO
from tests.helpers.processes import wait_for

pytestmark = pytest.mark.cluster

DEPLOY = REPO / "deploy"
# What the compose header's example sets (the server's private address, its DNS name).
COMPOSE_ENV = {"PRIVATE_IP": "10.0.0.12", "MLFLOW_HOST": "mlflow.internal.example"}
API = "/api/2.0/mlflow/experiments/search?max_results=1"


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default} (nested), $$."""
    pattern = re.compile(r"\$\{(\w+)(?::-((?:[^${}]|\$\{[^}]*\})*))?\}")
    previous = None
    while previous != text:
        previous = text
        text = pattern.sub(lambda m: env.get(m.group(1)) or interpolate(m.group(2) or "", env), text)
    return text.replace("$$", "$")


def entrypoint_prefix() -> list[str]:
    """`mlflow server --app-name basic-auth`, as the image's entrypoint execs it."""
    line = next(
        line
        for line in (DEPLOY / "tracking" / "mlflow-entrypoint.sh").read_text().splitlines()
        if line.startswith("exec mlflow server")
    )
    words = shlex.split(line)[1:]
    assert words[-1] == "$@"
    return words[:-1]


def k8s_server() -> tuple[list[str], str, list[str]]:
    """The args, the auth config and the Host headers of the Kubernetes deployment's clients."""
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "tracking.yaml").read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mlflow")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["basic_auth.ini"]
    job = yaml.safe_load((DEPLOY / "kuberay" / "rayjob.yaml").read_text())
    driver = shlex.split(job["spec"]["entrypoint"])
    hosts = [urlparse(driver[driver.index("--tracking-uri") + 1]).netloc]
    readme = (DEPLOY / "README.md").read_text()
    local = re.search(r"kubectl -n asha-tune port-forward svc/mlflow (\d+):5000", readme).group(1)
    return args, config, [*hosts, f"localhost:{local}"]


def compose_server() -> tuple[list[str], str, list[str]]:
    compose = yaml.safe_load((DEPLOY / "tracking" / "compose.yaml").read_text())
    args = [interpolate(str(a), COMPOSE_ENV) for a in compose["services"]["mlflow"]["command"]]
    config = (DEPLOY / "tracking" / "basic_auth.ini").read_text()
    # The drivers of the cluster launcher and of SLURM reach it as http://MLFLOW_HOST:5000.
    hosts = []
    for path in (DEPLOY / "ray-cluster.aws.yaml", DEPLOY / "slurm" / "asha-tune.sbatch"):
        uri = re.search(r"--tracking-uri (\S+)", path.read_text()).group(1)
        hosts.append(urlparse(uri.replace("MLFLOW_HOST", COMPOSE_ENV["MLFLOW_HOST"])).netloc)
    published = next(p for p in compose["services"]["mlflow"]["ports"])
    hosts.append(f"{COMPOSE_ENV['PRIVATE_IP']}:{interpolate(published, COMPOSE_ENV).split(':')[1]}")
    tunnel = re.search(r"ssh -N -L (\d+):PRIVATE_IP:5000", (DEPLOY / "README.md").read_text()).group(1)
    return args, config, [*dict.fromkeys(hosts), f"localhost:{tunnel}"]


def replace_value(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def request(port: int, method: str, path: str, host: str, auth: tuple[str, str] | None, body: str = ""):
    headers = {"Host": host, "Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


@pytest.mark.parametrize("deployment", ["k8s", "compose"])
def test_the_tracking_server_as_deployed_serves_the_hosts_its_clients_use(deployment, tmp_path):
    args, auth_config, hosts = {"k8s": k8s_server, "compose": compose_server}[deployment]()
    assert "--allowed-hosts" in args, "without it MLflow refuses every name but localhost and private IPs"
    port = processes.free_port()
    local = replace_value(args, "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    local = replace_value(local, "--artifacts-destination", str(tmp_path / "artifacts"))
    local = replace_value(replace_value(local, "--host", "127.0.0.1"), "--port", str(port))
    ini = configparser.ConfigParser()
    ini.read_string(auth_config)
    ini["mlflow"]["database_uri"] = f"sqlite:///{tmp_path / 'auth.db'}"
    with open(tmp_path / "basic_auth.ini", "w") as f:
        ini.write(f)
    admin = (ini["mlflow"]["admin_username"], secrets.token_urlsafe(16))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(tmp_path / "basic_auth.ini"),
        MLFLOW_AUTH_ADMIN_PASSWORD=admin[1],
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
    )
    command = [sys.executable, "-m", "mlflow", *entrypoint_prefix()[1:], *local]
    started = time.monotonic()
    server = processes.spawn(command, tmp_path / "mlflow.log", env=env, cwd=tmp_path)
    try:

        def up() -> bool:
            assert processes.alive(server), (tmp_path / "mlflow.log").read_text()[-3000:]
            try:
                return request(port, "GET", API, f"127.0.0.1:{port}", admin)[0] == 200
            except OSError:
                return False

        wait_for(up, 240, f"the {deployment} MLflow server", poll=0.5)
        print(
            f"FIGURES tracking server ({deployment}): up in {time.monotonic() - started:.1f} s, hosts={hosts}"
        )
        for host in hosts:
            status, body = request(port, "GET", API, host, admin)
            assert status == 200, f"Host {host}: {status} {body[:200]}"
            status, body = request(
                port, "POST", "/api/2.0/mlflow/experiments/create", host, admin, f'{{"name": "e-{host}"}}'
            )
            assert status == 200, f"Host {host}, a write: {status} {body[:200]}"
            assert request(port, "GET", API, host, None)[0] == 401  # no credentials
            assert request(port, "GET", API, host, (admin[0], admin[1] + "x"))[0] == 401
        # The list is enforced: another name is refused, though its /health answers.
        status, body = request(port, "GET", API, "attacker.example:5000", admin)
        assert status == 403
        assert "Invalid Host header" in body
        assert request(port, "GET", "/health", "attacker.example:5000", None)[0] == 200
    finally:
        processes.stop(server, signal.SIGTERM, timeout=20)
