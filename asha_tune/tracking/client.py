"""The MLflow client: every trial a run, every sweep a parent run with one child per trial.

All writes go through one `MlflowClient` (no global active run), so the sweep driver can keep
many child runs open at once. The tracking package is the only one that imports mlflow, and this
module imports it lazily, so that light commands never load it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asha_tune import defaults
from asha_tune.dotted import flatten
from asha_tune.environ import scoped_environ
from asha_tune.errors import AshaTuneError, ConfigError, chain, first_line
from asha_tune.files import folder_problem, sqlite_file_problem, sqlite_write_ahead
from asha_tune.tracking.tags import (
    DEVICE_PARAM,
    MLFLOW_STATUS,
    RESUMED_ON_DEVICE_TAG,
    RUNNING,
    STATUS_TAG,
    VERSION_TAG,
)

PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: the run a run is nested under
# Runs and experiments are read a page at a time, every page: MLflow's search returns at most
# `max_results` and a token for the rest. A sweep of up to this many runs is one request; MLflow's
# server takes up to 50,000 a page.
PAGE_SIZE = 5000

# Set while MLflow is imported and called (scoped: the caller's environment is left as it was):
# no telemetry, no line printed per ended run, no progress bar when an artifact is read back.
QUIET_MLFLOW = {
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


class TrackingUnavailableError(AshaTuneError):
    """The tracking server did not answer, even after MLflow's own retries (about four minutes)."""


def unavailable(uri: str, reason: str) -> TrackingUnavailableError:
    return TrackingUnavailableError(
        f"the MLflow tracking server at {uri} did not answer ({reason}); what it recorded is kept"
    )


