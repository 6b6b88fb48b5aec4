"""deploy/: every manifest and config parsed, and the fields that matter checked against each
other and against the CLI (images, versions, resources, commands, ports, secrets). Nothing here
runs Docker or Kubernetes: the Ray launcher config is validated with Ray's own schema, the KubeRay
manifests with KubeRay's CRD schemas (1.6 and 1.7, kept in tests/data/kuberay) refusing unknown
fields, the built-in kinds with kubernetes-validate --strict. The parts that run here (the tracking
server, the SLURM script, the autoscaling cluster) are tested in test_deploy_tracking.py,
test_slurm.py and test_autoscaling.py."""

from __future__ import annotations

import configparser
import copy
import gzip
import json
import math
import re
import shlex
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

import asha_tune
from asha_tune.cli import build_parser
from tests.helpers.data import REPO
from tests.helpers.deploy import documented_ray_exec

DEPLOY = REPO / "deploy"
IMAGE = f"REGISTRY/asha-tune:{asha_tune.__version__}"
NAMESPACE = "asha-tune"
SPACES = REPO / "search_spaces"
CRDS = REPO / "tests" / "data" / "kuberay"
KUBERAY_RELEASES = ("v1.6.0", "v1.7.0")  # the oldest KubeRay the manifests need, and the newest
TORCH_DRIVER = 580  # torch 2.14.1 from PyPI: CUDA 13.0, which needs NVIDIA driver 580 or newer
# What the instance types named in deploy/ offer (AWS's published figures) and, for Kubernetes
# nodes of that type, what the kubelet leaves allocatable (EKS's defaults for these sizes).
INSTANCES = {"m5.xlarge": {"cpu": 4, "memory_gib": 16}, "g5.2xlarge": {"cpu": 8, "memory_gib": 32, "gpu": 1}}
ALLOCATABLE = {"g5.2xlarge": {"cpu": 7.91, "memory_gib": 30.5}}


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
    # nodes and driver must run one Ray
    assert base
    assert base.group(1) == ray.__version__
    assert f"{base.group(2)}.{base.group(3)}" == "3.11"
    assert "pip wheel --no-deps" in text
    assert re.search(r"asha_tune-\*\.whl", " ".join(i for i in final_stage(text) if "pip install" in i))
    assert " -e " not in text
    assert "--editable" not in text
    assert "asha-tune spaces" in text  # the build proves the spaces are inside the package
    makefile = (REPO / "Makefile").read_text()
    for package in ("torch", "torchvision"):
        pinned = re.search(rf'"{package}==([\d.]+)"', makefile).group(1)
        assert f'"{package}=={pinned}"' in text, f"the image's {package} differs from the Makefile's"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for needed in ("!pyproject.toml", "!asha_tune/", "!search_spaces/", "!README.md"):
        assert needed in ignore
    for line in re.findall(r"^COPY .+$", text, re.M):
        if "--from=" in line:
            continue
        for path in re.sub(r"--\S+ ", "", line).split()[1:-1]:
            assert (REPO / path).exists(), f"COPY {path}: not in the repository"
    assert "!deploy/constraints.txt" in ignore


def final_stage(text: str) -> list[str]:
    """The instructions of the Dockerfile's last stage (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]
    last = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last + 1 :]


def test_the_image_follows_rays_user_conventions():
    """Ray's images run as `ray` (uid 1000, gid 100): the image stays that user, and every file it
    copies in is that user's, so its own `rm` works (the root-owned copy made the build fail)."""
    stage = final_stage(dockerfile())
    users = [line.split()[1] for line in stage if line.startswith("USER ")]
    assert users, users
    assert users[-1] in ("1000", "ray"), users
    copies = [line for line in stage if line.startswith("COPY ")]
    assert copies
    for line in copies:
        assert re.search(r"--chown=(1000|ray):(100|users)\b", line), f"root-owned copy: {line}"
    removed = [line for line in stage if " rm " in f" {line} "]
    for line in removed:  # whatever is removed was copied in as uid 1000 (or is removed with sudo)
        target = re.search(r"rm -rf? (\S+)", line).group(1)
        assert "sudo rm" in line or any(target.rstrip("/") in c for c in copies), line


def constraints() -> dict[str, str]:
    pins = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonical(name)] = version.strip()
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(root: str, extras: set[str]) -> set[str]:
    """Every installed distribution that `root[extras]` pulls in, by its installed metadata."""
    seen: set[str] = set()
    todo = [(root, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        key = canonical(name)
        if (key, wanted) in seen:
            continue
        seen.add((key, wanted))
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, frozenset(req.extras)))
    return {name for name, _ in seen} - {canonical(root)}


