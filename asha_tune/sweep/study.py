"""The Optuna side of a sweep: one study per sweep, kept in a real database.

Trials are asked define-by-run from the search space and told COMPLETE, PRUNED (stopped early
by ASHA, with the intermediate value of every epoch it ran) or FAIL. Everything goes through
Optuna's public study and storage APIs, so `optuna-dashboard <storage>` shows the same study,
and a study outlives the process that ran it. This is the only module that imports optuna
(the Tune searcher takes `TrialState` from here).
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

from asha_tune.defaults import STUDY_RETRY_ENV, STUDY_RETRY_S
from asha_tune.errors import AshaTuneError
from asha_tune.spaces import SearchSpace

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

T = TypeVar("T")
VALUES_ATTR = "values"  # the decoded trial values, so a trial can be handed out again
RAY_TRIAL_ATTR = "ray_trial_id"
# How long a sweep waits for its study's database to come back (a restarted PostgreSQL).


class StudyUnavailable(AshaTuneError):
    """The study's database stopped answering for longer than the retry window."""


INTERRUPTED_ATTR = "interrupted"  # a trial parked as WAITING by an interrupt, until resume


def sampler_for(space: SearchSpace, finished_before: int = 0) -> optuna.samplers.BaseSampler:
    """TPE for `optuna`, uniform for `random`, `grid` and `list` (their points are enqueued).

    The seed moves on by the number of trials already in the study, so a resumed sweep does
    not replay the suggestions it made before it was interrupted.
    """
    seed = space.search.seed + finished_before
    if space.search.algorithm == "optuna":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # A server database may restart under a sweep: test pooled connections before use.
    engine = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as err:
        raise AshaTuneError(f"cannot open Optuna storage {url}: {str(err).splitlines()[0]}") from None


def prepare_storage(url: str) -> None:
    """Create Optuna's tables in a new database now, before two sweeps race to create them."""
    _storage(url)


def _lost_connection(err: BaseException) -> bool:
    """A dropped or refused database connection (not bad data), anywhere in the error's chain."""
    while err is not None:
        if isinstance(err, StudyUnavailable):  # an inner retry already waited its window
            return False
        if isinstance(
            err,
            (
                sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.InterfaceError,
                sqlalchemy.exc.DisconnectionError,
            ),
        ):
            return True
        err = err.__cause__ or err.__context__
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
                raise StudyUnavailable(
                    f"the Optuna storage {url} did not answer for {window:.0f} s "
                    f"({str(err).splitlines()[0][:200]})"
                ) from None
            if not warned:
                log.warning("Optuna storage %s unreachable; retrying for up to %.0f s", url, window)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def create_study(url: str, name: str, space: SearchSpace) -> optuna.Study:
    """A new study for a new sweep; a grid's or a list's configurations are enqueued in order."""
    storage = _storage(url)
    direction = "maximize" if space.scheduler.mode == "max" else "minimize"
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

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "name": self.name, "space": self.space}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["name"], state["space"])

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
        return self._storage

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    # -- the sweep's calls --

    def ask(self, ray_trial_id: str, known: set[int]) -> tuple[int, dict[str, Any]]:
        """A trial for Ray: an orphan (asked but never handed to Ray, e.g. when the driver was
        killed mid-ask) or a new one, so a resumed sweep never grows the study past its size.

        Suggesting again on an orphan returns the values it already has and samples only those
        a kill left unsampled.
        """
        return retrying(self.url, lambda: self._ask(ray_trial_id, known))

    def _ask(self, ray_trial_id: str, known: set[int]) -> tuple[int, dict[str, Any]]:
        orphans = [
            t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.number not in known
        ]
        if orphans:
            trial = optuna.trial.Trial(self.study, self._trial_id(orphans[0].number))
        else:
            trial = self.study.ask()
        values = self.space.suggest(trial)
        trial.set_user_attr(VALUES_ATTR, values)
        trial.set_user_attr(RAY_TRIAL_ATTR, ray_trial_id)
        return trial.number, values

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

    def history(self) -> list[tuple[str, dict[int, float]]]:
        """(Ray trial id, {epoch: value}) of every trial that reported, for rebuilding ASHA."""
        return retrying(
            self.url,
            lambda: [
                (t.user_attrs.get(RAY_TRIAL_ATTR, f"optuna-{t.number}"), dict(t.intermediate_values))
                for t in self.study.get_trials(deepcopy=False)
                if t.intermediate_values
            ],
        )
