"""The Optuna side of a sweep: one study per sweep, kept in a real database.

Trials are asked define-by-run from the search space and told COMPLETE, PRUNED (stopped early
by ASHA, with the intermediate value of every epoch it ran) or FAIL. Everything goes through
Optuna's public study and storage APIs, so `optuna-dashboard <storage>` shows the same study,
and a study outlives the process that ran it. The Tune searcher takes `TrialState` from here.

Beside it, in the sweep room as every Optuna import: importance.py (which parameters matter,
from a finished study) and warm_start.py (another sweep's trials given to a new study). Both
read a space's distributions through `expressed`, below: the space's own suggest calls.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

__all__ = [
    "RecordingSuggester",
    "StudyHandle",
    "TrialState",
    "UnexpressibleError",
    "archive_study",
    "check_study_url",
    "create_study",
    "delete_study",
    "expressed",
    "load_recorded",
    "prepare_storage",
    "study_exists",
]

from asha_tune.defaults import STUDY_RETRY_ENV, STUDY_RETRY_S
from asha_tune.errors import AshaTuneError, ConfigError, chain, first_line
from asha_tune.files import sqlite_file_problem, sqlite_write_ahead
from asha_tune.spaces import SearchSpace
from asha_tune.tracking.tags import COMPLETED, FAILED, PRUNED

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

T = TypeVar("T")
# Optuna user attributes asha-tune keeps on a study's trials.
VALUES_ATTR = "values"  # the decoded trial values, so a trial can be handed out again
RAY_TRIAL_ATTR = "ray_trial_id"
INTERRUPTED_ATTR = "interrupted"  # a trial parked as WAITING by an interrupt, until resume
WARM_START_ATTR = "warm_start_from"  # on a trial added by a warm start (warm_start.py): its source
REHEARSAL_ATTR = "rehearsal"  # on a rehearsal's study (launch --rehearse): True
WARM_PREFIX = "warm-"  # how `history` names a warm-started trial (it never ran in this sweep's Ray)
# An ended trial's Optuna state, as the records (tracking/tags.py) name it.
ENDED_AS = {TrialState.COMPLETE: COMPLETED, TrialState.PRUNED: PRUNED, TrialState.FAIL: FAILED}


class StudyUnavailableError(AshaTuneError):
    """The study's database stopped answering for longer than the retry window
    ($ASHA_TUNE_STUDY_RETRY_S, else defaults.STUDY_RETRY_S)."""


def sampler_for(space: SearchSpace, finished_before: int = 0) -> optuna.samplers.BaseSampler:
    """TPE for `optuna`, uniform for `random`, `grid` and `list` (their points are enqueued).

    The seed moves on by the number of trials already in the study, so a resumed sweep does
    not replay the suggestions it made before it was interrupted.
    """
    seed = space.search.seed + finished_before
    if space.search.algorithm == "optuna":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _sqlite_file(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def _storage(url: str) -> optuna.storages.BaseStorage:
    db = _sqlite_file(url)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise AshaTuneError(f"cannot open Optuna storage {url} ({first_line(err)})") from None
    # A server database may restart under a sweep: test pooled connections before use.
    engine = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as err:
        why = first_line(err)
        if "Can't load plugin" in why or "Could not parse" in why:
            why = (
                "no database driver takes this URL: use sqlite:///PATH or a database URL, e.g. postgresql://"
            )
        elif "database or disk is full" in why:
            why = "its file system is full"
        raise AshaTuneError(f"cannot open Optuna storage {url} ({why})") from None
    if url.startswith("sqlite"):
        sqlite_write_ahead(storage.engine)  # an ask, made on Tune's event loop, costs no disk sync
    return storage


def check_study_url(url: str, flag: str = "--study-url") -> None:
    """The studies' database can be written, asked before a launch creates anything (and creating
    nothing): a sqlite file's folder probed (a file in the way, /proc, a full disk), then the
    database, where it exists or is a server, opened."""
    db = _sqlite_file(url)
    if db is not None:
        if line := sqlite_file_problem(db, flag, url, "optuna.db"):
            raise ConfigError(line)
        if not db.exists():
            return  # created where the probe could write, by the launch that needs it
    try:
        _storage(url)
    except AshaTuneError as err:
        raise ConfigError(f"{err}: check {flag}") from None


def study_exists(url: str, name: str) -> bool:
    try:
        _storage(url).get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def delete_study(url: str, name: str) -> None:
    """Remove a study a launch created before it was refused, so that its name is free again."""
    optuna.delete_study(study_name=name, storage=_storage(url))


def prepare_storage(url: str) -> None:
    """Create Optuna's tables in a new database now, before two sweeps race to create them."""
    _storage(url)


