"""A sweep's Ray session: join a cluster or start a local Ray on loopback, with token auth, wait
(bounded) for a node that can hold a trial, and watch the cluster's head while the sweep runs.

Everything Ray reads from the environment is set only for the span of the session
(`ray_session`), so the caller's environment is the same afterwards. Ray's own log lines (warnings,
tracebacks of its background threads) go to a file whose path the sweep prints, not to the
terminal: asha-tune says what went wrong in one line.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from asha_tune import defaults
from asha_tune.display import count
from asha_tune.environ import scoped_environ
from asha_tune.errors import AshaTuneError, ConfigError, first_line
from asha_tune.sweep import ray_compat
from asha_tune.sweep.jobs import detached_here, ray_token_file, token_source
from asha_tune.sweep.settings import SweepSettings

# Tune's own lines that asha-tune replaces: tracebacks of failed trials (one line per trial is
# printed instead; the traceback stays in the trial's error file) and its `Tuner.restore` hint.
_TUNE_NOISE = (
    "Trial task failed",
    "Trials did not complete",
    "Stop signal received",
    "Experiment has been interrupted",
    "Training has been interrupted",
)
# Waiting for a node that can hold a trial.
POLL_S = 2.0
PROGRESS_EVERY_S = 30.0
REQUEST_AGAIN_S = 20.0
# The head watch: how long the head's GCS may not answer before the sweep stops (see head_lost_s).
HEAD_LOST_ENV, HEAD_LOST_S = defaults.HEAD_LOST_ENV, defaults.HEAD_LOST_S


@dataclass
class RayInfo:
    dashboard: str
    logs: Path | None  # a local Ray's log folder (worker output, tracebacks)
    token: str | None  # where the dashboard's token is, when token auth is on
    gcs_address: str = ""  # the head's GCS, host:port (what --address auto resolved to)
    driver_log: Path | None = None  # Ray's own log lines in the driver (warnings, tracebacks)
    stderr_fd: int | None = None  # the terminal's stderr while fd 2 goes to the driver log
    head_lost_s: float = HEAD_LOST_S  # the head watch's limit (from the user's environment)


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


def resolve_address(address: str | None) -> str | None:
    """`auto` as Ray resolves it ($RAY_ADDRESS, else the cluster `ray start --head` started on this
    machine), but never Ray's legacy fallback to any Ray process found on the machine, which may
    be another user's."""
    if address != "auto":
        return address
    from_env = os.environ.get("RAY_ADDRESS")
    if from_env and from_env != "auto":
        return from_env
    found = ray_compat.bootstrap_address()
    if not found:
        raise ConfigError(
            "--address auto: no Ray cluster was started on this machine by `ray start --head` "
            "(Ray records it in $RAY_TMPDIR/ray/ray_current_cluster, default /tmp/ray/); pass the "
            "head's address, --address HOST:PORT"
        )
    return found


# --- the token ---------------------------------------------------------------------------------


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


def head_lost_s() -> float:
    """How long the head's GCS may not answer before the sweep stops: $ASHA_TUNE_HEAD_LOST_S, else
    10 s less than Ray's own reconnect timeout where the user set it (a cluster whose GCS restarts
    by itself, e.g. KubeRay's GCS fault tolerance), else HEAD_LOST_S (defaults.py)."""
    if os.environ.get(HEAD_LOST_ENV):
        return float(os.environ[HEAD_LOST_ENV])
    if os.environ.get(ray_compat.GCS_RECONNECT_ENV):
        return max(5.0, float(os.environ[ray_compat.GCS_RECONNECT_ENV]) - 10)
    return HEAD_LOST_S


