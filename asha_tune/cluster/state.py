"""The local cluster's record (DIR/cluster.json): what `up` started, on which ports, and the
URLs and flags that point a sweep at it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from asha_tune import defaults
from asha_tune.cluster import processes
from asha_tune.cluster.processes import Proc
from asha_tune.errors import AshaTuneError, ConfigError
from asha_tune.files import DamagedFileError, read_saved, write_atomic, write_private

STATE_FILE = "cluster.json"
HOST = "127.0.0.1"
PG_USER = "asha"


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
        write_atomic(self.directory / STATE_FILE, self.model_dump_json(indent=2))


def default_dir() -> Path:
    return defaults.cluster_dir()


def load(directory: Path) -> ClusterState:
    path = directory / STATE_FILE
    if not path.is_file():
        raise ClusterError(
            f"no local cluster in {directory} (start one with: asha-tune cluster up --dir {directory})"
        )
    try:
        return read_saved(path, ClusterState)
    except DamagedFileError as err:
        raise ConfigError(
            f"{err}; restore it from a copy, or stop by hand whatever of the cluster still runs (its "
            f"logs are in {directory / 'logs'}), move the file aside and run asha-tune cluster up --dir "
            f"{directory}: a new record, on the same data"
        ) from None


def secret(directory: Path, name: str, make: Callable[[], str]) -> str:
    path = directory / "secrets" / name
    if not path.is_file():
        write_private(path, make())
    return path.read_text().strip()
