"""Checkpoints in sweeps: when a trial writes one, and what a finished sweep leaves on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from asha_tune.spaces import SchedulerSettings
from asha_tune.sweep.checkpoints import CHECKPOINT_FILE, ENDED_MARKER, asha_rungs, checkpoint_due
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
    assert restored_state(tune.Checkpoint.from_directory(str(full)), load, 3) == (True, None)
