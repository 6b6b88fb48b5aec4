"""Ray Tune's side of the search: an Optuna-study searcher and an ASHA that survives resume."""

from __future__ import annotations

import math
import pickle
from typing import Any

from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

from asha_tune.sweep import ray_compat
from asha_tune.sweep.keys import FAILED_KEY, TRIAL_NUMBER_KEY, VALUES_KEY
from asha_tune.sweep.study import WARM_PREFIX, StudyHandle, TrialState


class StudySearcher(Searcher):
    """Suggests trials from an Optuna study and tells it how each one ended.

    Unlike Ray's OptunaSearch, a trial that ASHA stopped early is told PRUNED (with the value of
    every epoch it ran), a crashed or diverged one FAIL, and only a trial that ran every epoch
    COMPLETE.
    """

    def __init__(self, handle: StudyHandle, metric: str, mode: str, max_epochs: int):
        super().__init__(metric=metric, mode=mode)
        self.handle = handle
        self.max_epochs = max_epochs
        self.numbers: dict[str, int] = {}  # Ray trial id -> Optuna trial number
        self.ended: set[str] = set()

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        number, values = self.handle.ask(trial_id, known=set(self.numbers.values()))
        self.numbers[trial_id] = number
        return {TRIAL_NUMBER_KEY: number, VALUES_KEY: values}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.numbers and self.metric in result:
            self.handle.report(self.numbers[trial_id], int(result["epoch"]), float(result[self.metric]))

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id not in self.numbers or trial_id in self.ended:
            return
        self.ended.add(trial_id)
        number = self.numbers[trial_id]
        result = result or {}
        value = result.get(self.metric)
        if result and value is not None:
            self.on_trial_result(trial_id, result)  # Tune withholds the epoch that triggered a stop
        if error or value is None or not math.isfinite(value) or result.get(FAILED_KEY):
            self.handle.tell(number, TrialState.FAIL)
        elif result.get("epoch", 0) < self.max_epochs:
            self.handle.tell(number, TrialState.PRUNED)
        else:
            self.handle.tell(number, TrialState.COMPLETE, float(value))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"numbers": self.numbers, "ended": self.ended}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.numbers, self.ended = state["numbers"], state["ended"]


class ResumableASHA(ASHAScheduler):
    """ASHA whose rungs are rebuilt from the study after `Tuner.restore`.

    Ray restores trials but not the scheduler's record of earlier results, so a resumed sweep
    would compare new trials against nothing. Before its first trial this scheduler replays every
    stored intermediate value through its own public hooks.

    A warm-started study's added trials (warm_start.py) are replayed too, so they sit in the
    rungs from the start: their per-epoch values are of the same metric, from trials with the same
    settings and budget, which is what a rung records, and a new trial that the warm start's
    trials already beat at a rung is stopped there instead of spending the budget they spent. The
    cost: rungs filled by a strong grid stop more new trials early. A resumed sweep replays the
    same study, so it decides as the first run did.
    """

    def __init__(self, handle: StudyHandle, *, time_attr: str, metric: str, mode: str, **kwargs: Any):
        super().__init__(time_attr=time_attr, metric=metric, mode=mode, **kwargs)
        self.handle = handle
        self.attr_names = (time_attr, metric)
        self.replayed = False

    def replay_history(self, controller: Any = None) -> int:
        self.replayed = True
        time_attr, metric = self.attr_names
        history = self.handle.history()
        for trial_id, per_epoch in history:
            stand_in = ray_compat.stand_in_trial(trial_id)
            super().on_trial_add(controller, stand_in)
            for epoch, value in sorted(per_epoch.items()):
                super().on_trial_result(controller, stand_in, {time_attr: epoch, metric: value})
            super().on_trial_remove(controller, stand_in)
        if history:
            warm = sum(1 for trial_id, _ in history if trial_id.startswith(WARM_PREFIX))
            added = f" ({warm} of them from the warm start)" if warm else ""
            print(f"ASHA: rungs rebuilt from the results of {len(history)} earlier trials{added}", flush=True)
        return len(history)

    def on_trial_add(self, controller: Any, trial: Any) -> None:
        if not self.replayed:
            self.replay_history(controller)
        super().on_trial_add(controller, trial)
