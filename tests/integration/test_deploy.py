"""deploy/: every manifest and config parsed, and the fields that matter checked against each
other and against the CLI (images, versions, resources, commands, ports, secrets). Nothing here
runs Docker or Kubernetes; the Ray launcher config is validated with Ray's own schema."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

import asha_tune
from asha_tune.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
REPO = DEPLOY.parent
IMAGE = f"REGISTRY/asha-tune:{asha_tune.__version__}"
NAMESPACE = "asha-tune"


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module")
def k8s() -> list[dict]:
    docs = []
    for path in [*sorted((DEPLOY / "k8s").glob("*.yaml")), *sorted((DEPLOY / "kuberay").glob("*.yaml"))]:
        docs += load_all(path)
    return docs


@pytest.fixture(scope="module")
def raycluster(k8s) -> dict:
    return by_kind(k8s, "RayCluster")["asha-tune"]


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load((DEPLOY / "ray-cluster.aws.yaml").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "tracking" / "compose.yaml").read_text())


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def ray_containers(raycluster: dict) -> list[dict]:
    spec = raycluster["spec"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    return [c for pod in pods for c in containers(pod)]


def workloads(k8s: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in k8s if d["kind"] in ("Deployment", "StatefulSet")}


def launch_args(command: str):
    words = shlex.split(command)
    assert words[:2] == ["asha-tune", "launch"], words
    args, extra = build_parser().parse_known_args(words[1:])
    assert not extra, f"flags asha-tune does not have: {extra}"
    return args


# --- the image ---------------------------------------------------------------------------------


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def test_the_image_installs_the_wheel_on_the_ray_and_torch_the_project_pins():
    import ray

    text = dockerfile()
    base = re.search(r"ARG RAY_IMAGE=rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)", text)
    assert base and base.group(1) == ray.__version__  # nodes and driver must run one Ray
    assert f"{base.group(2)}.{base.group(3)}" == "3.11"
    assert "pip wheel --no-deps" in text and re.search(r"pip install [^\n]*asha_tune-\*\.whl", text)
    assert " -e " not in text and "--editable" not in text
    assert "asha-tune spaces" in text  # the build proves the spaces are inside the package
    makefile = (REPO / "Makefile").read_text()
    for package in ("torch", "torchvision"):
        pinned = re.search(rf'"{package}==([\d.]+)"', makefile).group(1)
        assert f'"{package}=={pinned}"' in text, f"the image's {package} differs from the Makefile's"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for needed in ("!pyproject.toml", "!asha_tune/", "!search_spaces/", "!README.md"):
        assert needed in ignore
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in copied.split():
            assert (REPO / path).exists(), f"COPY {path}: not in the repository"


# --- the Ray cluster launcher ------------------------------------------------------------------


def test_launcher_config_is_valid_for_ray_and_has_a_cpu_head_and_autoscaling_gpu_workers(launcher):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(launcher))  # Ray's JSON schema, as `ray up` checks it
    assert launcher["docker"]["image"] == IMAGE
    types = launcher["available_node_types"]
    head = types[launcher["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the head runs no trials
    workers = [t for name, t in types.items() if name != launcher["head_node_type"]]
    assert len(workers) == 1
    gpu = workers[0]
    assert gpu["resources"]["GPU"] == 1 and gpu["min_workers"] == 0 < gpu["max_workers"]
    assert gpu["max_workers"] <= launcher["max_workers"]
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))  # a GPU instance family
    head_start = " ".join(launcher["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head_start and "--num-cpus=0" in head_start
    assert "--dashboard-host=127.0.0.1" in head_start  # reached by `ray dashboard`, an SSH tunnel
    port = re.search(r"--port=(\d+)", head_start).group(1)
    worker_start = " ".join(launcher["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in worker_start and f"$RAY_HEAD_IP:{port}" in worker_start
    assert "~/.ray/auth_token" in launcher["file_mounts"]  # the token reaches every node
    setup = " ".join(launcher["setup_commands"])
    assert "PACS" in setup and "asha-tune spaces" in setup


# --- KubeRay -----------------------------------------------------------------------------------


def test_raycluster_has_a_cpu_head_and_an_autoscaling_gpu_group_on_the_image(raycluster):
    import ray

    spec = raycluster["spec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"]["mode"] == "token"
    assert spec["enableInTreeAutoscaling"] is True
    assert all(c["image"] == IMAGE for c in ray_containers(raycluster))
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    head_limits = containers(head["template"])[0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in head_limits
    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] == 0 < group["maxReplicas"]
    resources = containers(group["template"])[0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
    # Every Ray pod mounts the shared volume the sweep's --results-dir and --data-root live on.
    for pod in [head["template"], group["template"]]:
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        }
        mounts = {m["name"]: m["mountPath"] for m in containers(pod)[0]["volumeMounts"]}
        assert claims == {"shared": "asha-tune-shared"} and mounts["shared"] == "/mnt/shared"


def test_rayjob_runs_a_valid_launch_against_the_tracking_services(k8s, raycluster):
    job = by_kind(k8s, "RayJob")["asha-tune-random-layers"]
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": raycluster["metadata"]["name"]}
    args = launch_args(job["spec"]["entrypoint"])
    assert args.address is None  # the job's driver joins through $RAY_ADDRESS, set by Ray
    from asha_tune.spaces import list_spaces

    assert args.space in list_spaces()
    services = by_kind(k8s, "Service")
    tracking, study = urlparse(args.tracking_uri), urlparse(args.study_url)
    for url, name in ((tracking, "mlflow"), (study, "postgres")):
        assert url.hostname == f"{name}.{NAMESPACE}.svc.cluster.local"
        assert url.port in [p["port"] for p in services[name]["spec"]["ports"]]
    assert study.password is None and tracking.password is None  # no secret in a URL
    assert study.path.lstrip("/") in databases(k8s)
    assert str(args.results_dir).startswith("/mnt/shared/") and args.data_root.startswith("/mnt/shared/")
    # The driver (on the head) has the tracking credentials, from secrets.
    env = {e["name"] for e in containers(raycluster["spec"]["headGroupSpec"]["template"])[0]["env"]}
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD"} <= env
    assert study.username == postgres_user(k8s)


def databases(k8s: list[dict]) -> set[str]:
    config = by_kind(k8s, "ConfigMap")["asha-tune-tracking"]["data"]
    created = set(re.findall(r"CREATE DATABASE (\w+)", config["initdb.sql"]))
    env = {
        e["name"]: e.get("value")
        for e in containers(workloads(k8s)["postgres"]["spec"]["template"])[0]["env"]
    }
    return created | {env["POSTGRES_DB"]}


def postgres_user(k8s: list[dict]) -> str:
    env = {
        e["name"]: e.get("value")
        for e in containers(workloads(k8s)["postgres"]["spec"]["template"])[0]["env"]
    }
    return env["POSTGRES_USER"]


# --- tracking on Kubernetes ----------------------------------------------------------------------


def secret_refs(node) -> list[tuple[str, str]]:
    """Every (secret, key) a manifest references, anywhere in it."""
    found = []
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            found.append((node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]))
        for value in node.values():
            found += secret_refs(value)
    elif isinstance(node, list):
        for value in node:
            found += secret_refs(value)
    return found


def test_every_secret_referenced_is_defined_and_none_is_committed(k8s, raycluster):
    secrets = {name: s["stringData"] for name, s in by_kind(k8s, "Secret").items()}
    refs = secret_refs(k8s)
    refs.append((raycluster["spec"]["authOptions"]["secretName"], "auth_token"))  # KubeRay's key
    assert refs
    for name, key in refs:
        assert name in secrets and key in secrets[name], f"secret {name} has no key {key}"
    assert {name for name, _ in refs} == set(secrets)  # nothing defined that nobody uses
    for data in secrets.values():  # placeholders only: no credential is committed
        for key, value in data.items():
            assert value == "CHANGE-ME" or not any(word in key for word in ("password", "token", "secret"))
    assert all(
        d["metadata"].get("namespace", NAMESPACE) == NAMESPACE for d in k8s if d["kind"] != "Namespace"
    )


def test_tracking_services_are_private_and_their_ports_and_commands_agree(k8s):
    services, apps = by_kind(k8s, "Service"), workloads(k8s)
    assert set(services) == {"postgres", "minio", "mlflow", "optuna-dashboard"}
    for name, service in services.items():
        assert service["spec"]["type"] == "ClusterIP"  # nothing exposed outside the cluster
        pod = apps[name]["spec"]["template"]
        assert service["spec"]["selector"] == pod["metadata"]["labels"]
        container_ports = {p["containerPort"] for c in containers(pod) for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    mlflow = containers(apps["mlflow"]["spec"]["template"])[0]
    args = mlflow["args"]
    assert args[args.index("--port") + 1] == "5000" == str(services["mlflow"]["spec"]["ports"][0]["port"])
    backend = urlparse(args[args.index("--backend-store-uri") + 1])
    assert backend.hostname == "postgres" and backend.path.lstrip("/") in databases(k8s)
    assert args[args.index("--artifacts-destination") + 1].startswith("s3://")
    env = {e["name"]: e for e in mlflow["env"]}
    assert (
        urlparse(env["MLFLOW_S3_ENDPOINT_URL"]["value"]).port == services["minio"]["spec"]["ports"][0]["port"]
    )
    ini = configparser.ConfigParser()
    ini.read_string(by_kind(k8s, "ConfigMap")["asha-tune-tracking"]["data"]["basic_auth.ini"])
    assert urlparse(ini["mlflow"]["database_uri"]).path.lstrip("/") in databases(k8s)
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/etc/mlflow/basic_auth.ini"
    admin = by_kind(k8s, "Secret")["asha-tune-mlflow"]["stringData"]["admin-username"]
    assert ini["mlflow"]["admin_username"] == admin
    dashboard = containers(apps["optuna-dashboard"]["spec"]["template"])[0]["command"]
    assert urlparse(dashboard[1]).path.lstrip("/") in databases(k8s)
    # The ConfigMap's files are the same as the compose setup's.
    assert ini["mlflow"] == configparser_of(DEPLOY / "tracking" / "basic_auth.ini")["mlflow"]
    policies = by_kind(k8s, "NetworkPolicy")
    assert set(policies) == {"postgres", "minio", "mlflow"}


def configparser_of(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(path)
    return parser


def test_the_tracking_server_runs_with_basic_auth_everywhere(k8s, compose):
    entrypoint = (DEPLOY / "tracking" / "mlflow-entrypoint.sh").read_text()
    assert "exec mlflow server --app-name basic-auth" in entrypoint
    dockerfile_text = (DEPLOY / "tracking" / "mlflow.Dockerfile").read_text()
    assert "mlflow[auth]==" in dockerfile_text and "psycopg" in dockerfile_text
    assert "ENTRYPOINT" in dockerfile_text and "mlflow-entrypoint.sh" in dockerfile_text
    image = re.search(r"-t (\S+)", dockerfile_text).group(1)
    assert compose["services"]["mlflow"]["image"] == image
    assert containers(workloads(k8s)["mlflow"]["spec"]["template"])[0]["image"] == image
    import mlflow

    assert (
        image.endswith(f":{mlflow.__version__}") and f"mlflow[auth]=={mlflow.__version__}" in dockerfile_text
    )


# --- tracking with compose -----------------------------------------------------------------------


def test_compose_publishes_only_on_private_interfaces_and_defines_its_secrets(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "minio", "mlflow", "optuna-dashboard"}
    published = {}
    for name, service in services.items():
        for mapping in service.get("ports", []):
            host, host_port, container_port = str(mapping).rsplit(":", 2)
            assert host in ("127.0.0.1", "${PRIVATE_IP:-127.0.0.1}"), f"{name} publishes on {host}"
            published[name] = (host, int(host_port), int(container_port))
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], f"{name}: secret {secret} is not defined"
    assert "minio" not in published  # only MLflow talks to it
    assert published["optuna-dashboard"][0] == "127.0.0.1"  # no auth of its own: tunnel only
    used = {s for service in services.values() for s in service.get("secrets", [])}
    assert used == set(compose["secrets"])
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    assert "/deploy/tracking/secrets/" in (REPO / ".gitignore").read_text()  # never committed
    header = (DEPLOY / "tracking" / "compose.yaml").read_text()
    for name in compose["secrets"]:
        assert name in header  # the header says how to create each one
    mlflow = services["mlflow"]["command"]
    assert int(mlflow[mlflow.index("--port") + 1]) == published["mlflow"][2]
    assert urlparse(mlflow[mlflow.index("--backend-store-uri") + 1]).hostname == "postgres"
    assert published["postgres"][2] == 5432
    created = set(re.findall(r"CREATE DATABASE (\w+)", (DEPLOY / "tracking" / "initdb.sql").read_text()))
    created.add(services["postgres"]["environment"]["POSTGRES_DB"])
    assert urlparse(mlflow[mlflow.index("--backend-store-uri") + 1]).path.lstrip("/") in created
    assert {"mlflow_auth", "optuna"} <= created
    assert "optuna" in " ".join(services["optuna-dashboard"]["entrypoint"])
    env = services["mlflow"]["environment"]
    assert services["mlflow"]["volumes"][0].split(":")[1] == env["MLFLOW_AUTH_CONFIG_PATH"]


def test_readme_names_every_deploy_file_and_how_to_reach_each_ui():
    readme = (DEPLOY / "README.md").read_text()
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.name not in (
            "README.md",
            "Dockerfile.dockerignore",
            "mlflow-entrypoint.sh",
            "basic_auth.ini",
            "initdb.sql",
        ):
            assert str(path.relative_to(DEPLOY)) in readme, f"deploy/README.md does not mention {path.name}"
    for ui in ("Ray dashboard", "MLflow UI", "optuna-dashboard"):
        assert ui in readme
    assert "port-forward" in readme and "ssh -N -L" in readme
