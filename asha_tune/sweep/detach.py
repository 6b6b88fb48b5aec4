"""`asha-tune launch --detach` and `asha-tune logs`: a sweep's driver submitted to a cluster as a
Ray job through Ray's own JobSubmissionClient, so the machine that launched it may close.

The head's dashboard is found from the cluster's address (its GCS records it, as `ray job
submit` finds it); the Ray token goes with every request. The space file travels with the job
(its runtime_env working_dir: a folder holding only that file), so the driver needs no shared
filesystem to read it. One driver per sweep: a submission while a job of the sweep is pending
or running is refused; after one ended (its driver lost), the same command submits the next,
`asha-tune-NAME-K+1`, which continues the sweep (`--if-exists resume`).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asha_tune.environ import scoped_environ
from asha_tune.errors import AshaTuneError, ConfigError, first_line
from asha_tune.sweep import ray_compat
from asha_tune.sweep.jobs import (
    DETACHED_ENV,
    JOB_METADATA_KEY,
    RUNNING_JOB,
    DashboardError,
    Detached,
    Flag,
    client_token,
    dashboard_get,
    detach_problems,
    entrypoint,
    next_submission,
    refused_token,
    resubmit_command,
    submission_number,
    token_source,
    words_text,
)
from asha_tune.sweep.session import auth_environ, core_logs_to, resolve_address

CONNECT_S = 5.0  # how long the cluster's GCS may take to accept a connection
# What makes Ray's job client talk to another cluster than the one asked for.
_ADDRESS_ENV: dict[str, str | None] = {"RAY_ADDRESS": None, "RAY_API_SERVER_ADDRESS": None}


@dataclass(frozen=True)
class DetachRequest:
    """A `launch --detach`: the sweep, its space file (as given, and found), its other flags."""

    name: str | None
    space: str  # --space as given
    space_file: Path  # the file it names here
    flags: list[Flag]
    address: str | None


@dataclass(frozen=True)
class Submitted:
    submission_id: str
    dashboard: str
    address: str
    entrypoint: list[str]
    command: str  # what submits it again


def _reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--address {address}: give the cluster's head as HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_S).close()
    except OSError as err:
        raise AshaTuneError(
            f"cannot reach the Ray cluster at {address} ({err.strerror or err}): is it up? "
            "(asha-tune cluster status tells)"
        ) from None


def find_dashboard(address: str) -> str:
    """The head's dashboard URL, from its GCS; checked to answer to this machine's token."""
    _reachable(address)
    log = Path(tempfile.gettempdir()) / "asha-tune-logs" / "detach.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with scoped_environ(auth_environ(address)), core_logs_to(log):  # Ray's C++ lines: not the terminal
        ray_compat.reload_token_auth()
        found = ray_compat.dashboard_address(address)
    if found is None:
        raise AshaTuneError(
            f"the Ray cluster at {address} did not say where its dashboard is: its GCS did not answer, "
            f"or refused this machine's Ray token (from {token_source()}), or the head runs without a "
            "dashboard; --detach submits the driver through it"
        )
    url = found if found.startswith("http") else f"http://{found}"
    dashboard_get(url, "/api/version")  # unreachable, or a token refused: one line
    return url


@contextmanager
def job_client(dashboard: str) -> Iterator[Any]:
    """Ray's JobSubmissionClient on `dashboard`, with the token; its failures one line each."""
    from ray.job_submission import JobSubmissionClient

    token = client_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        with scoped_environ(_ADDRESS_ENV):
            client = JobSubmissionClient(dashboard, headers=headers)
        yield client
    except AshaTuneError:
        raise
    except Exception as err:
        text = first_line(err)
        if "401" in text or "403" in text:
            raise DashboardError(refused_token(dashboard)) from None
        raise AshaTuneError(f"the Ray dashboard at {dashboard}: {text}") from None


def sweep_jobs(client: Any, name: str) -> list[Any]:
    """The jobs submitted for sweep `name` (`asha-tune-NAME-K`), oldest first."""
    found = [
        j
        for j in client.list_jobs()
        if j.submission_id and submission_number(name, j.submission_id) is not None
    ]
    return sorted(found, key=lambda j: submission_number(name, j.submission_id) or 0)


def _status(job: Any) -> str:
    return str(getattr(job.status, "value", job.status))


def submit(request: DetachRequest) -> Submitted:
    """Submit the sweep's driver as a Ray job; refused while one of the sweep's jobs runs."""
    problems = detach_problems(request.name, request.flags, request.address)
    if problems:
        raise ConfigError(problems)
    assert request.name is not None
    assert request.address is not None
    name = request.name
    address = resolve_address(request.address) or request.address
    dashboard = find_dashboard(address)
    command = words_text(resubmit_command(request.space, name, request.flags, request.address))
    words = entrypoint(request.space_file.name, name, request.flags)
    with job_client(dashboard) as client:
        jobs = sweep_jobs(client, name)
        running = [j for j in jobs if _status(j) in RUNNING_JOB]
        if running:
            job = running[-1]
            raise AshaTuneError(
                f"sweep {name} already has a driver on the cluster: Ray job {job.submission_id} is "
                f"{_status(job)}; one driver per sweep (asha-tune logs {name} follows it, asha-tune stop "
                f"{name} stops it)"
            )
        submission_id = next_submission(name, [j.submission_id for j in jobs])
        detached = Detached(submission_id, dashboard, command)
        folder = Path(tempfile.mkdtemp(prefix="asha-tune-detach-"))
        try:
            shutil.copyfile(request.space_file, folder / request.space_file.name)
            client.submit_job(
                entrypoint=words_text(words),
                submission_id=submission_id,
                runtime_env={"working_dir": str(folder), "env_vars": {DETACHED_ENV: detached.to_env()}},
                metadata={JOB_METADATA_KEY: name},
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return Submitted(submission_id, dashboard, address, words, command)


def dashboard_of(address: str) -> str:
    """The dashboard of the cluster at `address`: HOST:PORT (its GCS, which says where its
    dashboard is) or the dashboard's own http(s):// URL, as `ray job` takes it."""
    if address.startswith(("http://", "https://")):
        url = address.rstrip("/")
        dashboard_get(url, "/api/version")  # unreachable, or a token refused: one line
        return url
    return find_dashboard(resolve_address(address) or address)


def job_logs(dashboard: str, name: str, follow: bool = False, recorded: str | None = None) -> Iterator[str]:
    """The output of sweep `name`'s detached driver, from Ray's job logs: of its latest job on the
    cluster (one resubmitted since the records were written is newer; `recorded`, the job the
    records name, if any), all of it so far, or (`follow`) as it comes until the job ends."""
    with job_client(dashboard) as client:
        jobs = sweep_jobs(client, name)
        if not jobs:
            was = f" (its driver was {recorded})" if recorded else ""
            raise AshaTuneError(
                f"the Ray cluster at {dashboard} knows no job of sweep {name}{was}: "
                "a new head keeps no earlier job's logs"
            )
        job = jobs[-1].submission_id
        if not follow:
            yield client.get_job_logs(job)
            return
        stream = client.tail_job_logs(job).__aiter__()
        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    yield loop.run_until_complete(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.close()
