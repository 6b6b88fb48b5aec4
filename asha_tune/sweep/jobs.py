"""A detached sweep (`asha-tune launch --detach`): its driver runs on the cluster as a Ray job.

What needs no Ray, so that `asha-tune status` (which imports none) can use it too: the job's
submission id, the entrypoint it runs, the refusals of a command that cannot be detached, the
record a detached driver keeps of itself, and its job's state read from the head's dashboard
(Ray's job REST API, what `ray job status` reads). The submission itself is sweep/detach.py's.

The entrypoint is the launch command itself with `--if-exists resume`, as the RayJob's
(deploy/kuberay/rayjob.yaml): a job submitted again after its driver was lost continues the
sweep, and one submitted after it finished reports it.
"""

from __future__ import annotations

import json
import os
import shlex
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from asha_tune.errors import ConfigError

# The detached driver's record of itself, handed to it by the submission (runtime_env env_vars).
DETACHED_ENV = "ASHA_TUNE_DETACHED"
JOB_METADATA_KEY = "asha_tune_sweep"  # the job's metadata: which sweep it drives
RUNNING_JOB = ("PENDING", "RUNNING")  # Ray's JobStatus values of a job that has not ended
# Flags whose value the entrypoint sets itself (--space: the shipped file; --name) or leaves out:
# --address (the driver joins through $RAY_ADDRESS, which Ray sets for a job's driver: the laptop's
# way to the head may not be the head's), --detach and --if-exists.
_NOT_PASSED = ("--space", "--name", "--address", "--detach", "--if-exists", "--dry-run", "--restart")
# Flags naming a path the driver reads on the cluster, not on this machine.
PATH_FLAGS = ("--results-dir", "--data-root", "--cache-dir")
STORE_FLAGS = ("--tracking-uri", "--study-url")
NEEDED_FLAGS = ("--results-dir", "--tracking-uri", "--study-url")


def ray_token_file() -> Path:
    """Where Ray's clients and nodes look for the token: $RAY_AUTH_TOKEN_PATH or Ray's default,
    ~/.ray/auth_token, with HOME read now (not when this module was imported)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def client_token() -> str | None:
    """The Ray token this machine sends to a cluster's dashboard: $RAY_AUTH_TOKEN, else the token
    file; None if there is neither (never made here: a new one would be refused anyway)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    try:
        return ray_token_file().read_text().strip() or None
    except OSError:
        return None


def token_source() -> str:
    return "$RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else str(ray_token_file())


# --- the submission ------------------------------------------------------------------------------


def submission_prefix(name: str) -> str:
    return f"asha-tune-{name}-"


def submission_id(name: str, number: int) -> str:
    """`asha-tune-NAME-K`: the K-th driver submitted for sweep NAME."""
    return f"{submission_prefix(name)}{number}"


def submission_number(name: str, found: str) -> int | None:
    """K of a submission id of sweep NAME (`asha-tune-NAME-K`), None for another sweep's."""
    prefix = submission_prefix(name)
    rest = found[len(prefix) :] if found.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else None


def next_submission(name: str, ids: Sequence[str]) -> str:
    numbers = [n for n in (submission_number(name, i) for i in ids) if n is not None]
    return submission_id(name, max(numbers, default=0) + 1)


@dataclass(frozen=True)
class Flag:
    """One flag of the launch command as given: `--set` and `--only` may repeat (values)."""

    flag: str
    values: tuple[str, ...] = ()  # empty: a switch


def detach_problems(name: str | None, flags: Sequence[Flag], address: str | None) -> list[str]:
    """Why this launch cannot be detached (each one line), or nothing."""
    given = {f.flag: f.values for f in flags}
    problems = []
    if not address:
        problems.append(
            "--detach needs a Ray cluster: give its address, --address HOST:PORT (asha-tune cluster up "
            "prints it); a local Ray would end with this process"
        )
    if name is None:
        problems.append("--detach needs --name: the same command resubmits the sweep's driver if it is lost")
    if "--restart" in given:
        problems.append(
            "--detach and --restart: a resubmitted driver would start the sweep over; restart it "
            "without --detach, or choose another --name"
        )
    return problems + _place_problems(given)


