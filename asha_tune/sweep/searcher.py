"""Ray Tune's side of the search: an Optuna-study searcher and an ASHA that survives resume."""

from __future__ import annotations

import math
import pickle
import threading
from typing import Any

from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher

from asha_tune.sweep import ray_compat
from asha_tune.sweep.keys import FAILED_KEY, TRIAL_NUMBER_KEY, VALUES_KEY
from asha_tune.sweep.study import WARM_PREFIX, StudyHandle, TrialState
from asha_tune.sweep.writer import WRITE_EVERY_S, RecordWriter, writer_for


class StudySearcher(Searcher):
    """Suggests trials from an Optuna study and tells it how each one ended.

    Unlike Ray's OptunaSearch, a trial that ASHA stopped early is told PRUNED (with the value of
    every epoch it ran), a crashed or diverged one FAIL, and only a trial that ran every epoch
    COMPLETE.

    With `records` (the sweep's RecordWriter, writer.py) only the ask is made on Tune's event
    loop: a trial's user attributes, intermediate values and end are written in the background,
    and all of them before Tune saves its snapshot (`save`). The sampler then sees a trial's end a
    moment later; a reproducible sweep (`fresh_asks`) waits for every write before each ask, so
    its sampler sees exactly what it would have seen.
    """

    def __init__(
        self,
        handle: StudyHandle,
        metric: str,
        mode: str,
        max_epochs: int,
        records: str | None = None,
        fresh_asks: bool = False,
    ):
        super().__init__(metric=metric, mode=mode)
        self.handle = handle
        self.max_epochs = max_epochs
        self.records = records
        self.fresh_asks = fresh_asks
        self.numbers: dict[str, int] = {}  # Ray trial id -> Optuna trial number
        self.ended: set[str] = set()
        self._caches()

    def _caches(self) -> None:
        self._known = set(self.numbers.values())
        self._lock = threading.Lock()
        self._pending: dict[int, dict[str, Any]] = {}  # trial number -> what waits to be written
        self._writes: Any = None  # the writer's StudyHandle (in the records process, if any)

    def __getstate__(self) -> dict[str, Any]:
        caches = ("_known", "_lock", "_pending", "_writes")
        return {k: v for k, v in self.__dict__.items() if k not in caches}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._caches()

    @property
    def _writer(self) -> RecordWriter | None:
        return writer_for(self.records, self.handle.space.num_trials) if self.records else None

    def suggest(self, trial_id: str) -> Any:  # a config, or Searcher.FINISHED
        writer = self._writer
        if writer is not None and self.fresh_asks:
            writer.flush()
        asked = self.handle.ask(trial_id, known=self._known, attrs=writer is None)
        if asked is None:  # the study holds every trial the sweep asks for (a resumed sweep)
            return Searcher.FINISHED
        number, values = asked
        self.numbers[trial_id] = number
        self._known.add(number)
        if writer is not None:
            self._queue(number, WRITE_EVERY_S, attrs=(values, trial_id))
        return {TRIAL_NUMBER_KEY: number, VALUES_KEY: values}

    def _queue(self, number: int, wait_s: float, **change: Any) -> None:
        writer = self._writer
        if writer is None:  # at once, on the event loop
            self._write_now(number, change)
            return
        if "tell" in change:  # after the trial's end in MLflow: what a resume counts as ended
            state, value = change["tell"]
            writer.touch(
                number, "tell", lambda: self._writer_handle.tell(number, state, value), wait_s, hold=True
            )
            return
        with self._lock:
            pending = self._pending.setdefault(number, {"values": {}})
            if "value" in change:
                step, value = change.pop("value")
                pending["values"].setdefault(step, value)
            pending.update(change)
        writer.touch(number, "optuna", lambda: self._write(number), wait_s)

    @property
    def _writer_handle(self) -> Any:
        """The study as the writer's thread writes it: in the records process, if the sweep has one."""
        if self._writes is None:
            writer = self._writer
            assert writer is not None
            self._writes = writer.made(
                self.handle, StudyHandle, self.handle.url, self.handle.name, self.handle.space
            )
        return self._writes

    def _write(self, number: int) -> None:
        with self._lock:
            pending = self._pending.pop(number, None)
        if pending is not None:
            self._write_now(number, pending, self._writer_handle)

    def _write_now(self, number: int, change: dict[str, Any], handle: Any = None) -> None:
        values = dict([change["value"]]) if "value" in change else change.get("values")
        (handle or self.handle).write(number, change.get("attrs"), values, change.get("tell"))

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.numbers and self.metric in result:
            value = float(result[self.metric])
            if math.isfinite(value):
                self._queue(self.numbers[trial_id], WRITE_EVERY_S, value=(int(result["epoch"]), value))

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
            self._queue(number, 0.0, tell=(TrialState.FAIL, None))
        elif result.get("epoch", 0) < self.max_epochs:
            self._queue(number, 0.0, tell=(TrialState.PRUNED, float(value)))  # its last value
        else:
            self._queue(number, 0.0, tell=(TrialState.COMPLETE, float(value)))

    def save(self, checkpoint_path: str) -> None:
        """Tune saves the searcher with its experiment snapshot: the study is written up to it."""
        if (writer := self._writer) is not None:
            writer.flush()
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"numbers": self.numbers, "ended": self.ended}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.numbers, self.ended = state["numbers"], state["ended"]
        self._known = set(self.numbers.values())


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