def test_the_image_installs_only_pinned_packages_at_the_tested_versions():
    text = dockerfile()
    pins = constraints()
    installs = [line for line in final_stage(text) if "pip install" in line]
    assert installs
    assert all("-c /home/ray/asha-tune-constraints.txt" in line for line in installs)
    assert "COPY --chown=1000:100 deploy/constraints.txt /home/ray/asha-tune-constraints.txt" in text
    # Everything asha-tune[cluster] needs, transitively, has a pin, at the version tested here.
    missing = sorted(requirement_closure("asha-tune", {"cluster"}) - set(pins))
    assert not missing, f"deploy/constraints.txt lacks {missing}: regenerate it (its header)"
    import mlflow
    import optuna
    import ray
    import torch
    import torchvision

    for module in (ray, torch, torchvision, mlflow, optuna):
        tested = module.__version__.split("+")[0]
        assert pins[canonical(module.__name__)] == tested, (
            f"{module.__name__}: image {pins[module.__name__]}, tested {tested}"
        )
    for package, version in re.findall(r'"([a-z]+)==([\d.]+)"', " ".join(installs)):
        assert pins[canonical(package)] == version, (
            f"{package}=={version} in the Dockerfile, {pins[package]} pinned"
        )
    # the AWS setup's `aws s3 sync` is in the image
    assert "awscli" in pins
    assert "aws --version" in text


