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
(`CheckpointCleanup`), except the best full-budget trial's. A trial that failed with an error
keeps its latest: Tune's retries of it (`search.max_failures`) went on from it, and once they
are spent nothing does (`resume` does not retry a failed trial: resume_policy.py); it is only
left on disk. A running trial keeps only its latest: a new one empties the older ones
(`CheckpointCleanup.on_checkpoint`), leaving a `SUPERSEDED` marker, and an emptied one of an
ended trial keeps an `ENDED` marker. The folders stay, and Ray deletes none (no `num_to_keep`),
because Tune saves its view of the trials at most every 10 s and syncs it in the background: a
driver killed in between resumes a trial from the checkpoint that view names, which Ray refuses
to restore from once it is gone. From a superseded one the trial goes on from its newest
(`restorable_checkpoints`); from an ended one there is nothing left to do.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback

from asha_tune.spaces import SchedulerSettings
from asha_tune.sweep import ray_compat
from asha_tune.sweep.keys import TRIAL_NUMBER_KEY, DriverState

CHECKPOINT_FILE = "trial.pt"
ENDED_MARKER = "ENDED"  # what an emptied checkpoint folder of an ended trial holds
SUPERSEDED_MARKER = "SUPERSEDED"  # what a running trial's emptied older checkpoint holds
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

    "Best" follows `tracking.best.best_trial`: the best last value of `metric` among trials that ran
    every epoch, the lower trial number on a tie. The state lives in the trials Tune passes in,
    so a resumed sweep needs nothing restored: its first trial to end has every ended trial looked
    at once, and each later one only itself (no cost that grows with the sweep).

    With `records` (the sweep's RecordWriter, writer.py), a checkpoint is emptied only once the
    records of its trial's reports so far are written: a driver killed in between resumes the
    trial from a checkpoint whose epochs are all in MLflow and Optuna.
    """

    def __init__(self, metric: str, mode: str, max_epochs: int, records: str | None = None):
        self.metric, self.mode, self.max_epochs = metric, mode, max_epochs
        self.records = records
        self._reset()

    def _reset(self) -> None:
        self._cleaned: set[str] = set()
        self._best: Any = None
        self._scanned = False

    def _after_records(self, trial: Any, action: Callable[[], None]) -> None:
        if self.records is None:
            action()
        else:
            from asha_tune.sweep.writer import writer_for

            writer_for(self.records).after(int(trial.config[TRIAL_NUMBER_KEY]), action)

    def _full_budget(self, trial: Any) -> bool:
        result = trial.last_result or {}
        value = result.get(self.metric)
        # A failed trial's last report carries a NaN metric, so it is never the one kept.
        return (
            result.get("epoch", 0) >= self.max_epochs
            and isinstance(value, (int, float))
            and math.isfinite(value)
        )

    def _beats(self, trial: Any, best: Any) -> bool:
        a, b = trial.last_result[self.metric], best.last_result[self.metric]
        if a == b:
            return int(trial.config.get(TRIAL_NUMBER_KEY, 0)) < int(best.config.get(TRIAL_NUMBER_KEY, 0))
        return a > b if self.mode == "max" else a < b

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        """A running trial reported a new checkpoint: its older ones are emptied."""
        fs, folder = ray_compat.trial_storage(trial)
        keep = checkpoint.path
        self._after_records(trial, lambda: empty_folders(fs, folder, SUPERSEDED_MARKER, keep=keep))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._scanned:
            ended = [trial]
        else:  # Tune updates the ending trial's status only after it tells callbacks.
            ended = [t for t in trials if t is trial or t.status == "TERMINATED"]
            ended.sort(key=lambda t: int(t.config.get(TRIAL_NUMBER_KEY, 0)))
            self._scanned = True
        for t in ended:
            if self._full_budget(t) and (self._best is None or self._beats(t, self._best)):
                previous, self._best = self._best, t
                if previous is not None:
                    self._retire(previous)  # deleted once a better trial ends
            elif t is not self._best:
                self._retire(t)

    def _retire(self, trial: Any) -> None:
        if trial.trial_id in self._cleaned:
            return
        self._cleaned.add(trial.trial_id)
        fs, folder = ray_compat.trial_storage(trial)
        self._after_records(trial, lambda: empty_folders(fs, folder, ENDED_MARKER))


MARKER_TEXT = {
    ENDED_MARKER: b"this trial ended; its checkpoint was deleted\n",
    SUPERSEDED_MARKER: b"the trial wrote a newer checkpoint; this one was deleted\n",
}


def empty_folders(fs: Any, folder: str, marker: str, keep: str | None = None) -> None:
    """Empty the checkpoint folders of the trial folder `folder` on the pyarrow filesystem `fs`
    but `keep`, each left holding `marker` alone."""
    from pyarrow.fs import FileSelector, FileType

    keep = keep.rstrip("/") if keep else None
    for info in fs.get_file_info(FileSelector(folder, allow_not_found=True)):
        if info.type != FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        if info.path.rstrip("/") == keep:
            continue
        if marker == SUPERSEDED_MARKER and not holds_a_checkpoint(fs, info.path):
            continue  # already emptied
        fs.delete_dir_contents(info.path)
        with fs.open_output_stream(f"{info.path}/{marker}") as out:
            out.write(MARKER_TEXT[marker])


def holds_a_checkpoint(fs: Any, folder: str) -> bool:
    """Whether a checkpoint folder holds a trial's state or the marker of an emptied one."""
    from pyarrow.fs import FileType

    infos = fs.get_file_info([f"{folder}/{CHECKPOINT_FILE}", f"{folder}/{ENDED_MARKER}"])
    return any(info.type == FileType.File for info in infos)


def restorable_checkpoints(checkpoint: Any) -> list[Any]:
    """The checkpoints a restored trial may start from, in the order to try them.

    The one Tune restored with, if it still holds one. After a SIGKILL, Tune's saved view may
    name a checkpoint that was superseded (or, written by older versions, deleted) once the trial
    reported a newer one: then the trial's checkpoints on disk, newest first (the newest may be
    half-written when the kill came during its copy)."""
    from pyarrow.fs import FileSelector, FileType
    from ray import tune

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    if holds_a_checkpoint(fs, path):
        return [checkpoint]
    parent = path.rsplit("/", 1)[0]
    found = [
        info.path
        for info in fs.get_file_info(FileSelector(parent, allow_not_found=True))
        if info.type == FileType.Directory
        and re.fullmatch(r"checkpoint_\d+", info.base_name)
        and holds_a_checkpoint(fs, info.path)
    ]
    found.sort(key=lambda p: int(p.rsplit("_", 1)[1]), reverse=True)
    return [tune.Checkpoint(path=p, filesystem=fs) for p in found]


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