def session_environ(address: str | None) -> dict[str, str]:
    """What Ray reads from the environment during a sweep's session (the user's settings win),
    and Ray's reconnect timeout above the head watch's limit, so that the watch, not Ray's fatal
    abort, ends a sweep whose head is gone."""
    env = {k: v for k, v in ray_compat.TUNE_ENV.items() if k not in os.environ}
    if address is None:  # a local instance is a single node: keep it on loopback
        if "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ:
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    elif address.split(":")[0] in ("127.0.0.1", "localhost"):
        # A cluster on this machine's loopback (asha-tune cluster): else Ray swaps 127.0.0.1 for
        # the machine's network address, where nothing listens.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if address is not None:
        ray_s = float(os.environ.get(ray_compat.GCS_RECONNECT_ENV) or ray_compat.GCS_RECONNECT_DEFAULT_S)
        env[ray_compat.GCS_RECONNECT_ENV] = f"{max(ray_s, head_lost_s() + 60):g}"
    return {**env, **auth_environ(address)}


# --- the session -------------------------------------------------------------------------------


class _FileOnly(logging.FileHandler):
    """Ray's log lines, in a file; a full disk must not turn them into tracebacks on stderr."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def driver_log_path(settings: SweepSettings) -> Path:
    """Ray's log lines of this driver: in the temp folder, not --results-dir (which may be full)."""
    folder = Path(tempfile.gettempdir()) / "asha-tune-logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{settings.name}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}.log"


@contextmanager
def ray_logs_to(path: Path) -> Iterator[None]:
    """Ray's logger ('ray', which Tune's and Train's loggers propagate to) writes to `path`
    instead of the terminal while the sweep runs."""
    logger = logging.getLogger("ray")
    handler = _FileOnly(path, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    before = list(logger.handlers)
    for h in before:
        logger.removeHandler(h)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        for h in before:
            logger.addHandler(h)


@contextmanager
def core_logs_to(path: Path) -> Iterator[int]:
    """File descriptor 2 goes to `path` while the session runs: Ray's C++ core writes its log
    lines there (a driver's go to stderr: retries, a lost GCS), and so do the processes a local
    Ray starts. Python's sys.stderr, where asha-tune's own one-line errors go, stays the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(target, 2)
    os.close(target)
    previous = sys.stderr
    try:
        on_fd2 = previous.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a stand-in (pytest's capture): left as it is
        on_fd2 = False
    rebound = None
    if on_fd2:
        rebound = os.fdopen(os.dup(saved), "w", buffering=1, encoding=previous.encoding, errors="replace")
        sys.stderr = rebound
    try:
        yield saved
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if rebound is not None:
            sys.stderr = previous
            rebound.close()


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
    put the environment back after (inside `held_ray_session`: its session, left running). Ray's
    own output (Python logger and C++ core) goes to the driver's log file, never the terminal."""
    if _HELD:
        yield _HELD[-1]
        return
    address = resolve_address(cluster_address(settings))
    log = driver_log_path(settings)
    lost_s = head_lost_s()  # before the session raises Ray's own reconnect timeout above it
    with scoped_environ(session_environ(address)), core_logs_to(log) as terminal:
        info = _start(settings, address, log)
        info.stderr_fd, info.head_lost_s = terminal, lost_s
        import ray

        try:
            with ray_logs_to(log):
                yield info
        finally:
            ray.shutdown()


def _start(settings: SweepSettings, address: str | None, driver_log: Path | None = None) -> RayInfo:
    token = None
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        ray_compat.reload_token_auth()  # Ray reads the mode at import: it may have been imported
        token = token_source()
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
        raise AshaTuneError(f"cannot start or join {where}: {first_line(err)}") from None
    for name in ray_compat.TUNE_LOGGERS:
        logging.getLogger(name).addFilter(_QuietTune())
    gcs = ray.get_runtime_context().gcs_address
    if address:
        how = ""
        if settings.address == "auto":
            how = " (--address auto: the cluster `ray start --head` started on this machine)"
        elif not settings.address:
            how = " ($RAY_ADDRESS)"
        say(f"joined the Ray cluster at {gcs}{how}")
    url = context.dashboard_url or ""
    url = f"http://{url}" if url and not url.startswith("http") else url
    session = (context.address_info or {}).get("session_dir")
    logs = Path(session) / "logs" if session and not address else None
    return RayInfo(url, logs, token, gcs, driver_log)


# --- the driver --------------------------------------------------------------------------------


def driver_identity() -> dict[str, Any]:
    """This driver, as DRIVER_TAG records it: where it runs and which Ray session and job it is."""
    import ray

    context = ray.get_runtime_context()
    identity = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "ray_session": context.get_session_name(),
        "ray_job": context.get_job_id(),
    }
    detached = detached_here()  # launch --detach: its submission, and the command that resubmits it
    if detached is not None:
        identity["detached"] = asdict(detached)
    return identity