def _place_problems(given: Mapping[str, Sequence[str]]) -> list[str]:
    """The flags that say where the driver records and reads, as the cluster's driver sees them."""
    problems = [
        f"--detach needs {flag}: the driver runs on the cluster, in a temporary folder of its job "
        "(asha-tune cluster up prints the flags)"
        for flag in NEEDED_FLAGS
        if flag not in given
    ]
    problems += [
        f"{flag} {value}: --detach needs an absolute path, as the cluster's nodes see it"
        for flag in PATH_FLAGS
        for value in given.get(flag, ())
        if not Path(value).expanduser().is_absolute()
    ]
    problems += [
        f"{flag} {value}: a relative path; --detach needs the store as the cluster's driver reaches "
        "it (a server URL, or an absolute path)"
        for flag in STORE_FLAGS
        for value in given.get(flag, ())
        if _relative_store(value)
    ]
    return problems


def _relative_store(uri: str) -> bool:
    if uri.startswith("sqlite:///"):
        return not uri.removeprefix("sqlite:///").startswith("/")
    if uri.startswith("file:"):
        return not uri.removeprefix("file:").lstrip("/") or not uri.removeprefix("file:").startswith("/")
    return "://" not in uri and not Path(uri).expanduser().is_absolute()


def _words(flags: Sequence[Flag]) -> list[str]:
    words: list[str] = []
    for f in flags:
        if f.flag in _NOT_PASSED:
            continue
        if not f.values:
            words.append(f.flag)
        for value in f.values:
            words += [f.flag, value]
    return words


def entrypoint(space_file: str, name: str, flags: Sequence[Flag]) -> list[str]:
    """The driver's command: the launch command as given, its space the shipped file, with
    `--if-exists resume` and without --detach and --address."""
    return [
        "asha-tune",
        "launch",
        "--space",
        space_file,
        "--name",
        name,
        *_words(flags),
        "--if-exists",
        "resume",
    ]


def resubmit_command(space: str, name: str, flags: Sequence[Flag], address: str) -> list[str]:
    """The command that submits the driver again: `launch --detach` as given (--space as given)."""
    return [
        "asha-tune",
        "launch",
        "--space",
        space,
        "--name",
        name,
        *_words(flags),
        "--address",
        address,
        "--detach",
    ]


@dataclass(frozen=True)
class Detached:
    """What a detached driver records of itself (in DRIVER_TAG): its job and how to submit it again."""

    submission_id: str
    dashboard: str  # the head's dashboard, as the submitting machine reached it
    command: str  # the `launch --detach` command that submits it again

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Detached | None:
        if not isinstance(record, Mapping):
            return None
        try:
            return cls(str(record["submission_id"]), str(record["dashboard"]), str(record["command"]))
        except KeyError:
            return None


def detached_here() -> Detached | None:
    """This process's record, when it is a detached driver (its job's environment says so)."""
    try:
        return Detached.from_record(json.loads(os.environ.get(DETACHED_ENV) or "null"))
    except ValueError:
        return None


# --- the job, from the head's dashboard ----------------------------------------------------------


class DashboardError(ConfigError):
    """A cluster's dashboard that cannot be reached, or that refuses this machine's token."""

    exit_code = 1


def dashboard_get(dashboard: str, path: str, timeout_s: float = 10) -> Any:
    """GET Ray's REST API on the head's dashboard with this machine's Ray token."""
    token = client_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(dashboard.rstrip("/") + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise DashboardError(refused_token(dashboard)) from None
        if err.code == 404:
            return None
        raise DashboardError(f"the Ray dashboard at {dashboard} answered HTTP {err.code}") from None
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise DashboardError(f"cannot reach the Ray dashboard at {dashboard}: {reason}") from None


def refused_token(where: str) -> str:
    source = token_source()
    if client_token() is None:
        return f"the Ray cluster at {where} wants a Ray token, and this machine has none (in {source})"
    return f"the Ray cluster at {where} refused this machine's Ray token (from {source}): use the cluster's"


def latest_job(detached: Detached, timeout_s: float = 10) -> tuple[str, str | None]:
    """The sweep's latest job on the recorded cluster (one resubmitted since the records were
    written is newer than theirs) and its state (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED;
    None where the cluster does not know it: a new head). Raises DashboardError where the
    dashboard cannot tell."""
    name = detached.submission_id.rpartition("-")[0].removeprefix("asha-tune-")
    found = dashboard_get(detached.dashboard, "/api/jobs/", timeout_s) or []
    states = {
        str(job["submission_id"]): str(job.get("status"))
        for job in found
        if isinstance(job, dict) and submission_number(name, str(job.get("submission_id") or "")) is not None
    }
    if not states:
        return detached.submission_id, None
    latest = max(states, key=lambda i: submission_number(name, i) or 0)
    return latest, states[latest]


def words_text(words: Sequence[str]) -> str:
    """A command as a shell line; a URL with `?` quoted (as `cluster up` prints it)."""
    return shlex.join(words)
