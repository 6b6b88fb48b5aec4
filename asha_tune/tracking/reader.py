"""Sweeps' records read without importing MLflow, for `asha-tune status` and `list` (SweepRecords).

Importing MLflow and opening its store take seconds (2.5 s and 2.2 s of a 5.8 s `status` measured
on a quiet machine), far over the second `status` has on a store of 1,000 trials. These commands
only read, so they read what MLflow wrote directly:

- a database store (sqlite:///PATH; postgresql:// through psycopg, where installed): a few narrow
  queries on MLflow's own tables (runs, tags, params, latest_metrics, experiments), sqlite opened
  read-only. Only a schema this reader was checked against (KNOWN_SCHEMAS, MLflow's alembic
  revision) is read so; any other store (a newer MLflow's migration, another database) is read
  through MLflow itself (sweep_state.MlflowRecords): slower, never wrong.
- a tracking server (http(s)://, as `cluster up` and `ui` give): MLflow's REST API with urllib,
  with the credentials MLflow's client would send (tracking/credentials.py), asked once.

What they return is what MlflowRecords returns on the same store (tests/unit/tracking/test_reader.py,
on sqlite and on a real `mlflow server`). A run's space.json is read from its artifact folder on
this machine or from the server's artifact proxy; any other artifact store through MLflow.
"""

from __future__ import annotations

import base64
import json
import math
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from asha_tune.errors import AshaTuneError
from asha_tune.tracking.client import PAGE_SIZE, PARENT_RUN_TAG, Tracker, local_store, unavailable
from asha_tune.tracking.credentials import client_credentials
from asha_tune.tracking.records import store_there
from asha_tune.tracking.sweep_state import (
    TRIAL_TAGS,
    MlflowRecords,
    RunRecord,
    SweepRecords,
    TrialRow,
    trial_row,
)
from asha_tune.tracking.tags import KIND_TAG, SWEEP_TAG

# MLflow's alembic revisions whose tables this reader was checked against (the queries below and
# test_reader.py's equivalence tests). A new MLflow brings a new head: test_reader.py fails until
# it is checked and added here; meanwhile such stores are read through MLflow.
KNOWN_SCHEMAS = frozenset({"dc11669786a5"})  # MLflow 3.17
TIMEOUT_S = 10.0  # a command that only looks asks a server once (sweep_state.IMPATIENT)


def open_records(uri: str) -> SweepRecords:
    """The records of store `uri`, read without MLflow where this reader knows the store."""
    store_there(uri)
    if uri.startswith(("http://", "https://")):
        return RestRecords(uri)
    db = local_store(uri)
    if db is not None:
        sql = SqlRecords.sqlite(uri, db)
    elif uri.startswith(("postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://")):
        sql = SqlRecords.postgres(uri)
    else:
        sql = None
    return sql if sql is not None else MlflowRecords(Tracker(uri))


# --- a database store ------------------------------------------------------------------------------


def _value(value: Any, is_nan: Any) -> float:
    """A latest_metrics value as MLflow reads it back (NaN is stored as 0 with is_nan set)."""
    return math.nan if is_nan else float(value)


