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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

__all__ = ["StudyHandle", "TrialState", "archive_study", "create_study", "prepare_storage"]

from asha_tune.defaults import STUDY_RETRY_ENV, STUDY_RETRY_S
from asha_tune.errors import AshaTuneError, ConfigError
from asha_tune.spaces import SearchSpace
from asha_tune.spaces.space import CONFIGURATION_KEY

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

T = TypeVar("T")
# Optuna user attributes asha-tune keeps on a study's trials.
VALUES_ATTR = "values"  # the decoded trial values, so a trial can be handed out again
RAY_TRIAL_ATTR = "ray_trial_id"
INTERRUPTED_ATTR = "interrupted"  # a trial parked as WAITING by an interrupt, until resume


class StudyUnavailableError(AshaTuneError):
    """The study's database stopped answering for longer than the retry window
    ($ASHA_TUNE_STUDY_RETRY_S, 300 s by default: a restarted PostgreSQL comes back within it)."""


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
        if isinstance(err, StudyUnavailableError):  # an inner retry already waited its window
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
        err = err.__cause__ or err.__context__  # type: ignore[assignment]  # None ends the loop
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
        storage = self.storage  # opens the connection, which sets the study's id
        assert self._study_id is not None
        return storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

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


# --- the space's distributions ---------------------------------------------------------------------


