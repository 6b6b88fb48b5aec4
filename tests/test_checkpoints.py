"""Checkpoints in sweeps: when a trial writes one, and what a finished sweep leaves on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from asha_tune.spaces import SchedulerSettings, load_space
from asha_tune.sweep import SweepSettings
from asha_tune.sweep.checkpoints import CHECKPOINT_FILE, ENDED_MARKER, asha_rungs, checkpoint_due
from asha_tune.sweep.run import launch
from asha_tune.sweep.trainable import restored_state
from asha_tune.trial.config import Runtime
from asha_tune.trial.model import build_model


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


def test_a_finished_sweep_keeps_only_the_best_trials_final_weights(tmp_path, pacs_root, shared_cache, capsys):
    # As the end-to-end sweep test: one trial at a time makes ASHA's decisions deterministic.
    tree = {
        "name": "disk",
        "data": {"source": "art_painting", "targets": ["cartoon"], "image_size": 32, "limit_per_domain": 35},
        "train": {"epochs": 4, "batch_size": 16, "weights": "none", "seed": 0},
        "shaping": {"mode": "random"},
        "search": {"algorithm": "optuna", "num_trials": 6, "max_concurrent": 1, "seed": 0},
        "scheduler": {
            "kind": "asha",
            "grace_period": 1,
            "reduction_factor": 4,
            "metric": "train_loss",
            "mode": "min",
        },
        "resources": {"cpu": 1},
        "parameters": {
            "shaping.convs": {
                "type": "conv_subset",
                "allowed": [1, 2, 3, 4, 5, 6, 7],
                "min_size": 1,
                "max_size": 2,
            },
            "shaping.p0": {"type": "float", "low": 0.0, "high": 0.9},
        },
    }
    path = tmp_path / "disk.yaml"
    path.write_text(yaml.safe_dump(tree))
    settings = SweepSettings(
        name="disk",
        space=load_space(path),
        results_dir=tmp_path / "results",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        study_url=f"sqlite:///{tmp_path / 'optuna.db'}",
        runtime=Runtime(data_root=pacs_root, cache_dir=shared_cache, device="cpu"),
        num_cpus=2,
    )
    outcome = launch(settings)
    assert outcome.finished and outcome.best is not None and outcome.best.status == "completed"
    statuses = {t.status for t in outcome.trials}
    assert statuses == {"completed", "pruned"}

    results = [
        json.loads(line)
        for p in settings.sweep_dir.glob("*/result.json")
        for line in p.read_text().splitlines()
    ]
    assert sum(1 for r in results if r.get("checkpoint_dir_name")) < len(results) / 2  # not every epoch
    # One worker process ran every trial (reuse_actors), paying for its start and imports once.
    assert len({r["pid"] for r in results}) == 1 < len(outcome.trials)

    (kept,) = settings.sweep_dir.rglob(CHECKPOINT_FILE)
    number = json.loads((kept.parent.parent / "params.json").read_text())["trial_number"]
    assert number == outcome.best.number
    state = torch.load(kept, weights_only=True)
    assert state["epoch"] == 4 and state["history"][-1]["train_loss"] == outcome.best.metrics["train_loss"]
    assert set(state) == {"config", "epoch", "history", "model"}  # weights: no optimiser to resume
    assert build_model(str(kept)).fc.weight.equal(state["model"]["fc.weight"])
    assert f"its final weights: {kept}" in capsys.readouterr().out
    for folder in settings.sweep_dir.glob("*/checkpoint_*"):
        if folder != kept.parent:
            assert [p.name for p in folder.iterdir()] == [ENDED_MARKER]
    # The footprint: those weights (45 MB) and the sweep's records (a few hundred KB).
    total = sum(p.stat().st_size for p in settings.sweep_dir.rglob("*") if p.is_file())
    assert kept.stat().st_size < 50_000_000 and total < kept.stat().st_size + 2_000_000
