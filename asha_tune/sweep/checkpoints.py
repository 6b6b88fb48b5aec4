"""Which checkpoints a sweep writes and which it keeps.

A checkpoint of the trial (model, optimiser, every generator) is ~89 MB for ResNet-18, and on
a fast device writing one takes about as long as an epoch. Sweeps need them only for two things:
a crashed trial is retried from its last one, and an interrupted sweep resumes its unfinished
trials from theirs. ASHA itself needs none: it stops trials, it never pauses them. So a trial
writes one when the epochs since its last checkpoint reach the epochs before it (at least two:
epochs 2, 4, 8, ...), or when `MAX_UNSAVED_S` of compute would otherwise be at risk, and never
at an epoch where ASHA may stop it (it writes at the next one instead). A retry then loses at
most half of a trial's work and at most `MAX_UNSAVED_S`. After its last epoch a trial writes
its final weights (`final_weights`: the model, its configuration and history, 45 MB; nothing
is left to resume; under selection.epoch best, the selected epoch's model): the best
full-budget trial's are what the sweep keeps for the user.

Once a trial has finished or been stopped, nothing resumes it, so its checkpoints are emptied
(`CheckpointCleanup`), except the best full-budget trial's. A failed trial keeps its latest: a
resume that retries failed trials would go on from it. Ray keeps only each running trial's latest
(`CheckpointConfig(num_to_keep=1)`). An emptied checkpoint keeps an `ENDED` marker: Tune saves
its view of the trials about once a second, so a driver killed just after a trial ended may
resume that trial from its last checkpoint, and the marker tells it there is nothing left to do.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ray.tune import Callback

from asha_tune.spaces import SchedulerSettings
from asha_tune.sweep import ray_compat
from asha_tune.sweep.keys import TRIAL_NUMBER_KEY, DriverState

CHECKPOINT_FILE = "trial.pt"
ENDED_MARKER = "ENDED"  # what an emptied checkpoint folder holds
MAX_UNSAVED_S = 600.0  # compute a crash may cost at most, beyond the doubling rule


def final_weights(state: dict[str, Any]) -> dict[str, Any]:
    """What a trial keeps of its state after its last epoch (`--weights` reads "model"; "classes"
    says what its head's outputs are): under selection.epoch best, the weights of its selected
    epoch (and that epoch's number)."""
    kept: dict[str, Any] = {
        k: state[k] for k in ("config", "epoch", "history", "model", "classes") if k in state
    }
    selected = state.get("selected")
    if selected is not None:
        kept.update(model=selected["model"], selected_epoch=selected["epoch"])
    return kept


def asha_rungs(scheduler: SchedulerSettings, max_epochs: int) -> frozenset[int]:
    """The epochs at which ASHA decides whether a trial goes on (Ray's `_Bracket` milestones)."""
    if scheduler.kind != "asha":
        return frozenset()
    return ray_compat.asha_milestones(scheduler.grace_period, scheduler.reduction_factor, max_epochs)


def checkpoint_due(
    epoch: int,
    epochs: int,
    last_saved: int,
    unsaved_s: float,
    rungs: frozenset[int] = frozenset(),
    max_unsaved_s: float = MAX_UNSAVED_S,
) -> bool:
    """Whether a trial writes a checkpoint after `epoch` (1-based) of `epochs`.

    `last_saved` is the epoch of its last checkpoint (0 for none), `unsaved_s` the compute
    since then.
    """
    if epoch >= epochs:
        return True  # the final weights, kept if the trial turns out best
    if epoch in rungs:
        return False  # ASHA may stop the trial right here: the next epoch writes instead
    return epoch - last_saved >= max(last_saved, 2) or unsaved_s >= max_unsaved_s


class CheckpointCleanup(DriverState, Callback):
    """Empties a trial's checkpoints when it finishes or is stopped, but the best full-budget one's.

    "Best" follows `reports.best_trial`: the best last value of `metric` among trials that ran
    every epoch, the lower trial number on a tie. The state lives in the trials Tune passes in,
    so a resumed sweep needs nothing restored.
    """

    def __init__(self, metric: str, mode: str, max_epochs: int):
        self.metric, self.mode, self.max_epochs = metric, mode, max_epochs
        self._reset()

    def _reset(self) -> None:
        self._cleaned: set[str] = set()

    def _full_budget(self, trial: Any) -> bool:
        result = trial.last_result or {}
        value = result.get(self.metric)
        # A failed trial's last report carries a NaN metric, so it is never the one kept.
        return (
            result.get("epoch", 0) >= self.max_epochs
            and isinstance(value, (int, float))
            and math.isfinite(value)
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Tune updates the ending trial's status only after it tells callbacks.
        ended = [t for t in trials if t is trial or t.status == "TERMINATED"]
        full = [t for t in ended if self._full_budget(t)]
        full.sort(key=lambda t: int(t.config.get(TRIAL_NUMBER_KEY, 0)))
        pick = max if self.mode == "max" else min
        best = pick(full, key=lambda t: t.last_result[self.metric]) if full else None
        for other in ended:
            if other is not best and other.trial_id not in self._cleaned:
                retire_checkpoints(other)
                self._cleaned.add(other.trial_id)
        if best is not None:
            self._cleaned.discard(best.trial_id)  # deleted once a better trial ends


def retire_checkpoints(trial: Any) -> None:
    """Empty every checkpoint folder of a finished trial, on whatever filesystem Ray keeps them,
    leaving the marker."""
    from pyarrow.fs import FileSelector, FileType

    fs, folder = ray_compat.trial_storage(trial)
    for info in fs.get_file_info(FileSelector(folder, allow_not_found=True)):
        if info.type == FileType.Directory and info.base_name.startswith("checkpoint_"):
            fs.delete_dir_contents(info.path)
            with fs.open_output_stream(f"{info.path}/{ENDED_MARKER}") as marker:
                marker.write(b"this trial ended; its checkpoint was deleted\n")


def kept_checkpoint(sweep_dir: Path, trial_number: int) -> Path | None:
    """The checkpoint file a finished sweep kept for trial `trial_number`, if any (local storage)."""
    for params in sweep_dir.glob("*/params.json"):
        try:
            number = json.loads(params.read_text()).get(TRIAL_NUMBER_KEY)
        except (OSError, ValueError):
            continue
        if number == trial_number:
            found = sorted(params.parent.glob(f"checkpoint_*/{CHECKPOINT_FILE}"))
            if found:
                return found[-1]
    return None