class Unexpressible(Exception):
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
    what a call asks for raises `Unexpressible`.
    """

    def __init__(self, params: dict[str, Any]):
        self.params = dict(params)
        self.distributions: dict[str, optuna.distributions.BaseDistribution] = {}

    def _value(self, name: str) -> Any:
        if name not in self.params:
            raise Unexpressible(f"it has no value for {name}")
        return self.params[name]

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        value = self._value(name)
        if not _in_range(value, low, high, step, integer=False):
            grid = f" in steps of {step}" if step else ""
            raise Unexpressible(f"{name} {value!r} is outside [{low}, {high}]{grid}")
        self.distributions[name] = optuna.distributions.FloatDistribution(low, high, log=log, step=step)
        return float(value)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        value = self._value(name)
        if not _in_range(value, low, high, step, integer=True):
            grid = f" in steps of {step}" if step != 1 else ""
            raise Unexpressible(f"{name} {value!r} is outside {low}..{high}{grid}")
        self.distributions[name] = optuna.distributions.IntDistribution(low, high, log=log, step=step)
        return int(value)

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        value = self._value(name)
        if value not in choices:
            shown = ", ".join(map(str, choices[:8])) + (", ..." if len(choices) > 8 else "")
            raise Unexpressible(f"{name} {value!r} is not one of its choices ({shown})")
        self.distributions[name] = optuna.distributions.CategoricalDistribution(choices)
        return value


def expressed(
    space: SearchSpace, values: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, optuna.distributions.BaseDistribution]]:
    """The Optuna parameters and distributions under which `space` suggests exactly `values`,
    or `Unexpressible` naming the first value it cannot."""
    recorder = RecordingSuggester(space.optuna_params(values))
    got = space.suggest(recorder)
    for name in dict.fromkeys([*values, *got]):
        if got.get(name) != values.get(name):
            param = space.parameters.get(name)
            if param is not None and param.type == "fixed":
                raise Unexpressible(
                    f"{name} is fixed at {got.get(name)!r} here; the trial had {values.get(name)!r}"
                )
            raise Unexpressible(f"{name} {values.get(name)!r} is not one of the values this space suggests")
    return {k: recorder.params[k] for k in recorder.distributions}, recorder.distributions


# --- parameter importances -------------------------------------------------------------------------

MIN_IMPORTANCE_TRIALS = 5


def _ped_anova(n: int, seed: int) -> optuna.importance.BaseImportanceEvaluator:
    # The top quantile holds at least 5 trials where the study has them (PED-ANOVA's advice),
    # between Optuna's default 10 % and half the trials.
    return optuna.importance.PedAnovaImportanceEvaluator(target_quantile=min(0.5, max(0.1, 5 / n)))


def _fanova(n: int, seed: int) -> optuna.importance.BaseImportanceEvaluator:
    try:
        return optuna.importance.FanovaImportanceEvaluator(seed=seed)
    except ImportError:
        raise AshaTuneError(
            "importances with fanova need scikit-learn (pip install scikit-learn); "
            "ped_anova needs nothing more"
        ) from None


# PED-ANOVA first: Optuna's default, and it assesses conditional parameters (a `when`), which
# fANOVA leaves out (it sees only parameters every trial has). fANOVA needs scikit-learn (here
# through mlflow).
IMPORTANCE_EVALUATORS: dict[str, Callable[[int, int], optuna.importance.BaseImportanceEvaluator]] = {
    "ped_anova": _ped_anova,
    "fanova": _fanova,
}


@dataclass(frozen=True)
class Importances:
    study: str
    evaluator: str
    epoch: int | None  # None: COMPLETE trials' final values; else every trial's value at this epoch
    trials: int  # the trials the importances rest on
    values: dict[str, float]  # space parameter -> importance (summing to 1), most important first
    left_out: tuple[str, ...]  # searched parameters the evaluator did not assess
    notes: tuple[str, ...]  # what the evaluator warned about

    def text(self) -> str:
        at = "final values of full-budget trials" if self.epoch is None else f"values at epoch {self.epoch}"
        lines = [
            f"parameter importances of {self.study} ({self.evaluator}; {self.trials} trials, {at}):",
            *(f"  {name:28s} {value:.3f}" for name, value in self.values.items()),
        ]
        if self.left_out:
            lines.append(f"  not assessed by {self.evaluator}: {', '.join(self.left_out)}")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def _space_params(
    space: SearchSpace, values: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, optuna.distributions.BaseDistribution]]:
    """One dimension per searched space parameter, as the user named it: its own distribution
    where one suggest call samples it, and a conv set (a size, then which convs of that size:
    several Optuna parameters) as one categorical over every conv set it allows."""
    params, distributions = expressed(space, values)
    names = [n for n in values if n == CONFIGURATION_KEY or n in space.parameters]
    owner = {
        call: max((n for n in names if call == n or call.startswith(n + ".")), key=len, default=call)
        for call in distributions
    }
    out_params: dict[str, Any] = {}
    out_distributions: dict[str, optuna.distributions.BaseDistribution] = {}
    for name in names:
        calls = [c for c, n in owner.items() if n == name]
        if calls == [name]:
            out_params[name], out_distributions[name] = params[name], distributions[name]
        elif calls:
            choices = [",".join(map(str, c)) for c in space.parameters[name].choices()]  # type: ignore[arg-type]
            conv_set: list[int] = values[name]  # several suggest calls: a conv set
            out_params[name] = ",".join(map(str, conv_set))
            out_distributions[name] = optuna.distributions.CategoricalDistribution(choices)
    return out_params, out_distributions


def _load(url: str, name: str) -> tuple[optuna.Study, SearchSpace]:
    try:
        study = optuna.load_study(study_name=name, storage=_storage(url))
    except KeyError:
        raise AshaTuneError(f"no study named {name} in {url}") from None
    if "space" not in study.user_attrs:
        raise AshaTuneError(f"study {name} in {url} was not made by asha-tune (it records no space)")
    return study, SearchSpace.model_validate(study.user_attrs["space"])


def importances(
    study_url: str,
    study_name: str,
    evaluator: str = "ped_anova",
    *,
    at_epoch: int | None = None,
    seed: int = 0,
    min_trials: int = MIN_IMPORTANCE_TRIALS,
) -> Importances:
    """Parameter importances of a sweep's study (Optuna's PED-ANOVA or fANOVA).

    Which values: by default each COMPLETE trial's final value (every one ran the full budget).
    A PRUNED trial's last value was measured after fewer epochs, so mixing it in would rank
    parameters by how long ASHA let their trials run; `at_epoch` instead compares every trial
    (COMPLETE or PRUNED) that reached that epoch at that epoch, e.g. ASHA's grace period, which
    all of them reach. Parameters are the space's, as named in its file (a conv set is one).
    """
    make = IMPORTANCE_EVALUATORS.get(evaluator)
    if make is None:
        raise ConfigError(
            f"unknown importance evaluator {evaluator!r}: choose one of {', '.join(IMPORTANCE_EVALUATORS)}"
        )
    study, space = _load(study_url, study_name)
    rows, unreadable = [], []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        value = trial.value if at_epoch is None else trial.intermediate_values.get(at_epoch)
        if at_epoch is None and trial.state != TrialState.COMPLETE:
            continue
        if value is None or not math.isfinite(value) or VALUES_ATTR not in trial.user_attrs:
            continue
        try:
            rows.append((_space_params(space, trial.user_attrs[VALUES_ATTR]), value))
        except Unexpressible as err:  # values the recorded space no longer takes
            unreadable.append(f"trial {trial.number} left out: {err}")
    which = "COMPLETE trials" if at_epoch is None else f"trials that reached epoch {at_epoch}"
    if len(rows) < min_trials:
        raise AshaTuneError(
            f"parameter importances need at least {min_trials} {which}; study {study_name} has {len(rows)}"
        )
    scratch = optuna.create_study(direction=study.direction)
    scratch.add_trials([optuna.trial.create_trial(params=p, distributions=d, value=v) for (p, d), v in rows])
    searched = list(dict.fromkeys(name for (p, _), _ in rows for name in p))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = optuna.importance.get_param_importances(scratch, evaluator=make(len(rows), seed))
    notes = tuple(dict.fromkeys([*unreadable, *(str(w.message) for w in caught)]))
    left_out = tuple(n for n in searched if n not in values)
    return Importances(study_name, evaluator, at_epoch, len(rows), dict(values), left_out, notes)


# --- warm starts -----------------------------------------------------------------------------------

WARM_START_ATTR = "warm_start_from"  # on a trial added by a warm start: where it came from
WARM_STATES = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED}


@dataclass(frozen=True)
class PastTrial:
    """A finished trial of another sweep, as a warm start reads it (from a study or records)."""

    source: str  # e.g. "paper_grid trial 3": shown, and kept on the added trial
    state: str  # completed | pruned | failed
    config: dict[str, Any]  # the full trial settings it ran with (TrialConfig.model_dump(mode="json"))
    metric: str  # what `value` and `intermediate` measure
    value: float | None
    intermediate: dict[int, float]  # epoch -> value


@dataclass(frozen=True)
class WarmStart:
    added: list[tuple[str, int]]  # (source, trial number in this study)
    skipped: list[tuple[str, str]]  # (source, why)

    def text(self) -> str:
        lines = [f"warm start: {len(self.added)} trials added, {len(self.skipped)} skipped"]
        lines += [f"  added {source} as trial {number}" for source, number in self.added]
        lines += [f"  skipped {source}: {why}" for source, why in self.skipped]
        return "\n".join(lines)


def _read(tree: dict[str, Any], path: str) -> tuple[bool, Any]:
    """`shaping.p0` of a nested settings tree, taking the longest key at each level as set_path."""
    node: Any = tree
    parts = path.split(".")
    while parts:
        if not isinstance(node, dict):
            return False, None
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if key in node:
                node, parts = node[key], parts[n:]
                break
        else:
            return False, None
    return True, node


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _values_for(space: SearchSpace, config: dict[str, Any]) -> dict[str, Any]:
    """The values of `space`'s parameters (those active, in file order) that a trial ran with."""
    values: dict[str, Any] = {}
    for name, param in space.parameters.items():
        if not param.active(values):
            continue
        found, value = _read(config, name)
        if not found:
            raise Unexpressible(f"its settings have no {name}")
        values[name] = value
    return values