def _lost_connection(err: BaseException) -> bool:
    """A dropped or refused database connection (not bad data), anywhere in the error's chain."""
    for e in chain(err):
        if isinstance(e, StudyUnavailableError):  # an inner retry already waited its window
            return False
        if isinstance(
            e,
            (
                sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.InterfaceError,
                sqlalchemy.exc.DisconnectionError,
            ),
        ):
            return True
    return False


def retrying(url: str, call: Callable[[], T]) -> T:
    """`call()`, again and again while the database is unreachable, up to the retry window.

    Every call retried here is idempotent (`ask` reuses an orphan trial, `tell` skips a finished
    one), so a call that reached the database before the connection dropped does no harm.
    """
    window = float(os.environ.get(STUDY_RETRY_ENV, STUDY_RETRY_S))
    deadline, delay, warned = time.monotonic() + window, 0.5, False
    while True:
        try:
            return call()
        except Exception as err:
            if not _lost_connection(err):
                raise
            if time.monotonic() > deadline:
                raise StudyUnavailableError(
                    f"the Optuna storage {url} did not answer for {window:.0f} s ({first_line(err)[:200]})"
                ) from None
            if not warned:
                log.warning("Optuna storage %s unreachable; retrying for up to %.0f s", url, window)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def create_study(url: str, name: str, space: SearchSpace, rehearsal: bool = False) -> optuna.Study:
    """A new study for a new sweep; a grid's or a list's configurations are enqueued in order.
    A rehearsal's (`launch --rehearse`) is marked: warm starts refuse it."""
    storage = _storage(url)
    direction = (
        optuna.study.StudyDirection.MAXIMIZE
        if space.scheduler.mode == "max"
        else optuna.study.StudyDirection.MINIMIZE
    )
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction=direction, sampler=sampler_for(space)
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise AshaTuneError(
            f"a study named {name} already exists in {url}: resume it "
            f"(asha-tune resume {name}) or pick another --name"
        ) from None
    study.set_user_attr("space", space.model_dump(mode="json"))
    if rehearsal:
        study.set_user_attr(REHEARSAL_ATTR, True)
    if space.search.algorithm in ("grid", "list"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # enqueue_trial is marked experimental
            for values in space.grid()[: space.num_trials]:
                study.enqueue_trial(space.optuna_params(values), user_attrs={VALUES_ATTR: values})
    return study


def archive_study(url: str, name: str, archived_name: str) -> None:
    """Keep a study under another name (`launch --restart`): copied whole, then the name is freed."""
    storage = _storage(url)
    optuna.copy_study(
        from_study_name=name, from_storage=storage, to_storage=storage, to_study_name=archived_name
    )
    optuna.delete_study(study_name=name, storage=storage)


class StudyHandle:
    """A picklable link to a study (URL and name); the connection is opened lazily."""

    def __init__(self, url: str, name: str, space: SearchSpace):
        self.url, self.name, self.space = url, name, space
        self._study: optuna.Study | None = None
        self._storage: optuna.storages.BaseStorage | None = None
        self._study_id: int | None = None
        self._trial_ids: dict[int, int] = {}  # trial number -> storage id (never changes)
        # Trials asked but never handed to Ray (a driver killed mid-ask, or with trials it had not
        # started), read at the first ask: none appears while this driver runs, so they are read once.
        self._orphans: list[int] | None = None
        self._size: int | None = None  # the sweep's own trials in the study (read once, then counted)

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "name": self.name, "space": self.space}

    def __setstate__(self, state: dict[str, Any]) -> None:
        StudyHandle.__init__(self, state["url"], state["name"], state["space"])

    @property
    def study(self) -> optuna.Study:
        return retrying(self.url, self._open)

    def _open(self) -> optuna.Study:
        if self._study is None:
            storage = _storage(self.url)
            try:
                study = optuna.load_study(study_name=self.name, storage=storage)
            except KeyError:
                raise AshaTuneError(f"no study named {self.name} in {self.url}") from None
            study.sampler = sampler_for(self.space, len(study.trials))
            self._study, self._storage = study, storage
            self._study_id = storage.get_study_id_from_name(self.name)
        return self._study

    @property
    def storage(self) -> optuna.storages.BaseStorage:
        self.study  # noqa: B018  (opens the connection)
        assert self._storage is not None
        return self._storage

    def _trial_id(self, number: int) -> int:
        if number not in self._trial_ids:
            storage = self.storage  # opens the connection, which sets the study's id
            assert self._study_id is not None
            self._trial_ids[number] = storage.get_trial_id_from_study_id_trial_number(self._study_id, number)
        return self._trial_ids[number]

    # -- the sweep's calls --

    def ask(
        self, ray_trial_id: str, known: set[int], attrs: bool = True
    ) -> tuple[int, dict[str, Any]] | None:
        """A trial for Ray: an orphan (asked but never handed to Ray, e.g. when the driver was
        killed mid-ask) or a new one, so a resumed sweep never grows the study past its size;
        None once the study holds the sweep's trials and none is left to hand out (a resumed
        sweep whose driver was killed after trials Tune's snapshot did not know yet had ended).

        Suggesting again on an orphan returns the values it already has and samples only those
        a kill left unsampled. `attrs` False leaves the trial's user attributes (its values and
        Ray trial id) to the caller's `set_attrs`, off the event loop.
        """
        return retrying(self.url, lambda: self._ask(ray_trial_id, known, attrs))

    def _ask(self, ray_trial_id: str, known: set[int], attrs: bool) -> tuple[int, dict[str, Any]] | None:
        if self._size is None:  # the sweep's own trials: a warm start's added ones are not its to run
            self._size = sum(
                WARM_START_ATTR not in t.user_attrs for t in self.study.get_trials(deepcopy=False)
            )
        full = self._size >= self.space.num_trials
        if self._orphans is None or (full and not self._orphans):
            left = [
                t
                for t in self.study.get_trials(
                    deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)
                )
                if t.number not in known
            ]
            self._orphans = [t.number for t in left if t.state == TrialState.RUNNING]
            if not left and full:
                return None
        while self._orphans and self._orphans[0] in known:
            self._orphans.pop(0)
        orphan = self._orphans.pop(0) if self._orphans else None
        if orphan is not None:
            trial = optuna.trial.Trial(self.study, self._trial_id(orphan))
        elif self.space.search.algorithm == "random":
            # No queue to pop (a grid's or a list's) and no history to read (TPE's), where
            # `Study.ask` reads every unfinished trial from the database, on every ask: the rest of
            # what it does, through the study's own (cached) storage (Optuna-private attributes).
            study = self.study
            trial_id = study._storage.create_new_trial(study._study_id)
            trial = optuna.trial.Trial(study, trial_id)
            self._trial_ids[trial.number] = trial_id
        else:
            trial = self.study.ask()
        if orphan is None:
            self._size += 1
        values = self.space.suggest(trial)
        if attrs:
            self.set_attrs(trial.number, values, ray_trial_id)
        return trial.number, values

    def set_attrs(self, number: int, values: dict[str, Any], ray_trial_id: str) -> None:
        """The user attributes `ask` leaves to its caller: the values, so that a trial can be handed
        out again, and the Ray trial id, which rebuilding ASHA names it by."""

        def write() -> None:
            trial_id = self._trial_id(number)
            self.storage.set_trial_user_attr(trial_id, VALUES_ATTR, values)
            self.storage.set_trial_user_attr(trial_id, RAY_TRIAL_ATTR, ray_trial_id)

        retrying(self.url, write)

    def write(
        self,
        number: int,
        attrs: tuple[dict[str, Any], str] | None = None,
        values: dict[int, float] | None = None,
        tell: tuple[TrialState, float | None] | None = None,
    ) -> None:
        """What the sweep's records writer holds for one trial, in one call (one trip to its
        records process): the user attributes `ask` left (values, Ray trial id), intermediate
        values by step, and the trial's end."""
        if attrs is not None:
            self.set_attrs(number, *attrs)
        for step, value in sorted((values or {}).items()):
            self.report(number, step, value)
        if tell is not None:
            self.tell(number, *tell)

    def report(self, number: int, step: int, value: float) -> None:
        """An intermediate value; a no-op on a trial that already ended (replayed after resume)."""
        if not math.isfinite(value):
            return
        retrying(self.url, lambda: self._report(number, step, value))

    def _report(self, number: int, step: int, value: float) -> None:
        try:
            self.storage.set_trial_intermediate_value(self._trial_id(number), step, value)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            pass

    def tell(self, number: int, state: TrialState, value: float | None = None) -> None:
        retrying(self.url, lambda: self._tell(number, state, value))

    def _tell(self, number: int, state: TrialState, value: float | None) -> None:
        if value is not None or state == TrialState.FAIL:
            # What `Study.tell` writes (a stopped trial's value is its last intermediate one, which
            # the caller gives), without reading the whole trial back first: one write.
            try:
                self.storage.set_trial_state_values(
                    self._trial_id(number),
                    state,
                    None if value is None or state == TrialState.FAIL else [value],
                )
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # told before: a resumed sweep ends a trial again
            return
        values = value if state == TrialState.COMPLETE else None
        try:
            self.study.tell(number, values, state=state, skip_if_finished=True)
        except ValueError as err:
            log.warning("Optuna refused trial %s as %s: %s", number, state.name, err)

    def park_running(self) -> int:
        """After an interrupt: RUNNING trials become WAITING (marked), so no trial shows as running
        while no driver runs; `unpark` makes them RUNNING again before a resume asks anything."""
        parked = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in parked:
            trial_id = self._trial_id(trial.number)
            self.storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, True)
            self.storage.set_trial_state_values(trial_id, TrialState.WAITING)
        return len(parked)

    def unpark(self) -> None:
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if trial.user_attrs.get(INTERRUPTED_ATTR):
                trial_id = self._trial_id(trial.number)
                self.storage.set_trial_state_values(trial_id, TrialState.RUNNING)
                self.storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, False)

    def ended_beyond(self, ray_trial_ids: set[str], first_trial: int = 0) -> dict[str, int]:
        """The sweep's own trials (numbered from `first_trial` on) that ended but that Tune does not
        know, by state as the records say it: a killed driver saw them end after Tune's last
        snapshot, so a resume does not run them again, yet they are the sweep's."""

        def count() -> dict[str, int]:
            ended: dict[str, int] = {}
            for t in self.study.get_trials(deepcopy=False, states=tuple(ENDED_AS)):
                ours = t.number >= first_trial and WARM_START_ATTR not in t.user_attrs
                if ours and t.user_attrs.get(RAY_TRIAL_ATTR) not in ray_trial_ids:
                    ended[ENDED_AS[t.state]] = ended.get(ENDED_AS[t.state], 0) + 1
            return ended

        return retrying(self.url, count)

    def history(self) -> list[tuple[str, dict[int, float]]]:
        """(Ray trial id, {epoch: value}) of every trial that reported, for rebuilding ASHA."""
        return retrying(
            self.url,
            lambda: [
                (
                    t.user_attrs.get(
                        RAY_TRIAL_ATTR,
                        f"{WARM_PREFIX}{t.number}"
                        if WARM_START_ATTR in t.user_attrs
                        else f"optuna-{t.number}",
                    ),
                    dict(t.intermediate_values),
                )
                for t in self.study.get_trials(deepcopy=False)
                if t.intermediate_values
            ],
        )


