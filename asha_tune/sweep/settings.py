"""Where a sweep runs and records: everything `asha-tune resume NAME` needs, kept in sweep.json."""

from __future__ import annotations

import re
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from asha_tune import defaults
from asha_tune.errors import ConfigError
from asha_tune.files import DamagedFileError, read_saved, write_atomic
from asha_tune.spaces import SearchSpace
from asha_tune.trial.config import Runtime

SWEEP_FILE = "sweep.json"
# A sweep's name names its folder under --results-dir: letters, digits, '.', '_' and '-', not
# starting with '.' or '-', so never a path, '..', a hidden folder or a flag.
SWEEP_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
IF_EXISTS = ("fail", "resume")  # launch --if-exists: what a launch does with a name already taken
# Where and on what a sweep runs, not what it computes or where it records: what a later command
# (resume, confirm, launch --if-exists resume, a replicated search's next replicate) may replace.
RUNTIME_FIELDS = ("runtime", "address", "num_cpus", "num_gpus", "resource_wait_s")


def sweep_name(space: SearchSpace) -> str:
    return f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"


class Rehearsal(BaseModel):
    """`launch --rehearse`: the sweep as it would run (cluster, scheduler, searcher, stores), with
    simulated trials that sleep `epoch_s` per epoch and report a score made up from their
    configuration (sweep/rehearsal.py). Its records are marked and never read as results."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    epoch_s: float = Field(default=0.5, ge=0, le=3600)


class Extension(BaseModel):
    """One `asha-tune extend NAME --trials N` (sweep/extend.py): the trials it added to the study,
    numbered from `first_trial` on (past every trial in the study, and past those the sweep had
    still to ask, when it was extended)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    trials: int = Field(ge=1)
    first_trial: int = Field(ge=0)


def extension_of(extensions: list[Extension], number: int) -> int | None:
    """Which extension (1, 2, ...) a trial of the study came from; None: one the sweep was launched with."""
    found = [k for k, e in enumerate(extensions, 1) if number >= e.first_trial]
    return found[-1] if found else None


class SweepSettings(BaseModel):
    """A sweep's identity and infrastructure; the science is in `space`."""

    model_config = ConfigDict(extra="forbid")
    name: str
    space: SearchSpace
    results_dir: Path  # Ray's trial folders and checkpoints: results_dir/name
    tracking_uri: str
    study_url: str  # Optuna's database
    runtime: Runtime
    address: str | None = None  # an existing Ray cluster; None starts a local one
    num_cpus: float | None = None  # local Ray only
    num_gpus: float | None = None  # local Ray only (logical GPUs allowed)
    # A cluster: how long to wait for a node that fits a trial; None: defaults.AUTOSCALER_WAIT_S
    # where an autoscaler can add one, else check once.
    resource_wait_s: float | None = None
    parent_run_id: str | None = None
    # A sweep run on behalf of another (a confirmation, sweep/confirm.py): where its parent run
    # nests in MLflow, the parent run's extra tags, and its child runs' extra tags by configuration id.
    nested_under: str | None = None
    run_tags: dict[str, str] = {}
    configuration_tags: dict[str, dict[str, str]] = {}
    # --warm-start SWEEP: before it searches, its study receives that sweep's trials (warm_start.py).
    warm_start: str | None = None
    # One replicate of a replicated search (sweep/replicated.py): its number, and the search's name.
    replicate: int | None = None
    replicate_of: str | None = None
    # launch --rehearse: simulated trials (no data, no torch in the trials); records marked rehearsal.
    rehearse: Rehearsal | None = None
    # asha-tune extend: each extension in order (its trials grew space.search.num_trials).
    extensions: list[Extension] = []

    @property
    def run_id(self) -> str:
        """The MLflow parent run's id: set by `launch` before anything runs."""
        if self.parent_run_id is None:
            raise ConfigError(f"sweep {self.name} has no MLflow parent run: it was never launched")
        return self.parent_run_id

    @property
    def is_confirmation(self) -> bool:
        return self.nested_under is not None and self.replicate is None

    @property
    def resume_name(self) -> str:
        """What `asha-tune resume` continues: a replicate's whole replicated search."""
        return self.replicate_of or self.name

    @property
    def sweep_dir(self) -> Path:
        return self.results_dir / self.name

    def with_runtime_of(self, other: SweepSettings) -> SweepSettings:
        """These settings, running where and as `other` runs (its RUNTIME_FIELDS)."""
        return self.model_copy(update={k: getattr(other, k) for k in RUNTIME_FIELDS})

    def save(self) -> None:
        write_atomic(self.sweep_dir / SWEEP_FILE, self.model_dump_json(indent=2))  # resume reads it

    @classmethod
    def load(cls, name: str, results_dir: Path) -> SweepSettings:
        path = results_dir / name / SWEEP_FILE
        if not path.is_file():
            known = sorted(p.parent.name for p in results_dir.glob(f"*/{SWEEP_FILE}"))
            hint = f" (sweeps there: {', '.join(known)})" if known else ""
            raise ConfigError(f"no sweep {name} in {results_dir}{hint}")
        tail = "" if results_dir == defaults.results_dir() else f" --results-dir {results_dir}"
        try:
            return read_saved(path, cls)
        except DamagedFileError as err:
            raise ConfigError(
                f"{err}; restore it from a copy, or start sweep {name} over: asha-tune launch --space "
                f"SPACE --name {name} --restart{tail} (what is found of it is kept as {name}.attempt-K)"
            ) from None


def command_tail(settings: SweepSettings) -> str:
    """` --results-dir DIR` where a later command needs it to find this sweep."""
    return "" if settings.results_dir == defaults.results_dir() else f" --results-dir {settings.results_dir}"


def continuing(settings: SweepSettings) -> SweepSettings:
    """`launch --if-exists resume` of a sweep that exists: its saved settings, with this launch's
    runtime options (data, cache, device, the cluster it joins); refused when this launch asks
    for another space or other records, which a resume would silently ignore."""
    old = SweepSettings.load(settings.name, settings.results_dir)
    differs = [
        what
        for what, mine, theirs in (
            ("space", settings.space.model_dump(mode="json"), old.space.model_dump(mode="json")),
            ("--tracking-uri", settings.tracking_uri, old.tracking_uri),
            ("--study-url", settings.study_url, old.study_url),
        )
        if mine != theirs
    ]
    if differs:
        raise ConfigError(
            f"sweep {settings.name} exists with another {' and '.join(differs)} than this launch's: "
            f"--if-exists resume continues a sweep only as it was launched (asha-tune resume "
            f"{settings.name}{command_tail(settings)} continues it as it is); choose another --name, "
            f"or start it over with --restart"
        )
    return old.with_runtime_of(settings)


def check_name(name: str, flag: str = "--name") -> str:
    """A sweep's name (SWEEP_NAME), or one line saying what one is."""
    if not re.fullmatch(SWEEP_NAME, name):
        raise ConfigError(
            f"{flag} {name!r}: use letters, digits, '.', '_' and '-', starting with a letter, a digit "
            "or '_' (it names the sweep's folder)"
        )
    return name