def _targets_differ(past: list[str], here: list[str], metric: str, protocol: str) -> str | None:
    """Why a trial's targets make its value another quantity here, if they do. A per-domain
    accuracy, or val_acc on held-out source images, does not depend on the other targets."""
    if past == here:
        return None
    per_domain = metric.startswith("acc_") and metric.removeprefix("acc_") in here
    if set(here) <= set(past) and (per_domain or (metric == "val_acc" and protocol == "source_val")):
        return None
    ran, has = ", ".join(past), ", ".join(here)
    return f"it ran on targets {ran} (its {metric} depends on them); this space has {has}"


def _fit(space: SearchSpace, past: PastTrial, ignore: tuple[str, ...]) -> tuple[dict, dict, dict]:
    """(values, Optuna params, distributions) for a past trial in `space`, or Unexpressible."""
    values = _values_for(space, past.config)
    params, distributions = expressed(space, values)
    try:
        here = space.trial_config(values).model_dump(mode="json")
    except (ValueError, AshaTuneError) as err:
        raise Unexpressible(f"this space cannot run its values: {str(err).splitlines()[0]}") from None
    why = _targets_differ(
        past.config.get("data", {}).get("targets", []),
        here["data"]["targets"],
        past.metric,
        space.selection.protocol,
    )
    if why:
        raise Unexpressible(why)
    theirs, ours = _flat(past.config), _flat(here)
    for path in sorted(set(theirs) | set(ours)):
        if path in ignore or path == "data.targets" or theirs.get(path) == ours.get(path):
            continue
        raise Unexpressible(f"it ran with {path} {theirs.get(path)!r}; this space runs {ours.get(path)!r}")
    return values, params, distributions