def describe_driver(driver: dict[str, Any]) -> str:
    submitted = (driver.get("detached") or {}).get("submission_id")
    job = f"Ray job {driver.get('ray_job')}" + (f" (submission {submitted})" if submitted else "")
    return f"{job}, pid {driver.get('pid')} on {driver.get('host')}"


def _asha_process(pid: int) -> bool:
    try:
        return b"asha" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def driver_alive(driver: dict[str, Any]) -> bool:
    """Whether a recorded driver still runs: its process on this host, or its Ray job on the
    cluster this driver joined (a Ray session is one cluster's life: a restarted head is another)."""
    if driver.get("host") == socket.gethostname() and driver.get("pid") != os.getpid():
        if _asha_process(int(driver.get("pid", 0))):
            return True
    import ray

    if driver.get("ray_session") != ray.get_runtime_context().get_session_name():
        return False
    return str(driver.get("ray_job")) in ray_compat.live_driver_jobs()


# --- a node that can hold a trial --------------------------------------------------------------


def _fits(node: dict[str, Any], need: dict[str, float]) -> bool:
    return node.get("Alive", False) and all(node["Resources"].get(k, 0) >= v for k, v in need.items())


def _shape(resources: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


def _nodes_text(nodes: list[dict[str, Any]]) -> str:
    """The alive nodes' CPUs and GPUs, e.g. 'the head (0 CPU, 0 GPU), 1 other (1 CPU, 0 GPU)'."""
    alive = [n["Resources"] for n in nodes if n.get("Alive")]
    head = [r for r in alive if "node:__internal_head__" in r]
    parts = [f"the head ({_shape(head[0])})"] if head else []
    others = [_shape(r) for r in alive if "node:__internal_head__" not in r]
    for shape in dict.fromkeys(others):
        n = others.count(shape)
        parts.append(f"{count(n, 'other')} ({shape})")
    return ", ".join(parts) or "none alive"


def _same(bundle: dict[str, float], need: dict[str, float]) -> bool:
    return {k: float(v) for k, v in bundle.items() if v} == need


class AutoscalerWait:
    """Reads the autoscaler's reports while a sweep waits for a node that can hold a trial: it
    keeps waiting while the autoscaler adds a node, and stops at once when the autoscaler says no
    node type can hold the request (v2), or when it has seen the request for `QUIET_REPORTS`
    reports and added nothing (v1 says nothing more: no node type fits, or max_workers is reached)."""

    QUIET_REPORTS = 3

    def __init__(self, need: dict[str, float]):
        self.need = need
        self.stamp: float | None = None
        self.quiet = 0
        self.seen = False  # the autoscaler has seen the request
        self.launching: tuple[str, ...] = ()
        self.failed: tuple[str, ...] = ()

    def update(self, report: ray_compat.AutoscalerReport) -> str | None:
        """None to keep waiting, else why no node will come."""
        if report.stamp == self.stamp:
            return None
        self.stamp = report.stamp
        self.launching, self.failed = report.launching, report.failed or self.failed
        if any(_same(b, self.need) for b in report.infeasible):
            return "none of the autoscaler's node types can hold one"
        if not any(_same(b, self.need) for b in report.requested):
            return None  # the request has not reached it yet
        self.seen = True
        if report.launching:
            self.quiet = 0
            return None
        self.quiet += 1
        if self.quiet < self.QUIET_REPORTS:
            return None
        failed = (
            f"; its launches of {', '.join(sorted(set(self.failed)))} failed (ray status)"
            if self.failed
            else ""
        )
        return (
            f"the autoscaler adds no node for it (none of its node types can hold one, or the "
            f"cluster is at its max_workers){failed}"
        )

    def progress(self) -> str:
        if self.launching:
            counts = {t: self.launching.count(t) for t in self.launching}
            return "the autoscaler is adding " + ", ".join(f"{n} {t}" for t, n in counts.items())
        return "the autoscaler has seen the request" if self.seen else "asking the autoscaler"


def _minutes(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def wait_for_a_fitting_node(settings: SweepSettings, gcs_address: str) -> None:
    """On a cluster, a trial no node can hold would wait forever. Where an autoscaler runs, it is
    asked for such a node and the sweep waits while it adds one (`resource_wait_s`, default
    defaults.AUTOSCALER_WAIT_S), stopping at once when it will add none; a cluster without one is
    checked once (or for `resource_wait_s`, for nodes joined by hand)."""
    import ray
    from ray.autoscaler.sdk import request_resources

    r = settings.space.resources
    need = {k: float(v) for k, v in (("CPU", r.cpu), ("GPU", r.gpu)) if v}
    if any(_fits(node, need) for node in ray.nodes()):
        return
    each = f"each needs {_shape(need)}"
    fix = "change resources with --set resources.gpu=... / resources.cpu=..."
    report = ray_compat.autoscaler_report(gcs_address)
    if report is None:
        _wait_for_nodes(settings, need, settings.resource_wait_s or 0, each, fix)
        return
    wait_s = defaults.AUTOSCALER_WAIT_S if settings.resource_wait_s is None else settings.resource_wait_s
    watch = AutoscalerWait(need)
    say(
        f"no node of the cluster fits a trial ({each}) yet: asking the autoscaler, "
        f"waiting up to {_minutes(wait_s)}"
    )
    request_resources(bundles=[need])
    started = asked = last_said = time.monotonic()
    try:
        while not any(_fits(node, need) for node in ray.nodes()):
            waited = time.monotonic() - started
            report = ray_compat.autoscaler_report(gcs_address)
            why = watch.update(report) if report else "the autoscaler stopped reporting"
            if why or waited >= wait_s:
                reason = why or f"none came up within {_minutes(wait_s)} ({watch.progress()})"
                longer = "" if why else "; wait longer with --resource-wait SECONDS"
                raise ConfigError(
                    f"no node of the Ray cluster can run a trial of space {settings.space.name} "
                    f"({each}; nodes: {_nodes_text(ray.nodes())}): {reason}{longer}; {fix}"
                )
            if not watch.seen and time.monotonic() - asked >= REQUEST_AGAIN_S:
                request_resources(bundles=[need])  # another driver may have replaced the request
                asked = time.monotonic()
            if time.monotonic() - last_said >= PROGRESS_EVERY_S:
                say(
                    f"waiting for a node that fits a trial: {watch.progress()} "
                    f"({_minutes(waited)} of {_minutes(wait_s)})"
                )
                last_said = time.monotonic()
            time.sleep(POLL_S)
    finally:
        request_resources(bundles=[])  # the request is persistent until replaced


def _wait_for_nodes(
    settings: SweepSettings, need: dict[str, float], wait_s: float, each: str, fix: str
) -> None:
    """No autoscaler: wait `wait_s` for a node that fits to join (started by hand), then stop."""
    import ray

    if wait_s:
        say(
            f"no node of the cluster fits a trial ({each}) yet: waiting up to "
            f"{_minutes(wait_s)} for one to join"
        )
    deadline = time.monotonic() + wait_s
    while not any(_fits(node, need) for node in ray.nodes()):
        if time.monotonic() >= deadline:
            waited = f", after waiting {_minutes(wait_s)}" if wait_s else ""
            raise ConfigError(
                f"no node of the Ray cluster can run a trial of space {settings.space.name} "
                f"({each}; nodes: {_nodes_text(ray.nodes())}), and it has no autoscaler to add one"
                f"{waited}: {fix}, or add a node that fits (--resource-wait SECONDS waits for it)"
            )
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
