"""Checkpoints in sweeps: when a trial writes one, and what a finished sweep leaves on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from asha_tune.errors import AshaTuneError
from asha_tune.spaces import SchedulerSettings
from asha_tune.sweep.checkpoints import (
    CHECKPOINT_FILE,
    ENDED_MARKER,
    SUPERSEDED_MARKER,
    asha_rungs,
    checkpoint_due,
)
from asha_tune.sweep.trainable import restored_state


@pytest.mark.parametrize(
    ("grace", "rf", "epochs"), [(1, 2, 4), (2, 2, 4), (1, 3, 30), (1, 4, 4), (3, 1.5, 30)]
)
def test_asha_rungs_are_the_epochs_where_rays_asha_decides(grace, rf, epochs):
    settings = SchedulerSettings(kind="asha", grace_period=grace, reduction_factor=rf)
    ray_asha = ASHAScheduler(
        time_attr="epoch", metric="m", mode="max", max_t=epochs, grace_period=grace, reduction_factor=rf
    )
    # A guard on Ray's private bracket layout: ASHA decides at the first epoch >= a milestone.
    milestones = [milestone for milestone, _ in ray_asha._brackets[0]._rungs]
    assert asha_rungs(settings, epochs) == {int(-(-m // 1)) for m in milestones}
    assert asha_rungs(SchedulerSettings(kind="fifo"), epochs) == frozenset()


def written(epochs: int, rungs=frozenset(), epoch_s: float = 1.0) -> list[int]:
    """The epochs at which a trial of `epochs` epochs writes a checkpoint."""
    out, last, unsaved = [], 0, 0.0
    for epoch in range(1, epochs + 1):
        unsaved += epoch_s
        if checkpoint_due(epoch, epochs, last, unsaved, frozenset(rungs)):
            out.append(epoch)
            last, unsaved = epoch, 0.0
    return out


def test_checkpoints_double_skip_asha_decisions_and_bound_lost_compute():
    assert written(8) == [2, 4, 8]  # a crash loses at most half of the work done
    assert written(30) == [2, 4, 8, 16, 30]  # the paper's trial: 5 writes, not 30
    assert written(1) == [1]
    # quickstart (ASHA decides at 1, 2, 4): never where the trial may be stopped
    assert written(4, rungs={1, 2, 4}) == [3, 4]
    assert written(30, rungs={1, 3, 9, 27}) == [2, 4, 8, 16, 30]
    assert written(6, rungs={2, 3, 4}) == [5, 6]
    # long epochs: never more than MAX_UNSAVED_S (600 s) of compute at risk
    assert written(6, epoch_s=400) == [2, 4, 6]
    assert written(5, epoch_s=700) == [1, 2, 3, 4, 5]


def test_a_trial_restored_from_an_emptied_or_final_checkpoint_has_nothing_to_redo(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    torch.save({"epoch": 3}, full / CHECKPOINT_FILE)
    emptied = tmp_path / "emptied"
    emptied.mkdir()
    (emptied / ENDED_MARKER).write_text("ended")

    def load(path: Path) -> dict:
        return torch.load(path, weights_only=True)

    assert restored_state(None, load, 4) == (False, None)
    assert restored_state(tune.Checkpoint.from_directory(str(full)), load, 4) == (False, {"epoch": 3})
    # A trial whose checkpoint was emptied, or holds its last epoch, has nothing left to do.
    assert restored_state(tune.Checkpoint.from_directory(str(emptied)), load, 4) == (True, None)
    assert restored_state(tune.Checkpoint.from_directory(str(full)), load, 3) == (True, {"epoch": 3})


def load_or_refuse(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=True)
    except Exception:
        raise AshaTuneError(f"cannot read checkpoint {path}") from None


def test_a_trial_whose_restored_checkpoint_was_replaced_goes_on_from_its_newest_readable_one(tmp_path):
    """After a SIGKILL Tune's saved state may name a checkpoint that was emptied (or deleted) when
    the trial reported a newer one; the newest that reads is used, a half-written one passed over."""
    trial = tmp_path / "trial"
    for index, epoch in ((1, 2), (3, 4)):
        (trial / f"checkpoint_{index:06d}").mkdir(parents=True)
        torch.save({"epoch": epoch}, trial / f"checkpoint_{index:06d}" / CHECKPOINT_FILE)
    (trial / "checkpoint_000004").mkdir()
    (trial / "checkpoint_000004" / CHECKPOINT_FILE).write_bytes(b"PK\x03")  # the kill came mid-copy
    (trial / "checkpoint_000002").mkdir()  # a folder without a checkpoint is not one
    named = tune.Checkpoint(path=str(trial / "checkpoint_000000"))  # deleted since Tune saved
    superseded = trial / "checkpoint_000000"
    superseded.mkdir()
    (superseded / SUPERSEDED_MARKER).write_text("superseded")  # emptied since Tune saved
    assert restored_state(named, load_or_refuse, 6) == (False, {"epoch": 4})
    assert restored_state(named, load_or_refuse, 4) == (True, {"epoch": 4})  # its final epoch
    # The one Tune named is used while it is there, even when a newer one exists.
    older = tune.Checkpoint(path=str(trial / "checkpoint_000001"))
    assert restored_state(older, load_or_refuse, 6) == (False, {"epoch": 2})
    # One that Tune named and that cannot be read is an error, not a silent fresh start.
    with pytest.raises(AshaTuneError):
        restored_state(tune.Checkpoint(path=str(trial / "checkpoint_000004")), load_or_refuse, 6)
    # None left at all: the trial starts afresh.
    assert restored_state(
        tune.Checkpoint(path=str(tmp_path / "gone" / "checkpoint_000000")), load_or_refuse, 6
    ) == (
        False,
        None,
    )