def _why_not(past: PastTrial, space: SearchSpace) -> str | None:
    if past.state not in WARM_STATES:
        return f"it {past.state}: no result to learn from"
    if past.metric != space.scheduler.metric:
        return f"its value is {past.metric}; this sweep optimises {space.scheduler.metric}"
    if past.state == "completed" and (past.value is None or not math.isfinite(past.value)):
        return "it completed without a finite value"
    if past.state == "pruned" and not any(math.isfinite(v) for v in past.intermediate.values()):
        return "it was stopped before reporting a value"
    return None


def warm_start(
    url: str, study_name: str, trials: list[PastTrial], ignore: tuple[str, ...] = ("train.seed",)
) -> WarmStart:
    """Give a sweep's study, before it searches, the finished trials of another sweep whose
    values its space (the one the study records) can express, with their results; list the
    others with a reason each.

    Expressible: the trial's settings give a value for every active parameter of this space,
    each inside its distribution (the space's own suggest calls decide: `RecordingSuggester`),
    every other setting equals what this space runs (except `ignore`: a seed is noise, not a
    setting the value depends on), its targets make its value the same quantity, and its value
    is of this sweep's metric. COMPLETE trials keep their value, PRUNED ones their epochs'
    values (TPE ranks a pruned trial by its last). Run again, it adds nothing twice.
    """
    study, space = _load(url, study_name)
    if space.search.algorithm in ("grid", "list"):
        raise AshaTuneError(
            f"warm start: {study_name} runs a {space.search.algorithm} of configurations, whatever "
            f"was run before; warm-start an optuna search instead"
        )
    done = {
        t.user_attrs[WARM_START_ATTR]: t.number
        for t in study.get_trials(deepcopy=False)
        if WARM_START_ATTR in t.user_attrs
    }
    added, skipped = [], []
    for past in trials:
        if past.source in done:
            skipped.append((past.source, f"already added (trial {done[past.source]})"))
            continue
        try:
            why = _why_not(past, space)
            if why is None:
                values, params, distributions = _fit(space, past, ignore)
        except Unexpressible as err:
            why = str(err)
        if why is not None:
            skipped.append((past.source, why))
            continue
        steps = {int(k): float(v) for k, v in past.intermediate.items() if math.isfinite(v)}
        state = WARM_STATES[past.state]
        value = past.value if state == TrialState.COMPLETE else steps[max(steps)]
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=value,
                params=params,
                distributions=distributions,
                intermediate_values=steps,
                user_attrs={VALUES_ATTR: values, WARM_START_ATTR: past.source},
            )
        )
        number = len(study.trials) - 1
        done[past.source] = number
        added.append((past.source, number))
    return WarmStart(added, skipped)


def finished_trials(url: str, study_name: str) -> list[PastTrial]:
    """Every trial of another asha-tune study as a PastTrial: its settings from the space the
    study records (a listed configuration's resolved), its value of that space's metric."""
    study, space = _load(url, study_name)
    states = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in states or VALUES_ATTR not in t.user_attrs:
            continue
        out.append(
            PastTrial(
                f"{study_name} trial {t.number}",
                states[t.state],
                space.trial_config(t.user_attrs[VALUES_ATTR]).model_dump(mode="json"),
                space.scheduler.metric,
                t.value,
                dict(t.intermediate_values),
            )
        )
    return out
