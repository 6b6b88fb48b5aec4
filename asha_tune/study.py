"""The Optuna side of a sweep: one study per sweep, kept in a real database.

Trials are asked define-by-run from the search space and told COMPLETE, PRUNED (stopped early
by ASHA, with the intermediate value of every epoch it ran) or FAIL. Everything goes through
Optuna's public study and storage APIs, so `optuna-dashboard <storage>` shows the same study,
and a study outlives the process that ran it. This is the only module that imports optuna.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .errors import AshaTuneError
from .spaces import SearchSpace

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

VALUES_ATTR = "values"  # the decoded trial values, so a trial can be handed out again
RAY_TRIAL_ATTR = "ray_trial_id"
INTERRUPTED_ATTR = "interrupted"  # a trial parked as WAITING by an interrupt, until resume


def default_storage(directory: Path | None = None) -> str:
    return f"sqlite:///{(directory or Path.cwd()).resolve() / 'optuna.db'}"


def sampler_for(space: SearchSpace, finished_before: int = 0) -> optuna.samplers.BaseSampler:
    """TPE for `optuna`, uniform for `random` and `grid` (grid points are enqueued).

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
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:
        raise AshaTuneError(f"cannot open Optuna storage {url}: {str(err).splitlines()[0]}") from None


def create_study(url: str, name: str, space: SearchSpace) -> optuna.Study:
    """A new study for a new sweep; a grid's configurations are enqueued in order."""
    storage = _storage(url)
    direction = "maximize" if space.scheduler.mode == "max" else "minimize"
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction,
                                    sampler=sampler_for(space))
    except optuna.exceptions.DuplicatedStudyError:
        raise AshaTuneError(f"a study named {name} already exists in {url}: resume it "
                            f"(asha-tune resume {name}) or pick another --name") from None
    study.set_user_attr("space", space.model_dump(mode="json"))
    if space.search.algorithm == "grid":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # enqueue_trial is marked experimental
            for values in space.grid()[:space.num_trials]:
                study.enqueue_trial(space.optuna_params(values), user_attrs={VALUES_ATTR: values})
    return study


def archive_study(url: str, name: str, archived_name: str) -> None:
    """Keep a study under another name (`launch --restart`): copied whole, then the name is freed."""
    storage = _storage(url)
    optuna.copy_study(from_study_name=name, from_storage=storage, to_storage=storage,
                      to_study_name=archived_name)
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
        orphans = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.number not in known]
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
        try:
            self.storage.set_trial_intermediate_value(self._trial_id(number), step, value)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            pass

    def tell(self, number: int, state: TrialState, value: float | None = None) -> None:
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

    def state(self, number: int) -> TrialState:
        return self.storage.get_trial(self._trial_id(number)).state

    def history(self) -> list[tuple[str, dict[int, float]]]:
        """(Ray trial id, {epoch: value}) of every trial that reported, for rebuilding ASHA."""
        return [
            (t.user_attrs.get(RAY_TRIAL_ATTR, f"optuna-{t.number}"), dict(t.intermediate_values))
            for t in self.study.get_trials(deepcopy=False) if t.intermediate_values
        ]