class SqlRecords:
    """MLflow's tables read with DB-API (`?` or `%s` placeholders)."""

    def __init__(self, uri: str, connection: Any, mark: str, artifacts: Callable[[], Tracker]):
        self.uri, self._db, self._mark, self._tracker = uri, connection, mark, artifacts
        self._artifact_uris: dict[str, str] = {}  # run id -> its artifact_uri, of the runs read

    @classmethod
    def sqlite(cls, uri: str, db: Path) -> SqlRecords | None:
        import sqlite3

        try:
            connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=TIMEOUT_S)
        except sqlite3.Error:
            return None
        return cls._checked(uri, connection, "?")

    @classmethod
    def postgres(cls, uri: str) -> SqlRecords | None:
        try:
            import psycopg
        except ImportError:
            return None
        rest = uri.split("://", 1)[1]
        try:
            connection = psycopg.connect(f"postgresql://{rest}", connect_timeout=int(TIMEOUT_S))
            connection.read_only = True
            connection.autocommit = True
        except psycopg.Error:
            return None  # MLflow says why, in one line
        return cls._checked(uri, connection, "%s")

    @classmethod
    def _checked(cls, uri: str, connection: Any, mark: str) -> SqlRecords | None:
        """The reader of a store whose schema it knows, else None (the connection closed)."""
        try:
            revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        except Exception:
            revision = []
        if [r[0] for r in revision] and {r[0] for r in revision} <= KNOWN_SCHEMAS:
            return cls(uri, connection, mark, lambda: Tracker(uri))
        connection.close()
        return None

    def _rows(self, query: str, args: Sequence[Any]) -> list[Any]:
        return list(self._db.execute(query.replace("?", self._mark), tuple(args)).fetchall())

    def _in(self, keys: Iterable[str]) -> str:
        return "(" + ", ".join("?" for _ in keys) + ")"

    def _runs(self, chosen: str, args: Sequence[Any]) -> list[RunRecord]:
        """Runs whole (tags, params, latest metrics) whose run_uuid `chosen` (a subquery) selects,
        active, in active experiments."""
        runs = self._rows(
            "SELECT r.run_uuid, r.experiment_id, r.name, r.start_time, r.end_time, r.artifact_uri "
            "FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
            "WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active' "
            f"AND r.run_uuid IN ({chosen})",
            args,
        )
        tags: dict[str, dict[str, str]] = {}
        params: dict[str, dict[str, str]] = {}
        metrics: dict[str, dict[str, float]] = {}
        for run_id, key, value in self._rows(
            f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({chosen})", args
        ):
            tags.setdefault(run_id, {})[key] = value
        for run_id, key, value in self._rows(
            f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({chosen})", args
        ):
            params.setdefault(run_id, {})[key] = value
        for run_id, key, value, nan in self._rows(
            f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({chosen})", args
        ):
            metrics.setdefault(run_id, {})[key] = _value(value, nan)
        self._artifact_uris.update({r[0]: r[5] or "" for r in runs})
        return [
            RunRecord(
                run_id=run_id,
                experiment_id=str(experiment_id),
                name=name,
                start_ms=int(start or 0),
                end_ms=int(end) if end else None,
                tags=tags.get(run_id, {}),
                params=params.get(run_id, {}),
                metrics=metrics.get(run_id, {}),
            )
            for run_id, experiment_id, name, start, end, _ in runs
        ]

    def sweep_runs(self, name: str | None = None) -> list[RunRecord]:
        if name is None:
            return self._runs("SELECT run_uuid FROM tags WHERE key = ? AND value != ''", [SWEEP_TAG])
        return self._runs("SELECT run_uuid FROM tags WHERE key = ? AND value = ?", [SWEEP_TAG, name])

    def nested_runs(self, experiment_id: str, parent_run_id: str, kind: str) -> list[RunRecord]:
        chosen = (
            "SELECT a.run_uuid FROM tags a JOIN tags b ON b.run_uuid = a.run_uuid JOIN runs r "
            "ON r.run_uuid = a.run_uuid WHERE a.key = ? AND a.value = ? AND b.key = ? AND b.value = ? "
            "AND r.experiment_id = ?"
        )
        return self._runs(chosen, [PARENT_RUN_TAG, parent_run_id, KIND_TAG, kind, int(experiment_id)])

    def trial_rows(self, experiment_id: str, parent_run_id: str, metrics: list[str]) -> list[TrialRow]:
        """Three narrow queries: the runs nested under the parent, their status tags, and the
        last value of a few metrics (not every param, tag and metric of 1,000 runs)."""
        children = "SELECT run_uuid FROM tags WHERE key = ? AND value = ?"
        nested = [PARENT_RUN_TAG, parent_run_id]
        runs = self._rows(
            f"SELECT run_uuid, end_time FROM runs WHERE run_uuid IN ({children}) "
            "AND lifecycle_stage = 'active' AND experiment_id = ?",
            [*nested, int(experiment_id)],
        )
        tags: dict[str, dict[str, str]] = {}
        for run_id, key, value in self._rows(
            f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({children}) "
            f"AND key IN {self._in(TRIAL_TAGS)}",
            [*nested, *TRIAL_TAGS],
        ):
            tags.setdefault(run_id, {})[key] = value
        values: dict[str, dict[str, float]] = {}
        for run_id, key, value, nan in self._rows(
            f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({children}) "
            f"AND key IN {self._in(metrics)}",
            [*nested, *metrics],
        ):
            values.setdefault(run_id, {})[key] = _value(value, nan)
        rows = (
            trial_row(run_id, tags.get(run_id, {}), ended, values.get(run_id, {})) for run_id, ended in runs
        )
        return [row for row in rows if row is not None]

    def load_dict(self, run: RunRecord, artifact_file: str) -> Any:
        """From the run's artifact folder on this machine; any other artifact store through MLflow."""
        where = self._artifact_uris.get(run.run_id, "")
        return _local_artifact(
            where, artifact_file, lambda: self._tracker().load_dict(run.run_id, artifact_file)
        )


def _local_artifact(artifact_uri: str, artifact_file: str, otherwise: Callable[[], Any]) -> Any:
    """A JSON artifact under `artifact_uri` (a folder on this machine), or None if it is not
    there; `otherwise()` for an artifact store that is no folder (s3://, mlflow-artifacts:, ...)."""
    if artifact_uri.startswith("file:"):
        folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(artifact_uri).path))
    elif artifact_uri.startswith("/"):
        folder = Path(artifact_uri)
    else:
        return otherwise()
    try:
        return json.loads((folder / artifact_file).read_text())
    except (OSError, ValueError):
        return None


# --- a tracking server -----------------------------------------------------------------------------