def test_the_deploy_files_state_the_driver_the_torch_build_needs():
    pins = constraints()
    # CUDA 13.0 build
    assert pins["torch"] == "2.14.1"
    assert pins["nvidia-cuda-runtime"].startswith("13.0")
    for path in ("Dockerfile", "constraints.txt", "ray-cluster.aws.yaml", "README.md"):
        text = (DEPLOY / path).read_text()
        assert re.search(
            rf"driver\s*(>=|{TORCH_DRIVER} or newer|version >= )\s*{TORCH_DRIVER}|driver {TORCH_DRIVER} or newer|driver >= {TORCH_DRIVER}",
            text,
        ), path


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
    assert gpu["resources"]["GPU"] == 1
    assert gpu["min_workers"] == 0 < gpu["max_workers"]
    assert gpu["max_workers"] <= launcher["max_workers"]
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))  # a GPU instance family
    head_start = " ".join(launcher["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head_start
    assert "--num-cpus=0" in head_start
    assert "--dashboard-host=127.0.0.1" in head_start  # reached by `ray dashboard`, an SSH tunnel
    port = re.search(r"--port=(\d+)", head_start).group(1)
    worker_start = " ".join(launcher["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in worker_start
    assert f"$RAY_HEAD_IP:{port}" in worker_start
    # Only the token reaches every node; the tracking credentials go to the head alone.
    assert set(launcher["file_mounts"]) == {"~/.ray/auth_token"}
    header = (DEPLOY / "ray-cluster.aws.yaml").read_text()
    for secret in ("~/.mlflow/credentials", "~/.pgpass"):
        assert re.search(rf"ray rsync-up deploy/ray-cluster.aws.yaml {re.escape(secret)} /home/ray/", header)
        assert re.search(rf"> {re.escape(secret)}", header)  # the header says how to create it
    setup = " ".join(launcher["setup_commands"])
    assert "asha-tune spaces" in setup


def shipped_gpu_spaces() -> dict[str, dict]:
    spaces = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(SPACES.glob("*.yaml"))}
    return {name: s["resources"] for name, s in spaces.items() if s.get("resources", {}).get("gpu", 0) > 0}


def trials_per_node(cpus: float, gpus: float, resources: dict) -> int:
    return min(math.floor(cpus / resources["cpu"]), math.floor(gpus / resources["gpu"] + 1e-9))


def test_launcher_workers_fit_their_instance_and_let_every_gpu_be_shared_fully(launcher):
    (gpu,) = [t for name, t in launcher["available_node_types"].items() if name != launcher["head_node_type"]]
    instance = INSTANCES[gpu["node_config"]["InstanceType"]]
    assert gpu["resources"]["CPU"] <= instance["cpu"]
    assert gpu["resources"]["GPU"] == instance["gpu"]
    assert shipped_gpu_spaces()
    for name, resources in shipped_gpu_spaces().items():
        per_gpu = round(1 / resources["gpu"])
        fits = trials_per_node(gpu["resources"]["CPU"], gpu["resources"]["GPU"], resources)
        assert fits == per_gpu * gpu["resources"]["GPU"], (
            f"{name}: {fits} trials per worker, the GPU holds {per_gpu}"
        )


def test_launcher_setup_works_on_the_image(launcher):
    types = launcher["available_node_types"]
    for name, spec in types.items():  # never Ray's fallback AMI (its driver is for CUDA 11)
        assert spec["node_config"].get("ImageId", "").startswith(("ami-", "resolve:ssm:")), name
    init = " ".join(launcher["initialization_commands"])
    assert "mount -t nfs4" in init
    assert "/mnt/shared" in init
    assert "chown 1000:100 /mnt/shared" in init  # the image's user writes results and checkpoints
    assert "/mnt/shared:/mnt/shared" in " ".join(launcher["docker"]["run_options"])
    # PACS is copied to EFS once, by the head (whose instance profile can read S3), with the AWS CLI
    # the image installs; workers read it from EFS and need no AWS credentials.
    head_setup = " ".join(launcher["head_setup_commands"])
    assert "aws s3 sync" in head_setup
    assert "/mnt/shared/PACS" in head_setup
    everywhere = " ".join(launcher["setup_commands"] + launcher.get("worker_setup_commands", []))
    assert "aws " not in everywhere
    (gpu,) = [t for n, t in types.items() if n != launcher["head_node_type"]]
    check = " ".join(gpu["worker_setup_commands"])
    assert "torch.cuda.is_available()" in check
    assert f"driver {TORCH_DRIVER} or newer" in check
    assert "IamInstanceProfile" not in json.dumps(gpu["node_config"])  # nothing for workers to read


def test_the_documented_ray_exec_launch_joins_the_cluster_and_waits_for_workers():
    for path in (DEPLOY / "ray-cluster.aws.yaml", DEPLOY / "README.md"):
        args = launch_args(documented_ray_exec(path.read_text()))
        assert args.address == "auto", path  # `ray exec` sets no RAY_ADDRESS: join the head's Ray
        # It starts with no GPU worker: the default wait for the autoscaler, or a long one.
        assert args.resource_wait is None or args.resource_wait >= 300, path
        assert str(args.results_dir).startswith("/mnt/shared/")
        assert args.data_root.startswith("/mnt/shared/")


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
        assert claims == {"shared": "asha-tune-shared"}
        assert mounts["shared"] == "/mnt/shared"


def quantity(value: str) -> float:
    """A Kubernetes quantity in cores or GiB."""
    units = {"m": 1e-3, "Gi": 1.0, "Mi": 1 / 1024, "Ti": 1024.0}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_raycluster_workers_fit_a_g5_node_and_share_each_gpu_fully(raycluster):
    (group,) = raycluster["spec"]["workerGroupSpecs"]
    resources = containers(group["template"])[0]["resources"]
    room = ALLOCATABLE["g5.2xlarge"]
    for kind in ("requests", "limits"):
        assert quantity(resources[kind]["cpu"]) <= room["cpu"]
        assert quantity(resources[kind]["memory"]) <= room["memory_gib"]
    cpus = float(group["rayStartParams"]["num-cpus"])  # what Ray schedules by (KubeRay's autoscaler too)
    gpus = float(resources["limits"]["nvidia.com/gpu"])
    for name, space in shipped_gpu_spaces().items():
        assert trials_per_node(cpus, gpus, space) == round(gpus / space["gpu"]), name


def test_rayjob_runs_a_valid_launch_against_the_tracking_services(k8s, raycluster):
    job = by_kind(k8s, "RayJob")["asha-tune-random-layers"]
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": raycluster["metadata"]["name"]}
    args = launch_args(job["spec"]["entrypoint"])
    assert args.address is None  # the job's driver joins through $RAY_ADDRESS, set by Ray
    assert args.resource_wait is None or args.resource_wait >= 300  # the autoscaler adds GPU workers
    # A retried job (backoffLimit) runs the same entrypoint: it must continue the sweep, not fail.
    assert args.if_exists == "resume"
    assert job["spec"]["backoffLimit"] > 0
    from asha_tune.spaces import list_spaces

    assert args.space in list_spaces()
    services = by_kind(k8s, "Service")
    tracking, study = urlparse(args.tracking_uri), urlparse(args.study_url)
    for url, name in ((tracking, "mlflow"), (study, "postgres")):
        assert url.hostname == f"{name}.{NAMESPACE}.svc.cluster.local"
        assert url.port in [p["port"] for p in services[name]["spec"]["ports"]]
    # no secret in a URL
    assert study.password is None
    assert tracking.password is None
    assert study.path.lstrip("/") in databases(k8s)
    assert str(args.results_dir).startswith("/mnt/shared/")
    assert args.data_root.startswith("/mnt/shared/")
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
        assert name in secrets, f"secret {name} has no key {key}"
        assert key in secrets[name], f"secret {name} has no key {key}"
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
    assert backend.hostname == "postgres"
    assert backend.path.lstrip("/") in databases(k8s)
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
    assert "mlflow[auth]==" in dockerfile_text
    assert "psycopg" in dockerfile_text
    assert "ENTRYPOINT" in dockerfile_text
    assert "mlflow-entrypoint.sh" in dockerfile_text
    image = re.search(r"-t (\S+)", dockerfile_text).group(1)
    assert compose["services"]["mlflow"]["image"] == image
    assert containers(workloads(k8s)["mlflow"]["spec"]["template"])[0]["image"] == image
    import mlflow

    assert image.endswith(f":{mlflow.__version__}")
    assert f"mlflow[auth]=={mlflow.__version__}" in dockerfile_text


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


def readme_table() -> dict[str, tuple[str, str]]:
    """deploy/README.md's table of files: file -> (what was run here, what was only checked statically)."""
    readme = (DEPLOY / "README.md").read_text()
    section = readme.split("## What was run here", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and not set(cells[0]) <= {"-"}:
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


def test_readme_says_for_every_deploy_file_what_ran_here_and_which_tests_check_it():
    rows = readme_table()
    files = {str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*") if p.is_file() and p.name != "README.md"}
    assert set(rows) == files, (
        f"rows without a file: {set(rows) - files}; files without a row: {files - rows.keys()}"
    )
    tests = {
        name
        for path in (REPO / "tests").rglob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), re.M)
    }
    for file, (ran, static) in rows.items():
        assert ran, file
        assert static, file
        cited = re.findall(r"`(test_\w+)`", ran + static)
        assert cited, f"{file}: the row names no test"
        unknown = [name for name in cited if name not in tests]
        assert not unknown, f"{file}: the README cites tests that do not exist: {unknown}"
    readme = (DEPLOY / "README.md").read_text()
    for ui in ("Ray dashboard", "MLflow UI", "optuna-dashboard"):
        assert ui in readme
    assert "port-forward" in readme
    assert "ssh -N -L" in readme
    assert "KubeRay 1.6 or newer" in readme
    assert "1.5 or newer" not in readme


# --- KubeRay's schemas ----------------------------------------------------------------------


def strict_schema(node):
    """A CRD's structural schema as JSON Schema, refusing unknown fields as the API server's
    strict field validation does (objects list their fields unless they preserve unknown ones)."""
    if isinstance(node, list):
        return [strict_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields"):
        if "properties" in node and "additionalProperties" not in node:
            out["additionalProperties"] = False
    return out


def crd_validator(release: str, kind: str) -> jsonschema.Draft7Validator:
    data = json.loads(gzip.decompress((CRDS / f"{release}-{kind.lower()}s.json.gz").read_bytes()))
    assert data["kind"] == kind
    schema = strict_schema(data["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the API server itself
    return jsonschema.Draft7Validator(schema)


def crd_errors(release: str, document: dict) -> list[str]:
    validator = crd_validator(release, document["kind"])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


@pytest.mark.parametrize("release", KUBERAY_RELEASES)
def test_kuberay_manifests_pass_kuberays_crd_schemas(k8s, release):
    documents = [d for d in k8s if d["apiVersion"] == "ray.io/v1"]
    assert {d["kind"] for d in documents} == {"RayCluster", "RayJob"}
    for document in documents:
        assert not crd_errors(release, document), crd_errors(release, document)


def test_the_crd_check_refuses_unknown_fields_and_wrong_types(raycluster):
    """The check above would catch a misspelt field, one put at the wrong level, a wrong type."""
    cases = {
        "misspelt": lambda d: d["spec"].__setitem__("enableInTreeAutoscalling", True),
        "wrong level": lambda d: d["spec"]["headGroupSpec"].__setitem__("secretName", "x"),
        "in the pod template": lambda d: containers(d["spec"]["headGroupSpec"]["template"])[0].__setitem__(
            "imge", "x"
        ),
        "wrong type": lambda d: d["spec"]["workerGroupSpecs"][0].__setitem__("maxReplicas", "8"),
        "not an auth mode": lambda d: d["spec"]["authOptions"].__setitem__("mode", "password"),
    }
    for case, change in cases.items():
        broken = copy.deepcopy(raycluster)
        change(broken)
        assert crd_errors(KUBERAY_RELEASES[0], broken), f"{case}: accepted"


def test_builtin_kinds_pass_kubernetes_validate_strict(k8s):
    import kubernetes_validate

    builtin = [d for d in k8s if not d["apiVersion"].startswith("ray.io/")]
    assert {d["kind"] for d in builtin} >= {"Deployment", "StatefulSet", "Service", "NetworkPolicy", "Secret"}
    for document in builtin:
        kubernetes_validate.validate(document, "1.33.0", strict=True)
    broken = copy.deepcopy(next(d for d in builtin if d["kind"] == "Deployment"))
    broken["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33.0", strict=True)