# --- the space's distributions ---------------------------------------------------------------------


class UnexpressibleError(Exception):
    """A value this space cannot suggest; the message says which and why."""


def _in_range(value: Any, low: float, high: float, step: float | None, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if integer and value != int(value):
        return False
    if not low - 1e-12 <= value <= high + 1e-12:
        return False
    if step:
        k = (value - low) / step
        return abs(k - round(k)) < 1e-8
    return True


class RecordingSuggester:
    """A Suggester (spaces/params.py) that answers each suggest_* call from given Optuna
    parameters and records the distribution the call asked for.

    The space's own parameter types make the calls, so the Optuna distributions of a space are
    built by the same code that samples it (never written out a second time); a value outside
    what a call asks for raises `UnexpressibleError`.
    """

    def __init__(self, params: dict[str, Any]):
        self.params = dict(params)
        self.distributions: dict[str, optuna.distributions.BaseDistribution] = {}

    def _value(self, name: str) -> Any:
        if name not in self.params:
            raise UnexpressibleError(f"it has no value for {name}")
        return self.params[name]

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        value = self._value(name)
        if not _in_range(value, low, high, step, integer=False):
            grid = f" in steps of {step}" if step else ""
            raise UnexpressibleError(f"{name} {value!r} is outside [{low}, {high}]{grid}")
        self.distributions[name] = optuna.distributions.FloatDistribution(low, high, log=log, step=step)
        return float(value)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        value = self._value(name)
        if not _in_range(value, low, high, step, integer=True):
            grid = f" in steps of {step}" if step != 1 else ""
            raise UnexpressibleError(f"{name} {value!r} is outside {low}..{high}{grid}")
        self.distributions[name] = optuna.distributions.IntDistribution(low, high, log=log, step=step)
        return int(value)

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        value = self._value(name)
        if value not in choices:
            shown = ", ".join(map(str, choices[:8])) + (", ..." if len(choices) > 8 else "")
            raise UnexpressibleError(f"{name} {value!r} is not one of its choices ({shown})")
        self.distributions[name] = optuna.distributions.CategoricalDistribution(choices)
        return value


def expressed(
    space: SearchSpace, values: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, optuna.distributions.BaseDistribution]]:
    """The Optuna parameters and distributions under which `space` suggests exactly `values`,
    or `UnexpressibleError` naming the first value it cannot."""
    recorder = RecordingSuggester(space.optuna_params(values))
    got = space.suggest(recorder)
    for name in dict.fromkeys([*values, *got]):
        if got.get(name) != values.get(name):
            param = space.parameters.get(name)
            if param is not None and param.type == "fixed":
                raise UnexpressibleError(
                    f"{name} is fixed at {got.get(name)!r} here; the trial had {values.get(name)!r}"
                )
            raise UnexpressibleError(
                f"{name} {values.get(name)!r} is not one of the values this space suggests"
            )
    return {k: recorder.params[k] for k in recorder.distributions}, recorder.distributions


def load_recorded(url: str, name: str) -> tuple[optuna.Study, SearchSpace]:
    """A finished asha-tune study and the space it records (a ConfigError-like line if not)."""
    try:
        study = optuna.load_study(study_name=name, storage=_storage(url))
    except KeyError:
        raise AshaTuneError(f"no study named {name} in {url}") from None
    if "space" not in study.user_attrs:
        raise AshaTuneError(f"study {name} in {url} was not made by asha-tune (it records no space)")
    if study.user_attrs.get(REHEARSAL_ATTR):
        raise AshaTuneError(
            f"study {name} in {url} is a rehearsal's (launch --rehearse: simulated trials): "
            "its scores are not results, so warm starts refuse it"
        )
    return study, SearchSpace.model_validate(study.user_attrs["space"])