class _RaisedAnyway(logging.Filter):
    """MLflow logs a database error with its traceback, then raises it: asha-tune reports the
    error it raises, in one line, so the logged copy is dropped (its retry warnings are kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SQLAlchemy database error")


class StoreFullError(AshaTuneError):
    """The disk under a sqlite store is full: nothing more can be recorded until space is freed."""


def is_full(err: BaseException) -> bool:
    text = str(err)
    return "database or disk is full" in text or "No space left on device" in text


def _unreachable(err: Exception) -> str | None:
    """Why a server did not answer (refused, timed out, kept failing), or None for other errors."""
    import requests

    causes = list(chain(err))  # MLflow raises its own error while handling requests'
    if not any(isinstance(e, requests.exceptions.RequestException) for e in causes):
        return None
    text = " ".join(str(e) for e in causes)
    if "error responses" in text:
        return "it kept answering with server errors"
    if "Connection refused" in text or "NewConnectionError" in text:
        return "connection refused"
    return "no answer"


class _Guarded:
    """An MlflowClient whose calls fail with one clear line when the server is gone.

    MLflow's client already retries a server that refuses or fails requests, with backoff, for
    about four minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES, _BACKOFF_FACTOR): a restarted server
    loses nothing. Past that, the sweep stops with `TrackingUnavailableError` and can be resumed.
    """

    def __init__(self, client: Any, uri: str):
        self._client, self._uri = client, uri

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                with scoped_environ(QUIET_MLFLOW, keep_existing=True):
                    return attr(*args, **kwargs)
            except Exception as err:
                if is_full(err):  # SQLAlchemy's message: that line, then the SQL and a link
                    raise StoreFullError(
                        f"the MLflow store {self._uri} cannot be written (its file system is full): "
                        "free space there; what it recorded is kept"
                    ) from None
                reason = _unreachable(err)
                if reason is None:
                    raise
                raise unavailable(self._uri, reason) from None

        return call


def store_problem(err: BaseException) -> str:
    """Why MLflow could not use a store, in one line: a scheme it does not take, a full disk
    under a sqlite file (SQLAlchemy's message is that line, then SQL and a link), else the first
    line of MLflow's or the driver's own message."""
    text = str(err)
    if "unsupported URI" in text or "Could not find a registered" in text:
        return (
            "MLflow takes no such URI: use sqlite:///PATH, a database URL (postgresql://, mysql://) "
            "or an MLflow server, http(s)://HOST:PORT"
        )
    if "filesystem tracking backend" in text:
        return "MLflow 3 takes no folder as a store: use sqlite:///PATH/mlflow.db"
    if is_full(err):
        return "its file system is full"
    return first_line(err)


def check_store(uri: str, flag: str = "--tracking-uri") -> None:
    """The store can be written, asked before a command records anything in it (and creating
    nothing): a sqlite file's folder is probed (a file in the way, /proc, a full disk), then the
    store, where it exists, opened and read. An MLflow server is left to its own retries (they
    say when it does not answer)."""
    db = local_store(uri)
    if db is not None:
        if line := sqlite_file_problem(db, flag, uri, "mlflow.db"):
            raise ConfigError(line)
        if not db.exists():
            return  # MLflow creates it where the probe could write: nothing to open yet
    if uri.startswith(("http://", "https://")):
        return
    try:
        Tracker(uri).client.search_experiments(max_results=1)
    except ConfigError as err:
        raise ConfigError(f"{err}: check {flag}") from None
    except Exception as err:
        raise ConfigError(
            f"MLflow cannot open the store {uri} ({store_problem(err)}): check {flag}"
        ) from None


def local_store(uri: str) -> Path | None:
    """The sqlite file behind `uri`, or None for a tracking server."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def experiment_url(base: str, experiment_id: str) -> str:
    """An experiment's runs in MLflow's UI. MLflow 3 opens experiments in its GenAI view (traces)
    unless the URL asks for the model-training one."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# Where asha-tune starts an MLflow server (`ui`, `cluster up`; the deploy files likewise): MLflow 3's
# job runner off, unless the environment turns it on. asha-tune runs none of its jobs, and with it
# on a server is about 15 processes and 2.7 GB, healthy after 11 s, against 7, 1.2 GB and 8 s off.
SERVER_ENVIRON = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def server_environ(base: Mapping[str, str]) -> dict[str, str]:
    """`base` (an environment) for an MLflow server: SERVER_ENVIRON where `base` does not say."""
    return {**SERVER_ENVIRON, **base}


def serve_ui(uri: str, port: int, grace_s: float = 30.0) -> int:
    """Run MLflow's UI on `uri` until Ctrl-C or SIGTERM, then stop the server and every worker it
    started (it runs in a session of its own, so a signal to this process alone would leave them)."""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(command, start_new_session=True, env=server_environ(os.environ))

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def version_tags() -> dict[str, str]:
    """Versions that decide a result, read from package metadata (no heavy imports)."""
    from importlib.metadata import PackageNotFoundError, version

    from asha_tune import __version__

    tags = {VERSION_TAG: __version__}
    for package in ("torch", "torchvision", "ray", "optuna", "mlflow"):
        try:
            tags[f"{package}.version"] = version(package)
        except PackageNotFoundError:
            pass
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


class Tracker:
    """A handle on one MLflow tracking store."""

    page_size = PAGE_SIZE  # runs and experiments read per request (every page is read)

    def __init__(self, uri: str | None = None):
        with scoped_environ(QUIET_MLFLOW, keep_existing=True):
            from mlflow.tracking import MlflowClient

            logging.getLogger("mlflow").setLevel(logging.WARNING)
            logging.getLogger("alembic").setLevel(logging.WARNING)
            db_log = logging.getLogger("mlflow.store.db.utils")
            if not any(isinstance(f, _RaisedAnyway) for f in db_log.filters):
                db_log.addFilter(_RaisedAnyway())

            self.uri = uri or defaults.tracking_uri()
            db = local_store(self.uri)
            if db is not None:
                try:
                    db.parent.mkdir(parents=True, exist_ok=True)
                except OSError:
                    problem = folder_problem(db.parent)
                    why = problem.text if problem else "its folder cannot be created"
                    raise ConfigError(f"MLflow cannot open the store {self.uri} ({why})") from None
            try:
                client = MlflowClient(tracking_uri=self.uri)
                if db is not None:  # MLflow-private: the store behind a sqlite URI
                    sqlite_write_ahead(client._tracking_client.store.engine)
                self.client = _Guarded(client, self.uri)
            except Exception as err:
                raise ConfigError(f"MLflow cannot open the store {self.uri} ({store_problem(err)})") from None

    def experiment(self, name: str) -> str:
        """The experiment's id, created on first use (artifacts beside a sqlite store)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        db = local_store(self.uri)
        location = (db.parent / "mlartifacts" / name).as_uri() if db else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # a sweep starting at the same moment created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def start_run(
        self,
        experiment_id: str,
        name: str,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        tags = dict(tags or {})
        if parent_run_id:
            tags[PARENT_RUN_TAG] = parent_run_id
        tags.setdefault(STATUS_TAG, RUNNING)
        run = self.client.create_run(experiment_id, run_name=name, tags=tags)
        if params:
            try:
                self.log_params(run.info.run_id, params)
            except BaseException:  # a run without its params would be a half-made record
                with contextlib.suppress(Exception):
                    self.delete_run(run.info.run_id)
                raise
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [
            Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
            for k, v in sorted(flat.items())
        ]
        for begin in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[begin : begin + 100])

    def log_device(self, run_id: str, device: str) -> None:
        """Record the device a trial computed on (params cannot change: a later one is a tag)."""
        first = self.client.get_run(run_id).data.params.get(DEVICE_PARAM)
        if first is None:
            self.log_params(run_id, {DEVICE_PARAM: device})
        elif first != device:
            self.set_tags(run_id, {RESUMED_ON_DEVICE_TAG: device})

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float))]
        self.client.log_batch(run_id, metrics=items)

    def search_runs(self, experiment_ids: list[str], filter_string: str) -> list[Any]:
        """Every run of these experiments that matches `filter_string`, page after page."""
        runs: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs(
                experiment_ids, filter_string=filter_string, max_results=self.page_size, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def find_runs(self, experiment_id: str, filter_string: str) -> list[Any]:
        return self.search_runs([experiment_id], filter_string)

    def child_runs(
        self, experiment_id: str, parent_run_id: str, tags: dict[str, str] | None = None
    ) -> list[Any]:
        """The runs nested under `parent_run_id`; with `tags`, only those carrying these values."""
        clauses = [f"tags.{PARENT_RUN_TAG} = '{parent_run_id}'"]
        clauses += [f"tags.`{key}` = '{value}'" for key, value in (tags or {}).items()]
        return self.find_runs(experiment_id, " and ".join(clauses))

    def experiment_of(self, run_id: str) -> str:
        """The id of the experiment a run belongs to."""
        return str(self.client.get_run(run_id).info.experiment_id)

    def write(
        self,
        run_id: str,
        *,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        metrics: list[tuple[str, float, int, int]] | None = None,
        end: str | None = None,
    ) -> None:
        """Params, tags and metrics ((key, value, step, timestamp in ms)) of one run in as few
        `log_batch` calls as MLflow takes (1,000 entries, of which 100 params and 100 tags, each):
        one for what a trial reports between two writes. `end`: then end the run with that
        status (`end`), in the same call (one trip to a sweep's records process)."""
        from mlflow.entities import Metric, Param, RunTag

        flat = flatten(params or {})
        param_items = [
            Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v))
            for k, v in sorted(flat.items())
        ]
        tag_items = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        metric_items = [Metric(k, float(v), stamp, step) for k, v, step, stamp in metrics or []]
        while param_items or tag_items or metric_items:
            p, param_items = param_items[:100], param_items[100:]
            t, tag_items = tag_items[:100], tag_items[100:]
            room = 1000 - len(p) - len(t)
            m, metric_items = metric_items[:room], metric_items[room:]
            self.client.log_batch(run_id, metrics=m, params=p, tags=t)
        if end is not None:
            self.end(run_id, end)

    def end(self, run_id: str, status: str) -> None:
        """End a run whose asha-tune status tag is already written (`write`)."""
        self.client.set_terminated(run_id, status=MLFLOW_STATUS[status])

    def logged_steps(self, run_id: str, metric: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, metric)}

    def params(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.params)

    def metric_history(self, run_id: str, metric: str) -> dict[int, float]:
        """{step: value} of one metric (the latest value logged at a step wins)."""
        history = sorted(self.client.get_metric_history(run_id, metric), key=lambda m: (m.step, m.timestamp))
        return {int(m.step): float(m.value) for m in history}

    def tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def delete_tag(self, run_id: str, key: str) -> None:
        """Remove a tag from a run; a tag the run does not have is no error."""
        if key in self.tags(run_id):
            self.client.delete_tag(run_id, key)

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, obj, artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def finish(self, run_id: str, status: str, tags: dict[str, Any] | None = None) -> None:
        """End a run with asha-tune's status (completed, pruned, failed, interrupted)."""
        self.set_tags(run_id, {STATUS_TAG: status, **(tags or {})})
        self.client.set_terminated(run_id, status=MLFLOW_STATUS[status])

    def delete_run(self, run_id: str) -> None:
        """Remove a run a launch created before it was refused (MLflow keeps it as deleted,
        out of every search, until `mlflow gc`)."""
        self.client.delete_run(run_id)

    def rename(self, run_id: str, name: str) -> None:
        self.client.update_run(run_id, name=name)

    def status(self, run_id: str) -> str:
        """asha-tune's status of a run (completed, pruned, failed, running, interrupted)."""
        return self.tags(run_id).get(STATUS_TAG, "unknown")

    def reopen(self, run_id: str) -> None:
        """Mark a run running again (a resumed trial or sweep keeps its run)."""
        self.client.update_run(run_id, status="RUNNING")
        self.set_tags(run_id, {STATUS_TAG: RUNNING})

    def log_artifacts(self, run_id: str, folder: Path) -> None:
        self.client.log_artifacts(run_id, str(folder))

    def load_text(self, run_id: str, artifact_file: str) -> str | None:
        """A text artifact of a run, or None if the run has none."""
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            try:
                return Path(self.client.download_artifacts(run_id, artifact_file, folder)).read_text()
            except Exception:  # absent: MLflow raises OSError or MlflowException by store
                return None

    def load_dict(self, run_id: str, artifact_file: str) -> Any:
        """A JSON artifact of a run (a sweep's space.json), or None if the run has none."""
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            try:
                path = self.client.download_artifacts(run_id, artifact_file, folder)
            except Exception:  # absent: MLflow raises OSError or MlflowException by store
                return None
            return json.loads(Path(path).read_text())

    def experiment_ids(self) -> list[str]:
        """Every experiment of the store, page after page."""
        ids: list[str] = []
        token = None
        while True:
            page = self.client.search_experiments(max_results=self.page_size, page_token=token)
            ids.extend(e.experiment_id for e in page)
            token = page.token
            if not token:
                return ids
