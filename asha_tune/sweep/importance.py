"""Which parameters matter: Optuna's importances (PED-ANOVA, fANOVA) of a sweep's study.

The importances are of the study's own objective: the sweep's scheduler metric (e.g. acc_cartoon
under oracle, val_acc under source_val), the value each trial told the study, not a figure per
target. Replicates of one search (sweep/replicated.py) are pooled: the same space and objective,
other seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from asha_tune.defaults import IMPORTANCE_EVALUATORS
from asha_tune.errors import AshaTuneError, ConfigError
from asha_tune.spaces import SearchSpace
from asha_tune.spaces.space import CONFIGURATION_KEY
from asha_tune.sweep.study import VALUES_ATTR, WARM_START_ATTR, UnexpressibleError, expressed, load_recorded

__all__ = ["EVALUATORS", "MIN_IMPORTANCE_TRIALS", "Importances", "importances"]

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


# By the names of defaults.IMPORTANCE_EVALUATORS. PED-ANOVA first: Optuna's default, and it
# assesses conditional parameters (a `when`), which fANOVA leaves out (it sees only parameters
# every trial has). fANOVA needs scikit-learn (here through mlflow).
EVALUATORS: dict[str, Callable[[int, int], optuna.importance.BaseImportanceEvaluator]] = dict(
    zip(IMPORTANCE_EVALUATORS, (_ped_anova, _fanova), strict=True)
)


@dataclass(frozen=True)
class Importances:
    study: str  # the study, or the studies pooled ("a, b")
    evaluator: str
    epoch: int | None  # None: COMPLETE trials' final values; else every trial's value at this epoch
    trials: int  # the trials the importances rest on
    values: dict[str, float]  # space parameter -> importance (summing to 1), most important first
    left_out: tuple[str, ...]  # searched parameters the evaluator did not assess
    notes: tuple[str, ...]  # what the evaluator warned about
    objective: str = ""  # what the study's values are: "acc_cartoon (max; selection oracle)"
    warm_started: int = 0  # of the trials, those a warm start added

    def text(self) -> str:
        at = "final values of full-budget trials" if self.epoch is None else f"values at epoch {self.epoch}"
        objective = f"; objective {self.objective}, the study's own" if self.objective else ""
        added = f", {self.warm_started} of them added by a warm start" if self.warm_started else ""
        lines = [
            f"parameter importances of {self.study} ({self.evaluator}; {self.trials} trials{added}, {at}"
            f"{objective}):",
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


def importances(
    study_url: str,
    study_name: str | Sequence[str],
    evaluator: str = IMPORTANCE_EVALUATORS[0],
    *,
    at_epoch: int | None = None,
    seed: int = 0,
    min_trials: int = MIN_IMPORTANCE_TRIALS,
) -> Importances:
    """Parameter importances of a sweep's study (Optuna's PED-ANOVA or fANOVA), or of several
    studies of one space and objective pooled (the replicates of a search).

    Which values: by default each COMPLETE trial's final value (every one ran the full budget).
    A PRUNED trial's last value was measured after fewer epochs, so mixing it in would rank
    parameters by how long ASHA let their trials run; `at_epoch` instead compares every trial
    (COMPLETE or PRUNED) that reached that epoch at that epoch, e.g. ASHA's grace period, which
    all of them reach. Parameters are the space's, as named in its file (a conv set is one).
    """
    make = EVALUATORS.get(evaluator)
    if make is None:
        raise ConfigError(
            f"unknown importance evaluator {evaluator!r}: choose one of {', '.join(IMPORTANCE_EVALUATORS)}"
        )
    names = [study_name] if isinstance(study_name, str) else list(study_name)
    loaded = [load_recorded(study_url, name) for name in names]
    study, space = loaded[0]
    for (other, other_space), name in zip(loaded[1:], names[1:], strict=True):
        if other.direction != study.direction or other_space.scheduler.metric != space.scheduler.metric:
            raise AshaTuneError(f"importances: study {name} optimises another objective than {names[0]}")
    rows, unreadable, warm = [], [], 0
    for (one, _), name in zip(loaded, names, strict=True):
        for trial in one.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            value = trial.value if at_epoch is None else trial.intermediate_values.get(at_epoch)
            if at_epoch is None and trial.state != TrialState.COMPLETE:
                continue
            if value is None or not math.isfinite(value) or VALUES_ATTR not in trial.user_attrs:
                continue
            try:
                rows.append((_space_params(space, trial.user_attrs[VALUES_ATTR]), value))
            except UnexpressibleError as err:  # values the recorded space no longer takes
                unreadable.append(f"{name} trial {trial.number} left out: {err}")
                continue
            warm += WARM_START_ATTR in trial.user_attrs
    which = "COMPLETE trials" if at_epoch is None else f"trials that reached epoch {at_epoch}"
    label = ", ".join(names)
    if len(rows) < min_trials:
        what = f"study {label} has" if len(names) == 1 else f"studies {label} have"
        raise AshaTuneError(f"parameter importances need at least {min_trials} {which}; {what} {len(rows)}")
    scratch = optuna.create_study(direction=study.direction)
    scratch.add_trials([optuna.trial.create_trial(params=p, distributions=d, value=v) for (p, d), v in rows])
    searched = list(dict.fromkeys(name for (p, _), _ in rows for name in p))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = optuna.importance.get_param_importances(scratch, evaluator=make(len(rows), seed))
    notes = tuple(dict.fromkeys([*unreadable, *(str(w.message) for w in caught)]))
    left_out = tuple(n for n in searched if n not in values)
    s = space.scheduler
    objective = f"{s.metric} ({s.mode}; selection {space.selection.protocol})"
    return Importances(label, evaluator, at_epoch, len(rows), dict(values), left_out, notes, objective, warm)
