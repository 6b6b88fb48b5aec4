"""A sweep's Ray session: join a cluster or start a local Ray on loopback, with token auth, and
wait (bounded) for a node that can hold a trial.

Everything Ray reads from the environment is set only for the span of the session
(`ray_session`), so the caller's environment is the same afterwards.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asha_tune.environ import scoped_environ
from asha_tune.errors import AshaTuneError, ConfigError
from asha_tune.sweep import ray_compat
from asha_tune.sweep.settings import SweepSettings

DEFAULT_TOKEN_FILE = Path.home() / ".ray" / "auth_token"  # Ray's own default
# Tune's own lines that asha-tune replaces: tracebacks of failed trials (one line per trial is
# printed instead; the traceback stays in the trial's error file) and its `Tuner.restore` hint.
_TUNE_NOISE = (
    "Trial task failed",
    "Trials did not complete",
    "Stop signal received",
    "Experiment has been interrupted",
    "Training has been interrupted",
)


@dataclass
class RayInfo:
    dashboard: str
    logs: Path | None  # a local Ray's log folder (worker output, tracebacks)
    token: str | None  # where the dashboard's token is, when token auth is on


def say(message: str) -> None:
    print(message, flush=True)


class _QuietTune(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TUNE_NOISE)


def cluster_address(settings: SweepSettings) -> str | None:
    """The cluster a sweep joins: --address, else $RAY_ADDRESS; None starts a local Ray."""
    return settings.address or os.environ.get("RAY_ADDRESS") or None


def is_local(settings: SweepSettings) -> bool:
    return cluster_address(settings) is None


# --- the token ---------------------------------------------------------------------------------


def ray_token_file() -> Path:
    """Where Ray's clients and nodes look for the token: $RAY_AUTH_TOKEN_PATH or Ray's default."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or DEFAULT_TOKEN_FILE)


def ensure_ray_token() -> Path:
    """The token file, made once per user if missing (256 bits, as `ray get-auth-token --generate`),
    readable by its owner only. Local sweeps and `asha-tune cluster` share it, so `ray status` and a
    browser that already holds it (the dashboard keeps it in a cookie) work with every one of them."""
    path = ray_token_file()
    if not path.is_file() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


def ray_token() -> str:
    return os.environ.get("RAY_AUTH_TOKEN") or ensure_ray_token().read_text().strip()


def _token_source() -> str:
    return "$RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else str(ray_token_file())


def auth_environ(address: str | None) -> dict[str, str]:
    """RAY_AUTH_MODE for this session: token auth, set explicitly (so Ray does not warn at every
    launch), unless the user turned it off (RAY_AUTH_MODE=disabled). A local Ray makes the token
    if there is none; a client joining a cluster by address sends the one it has."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode and mode.lower() != "token":
        return {}  # turned off by the user
    if address is None:
        if not os.environ.get("RAY_AUTH_TOKEN"):
            ensure_ray_token()
        return {"RAY_AUTH_MODE": "token"}
    if mode or os.environ.get("RAY_AUTH_TOKEN") or ray_token_file().is_file():
        return {"RAY_AUTH_MODE": "token"}
    return {}


def session_environ(address: str | None) -> dict[str, str]:
    """What Ray reads from the environment during a sweep's session (the user's settings win)."""
    env = {k: v for k, v in ray_compat.TUNE_ENV.items() if k not in os.environ}
    if address is None:  # a local instance is a single node: keep it on loopback
        if "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ:
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    elif address.split(":")[0] in ("127.0.0.1", "localhost"):
        # A cluster on this machine's loopback (asha-tune cluster): else Ray swaps 127.0.0.1 for
        # the machine's network address, where nothing listens.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return {**env, **auth_environ(address)}


# --- the session -------------------------------------------------------------------------------


_HELD: list[RayInfo] = []  # a session `held_ray_session` keeps open for several sweeps


@contextmanager
def held_ray_session(settings: SweepSettings) -> Iterator[RayInfo]:
    """One Ray session for several sweeps in a row (the replicates of a search): each sweep's
    `ray_session` inside it uses this one instead of starting (and stopping) its own."""
    with ray_session(settings) as info:
        _HELD.append(info)
        try:
            yield info
        finally:
            _HELD.pop()


@contextmanager
def ray_session(settings: SweepSettings) -> Iterator[RayInfo]:
    """Join the cluster at the sweep's address, or start a local Ray on loopback; shut down and
    put the environment back after (inside `held_ray_session`: its session, left running)."""
    if _HELD:
        yield _HELD[-1]
        return
    address = cluster_address(settings)
    with scoped_environ(session_environ(address)):
        info = _start(settings, address)
        import ray

        try:
            yield info
        finally:
            ray.shutdown()


def _start(settings: SweepSettings, address: str | None) -> RayInfo:
    token = None
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        ray_compat.reload_token_auth()  # Ray reads the mode at import: it may have been imported
        token = _token_source()
    import ray

    context: Any
    try:
        if address:
            context = ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            # "local": always a new instance, never the cluster a past `ray start` left in
            # /tmp/ray/ray_current_cluster (which a plain ray.init() would join).
            context = ray.init(
                address="local",
                num_cpus=settings.num_cpus,  # type: ignore[arg-type]  # Ray takes fractional ones
                num_gpus=settings.num_gpus,  # type: ignore[arg-type]
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
    except Exception as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise AshaTuneError(f"cannot start or join {where}: {str(err).splitlines()[0]}") from None
    for name in ray_compat.TUNE_LOGGERS:
        logging.getLogger(name).addFilter(_QuietTune())
    if address:
        say(f"joined the Ray cluster at {address}")
    url = context.dashboard_url or ""
    url = f"http://{url}" if url and not url.startswith("http") else url
    session = (context.address_info or {}).get("session_dir")
    logs = Path(session) / "logs" if session and not address else None
    return RayInfo(url, logs, token)


def _fits(node: dict[str, Any], need: dict[str, float]) -> bool:
    return node.get("Alive", False) and all(node["Resources"].get(k, 0) >= v for k, v in need.items())


def wait_for_a_fitting_node(settings: SweepSettings) -> None:
    """On a cluster, a trial no node can hold would wait forever: check, wait a bounded time
    (`resource_wait_s`, for autoscaling clusters, which are asked for such a node), then stop."""
    import ray
    from ray.autoscaler.sdk import request_resources

    r = settings.space.resources
    need = {k: v for k, v in (("CPU", r.cpu), ("GPU", r.gpu)) if v}
    deadline = time.monotonic() + settings.resource_wait_s
    asked = False
    try:
        while not any(_fits(node, need) for node in ray.nodes()):
            if time.monotonic() >= deadline:
                largest = [
                    {k: v for k, v in n["Resources"].items() if k in ("CPU", "GPU")}
                    for n in ray.nodes()
                    if n.get("Alive")
                ]
                raise ConfigError(
                    f"no node of the Ray cluster can run a trial of space {settings.space.name} "
                    f"(each needs {need}; nodes: {largest}), after waiting {settings.resource_wait_s:g} s: "
                    f"change resources with --set resources.gpu=... / resources.cpu=..., or let an "
                    f"autoscaling cluster add a node with --resource-wait SECONDS"
                )
            if not asked:
                say(
                    f"no node of the cluster fits a trial ({need}) yet: asking the autoscaler and "
                    f"waiting up to {settings.resource_wait_s:g} s"
                )
                request_resources(bundles=[need])
                asked = True
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    finally:
        if asked:
            request_resources(bundles=[])  # the request is persistent until replaced