class RestRecords:
    """MLflow's REST API (2.0/mlflow/...), every page of every search, each request asked once."""

    def __init__(self, uri: str):
        self.uri = uri
        self._base = uri.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        token, credentials = os.environ.get("MLFLOW_TRACKING_TOKEN"), client_credentials()
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif credentials is not None:
            pair = base64.b64encode(":".join(credentials).encode()).decode()
            self._headers["Authorization"] = f"Basic {pair}"
        self._tls: ssl.SSLContext | None = None
        if uri.startswith("https://"):
            self._tls = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"))
            if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
                self._tls.check_hostname, self._tls.verify_mode = False, ssl.CERT_NONE
        self._experiments: list[str] | None = None
        self._artifact_uris: dict[str, str] = {}

    def _ask(self, path: str, body: dict[str, Any] | None = None) -> bytes | None:
        """The answer to a POST (with `body`) or a GET of `path`; None for 404."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self._base}/{path}", data=data, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=self._tls) as answer:
                return bytes(answer.read())
        except urllib.error.HTTPError as err:
            if err.code == 404 and body is None:
                return None
            if err.code >= 500:
                raise unavailable(self.uri, f"it answered with a server error, HTTP {err.code}") from None
            raise AshaTuneError(
                f"the MLflow tracking server at {self.uri} refused to read its records "
                f"(HTTP {err.code} {err.reason}: {_message(err)})"
            ) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            text = "connection refused" if "refused" in str(reason).lower() else "no answer"
            raise unavailable(self.uri, text) from None

    def _pages(self, path: str, body: dict[str, Any], key: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = None
        while True:
            answer = json.loads(
                self._ask(path, {**body, "max_results": PAGE_SIZE, "page_token": token}) or b"{}"
            )
            found += answer.get(key, [])
            token = answer.get("next_page_token")
            if not token:
                return found

    def _experiment_ids(self) -> list[str]:
        if self._experiments is None:
            found = self._pages("api/2.0/mlflow/experiments/search", {}, "experiments")
            self._experiments = [str(e["experiment_id"]) for e in found]
        return self._experiments

    def _search(self, experiment_ids: list[str], where: str) -> list[dict[str, Any]]:
        if not experiment_ids:
            return []
        body = {"experiment_ids": experiment_ids, "filter": where}
        return self._pages("api/2.0/mlflow/runs/search", body, "runs")

    def _record(self, run: dict[str, Any]) -> RunRecord:
        info, data = run["info"], run.get("data", {})
        self._artifact_uris[info["run_id"]] = info.get("artifact_uri", "")
        return RunRecord(
            run_id=info["run_id"],
            experiment_id=str(info["experiment_id"]),
            name=info.get("run_name"),
            start_ms=int(info.get("start_time") or 0),
            end_ms=int(info["end_time"]) if info.get("end_time") else None,
            tags=_pairs(data.get("tags")),
            params=_pairs(data.get("params")),
            metrics={m["key"]: float(m["value"]) for m in data.get("metrics", [])},
        )

    def sweep_runs(self, name: str | None = None) -> list[RunRecord]:
        where = f"tags.`{SWEEP_TAG}` = '{name}'" if name is not None else f"tags.`{SWEEP_TAG}` != ''"
        return [self._record(r) for r in self._search(self._experiment_ids(), where)]

    def nested_runs(self, experiment_id: str, parent_run_id: str, kind: str) -> list[RunRecord]:
        where = f"tags.{PARENT_RUN_TAG} = '{parent_run_id}' and tags.`{KIND_TAG}` = '{kind}'"
        return [self._record(r) for r in self._search([experiment_id], where)]

    def trial_rows(self, experiment_id: str, parent_run_id: str, metrics: list[str]) -> list[TrialRow]:
        rows = []
        for run in self._search([experiment_id], f"tags.{PARENT_RUN_TAG} = '{parent_run_id}'"):
            info, data = run["info"], run.get("data", {})
            values = {m["key"]: float(m["value"]) for m in data.get("metrics", []) if m["key"] in metrics}
            end = int(info["end_time"]) if info.get("end_time") else None
            rows.append(trial_row(info["run_id"], _pairs(data.get("tags")), end, values))
        return [row for row in rows if row is not None]

    def load_dict(self, run: RunRecord, artifact_file: str) -> Any:
        """Through the server's artifact proxy (mlflow-artifacts:/...), else as MLflow reads it."""
        where = self._artifact_uris.get(run.run_id, "")
        if where.startswith("mlflow-artifacts:"):
            path = urllib.parse.urlparse(where).path.strip("/")
            answer = self._ask(
                f"api/2.0/mlflow-artifacts/artifacts/{urllib.parse.quote(path)}/{artifact_file}"
            )
            try:
                return json.loads(answer) if answer is not None else None
            except ValueError:
                return None
        return _local_artifact(
            where, artifact_file, lambda: Tracker(self.uri).load_dict(run.run_id, artifact_file)
        )


def _pairs(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {item["key"]: item.get("value", "") for item in items or []}


def _message(err: urllib.error.HTTPError) -> str:
    """The server's own message, where it gave one."""
    try:
        return str(json.loads(err.read()).get("message", "")).splitlines()[0]
    except Exception:
        return "no message"
