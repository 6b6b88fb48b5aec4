"""Checkpoints in sweeps: when a trial writes one, and what a finished sweep leaves on disk."""

from __future__ import annotations

import json

import torch
import yaml

from asha_tune.api import launch
from asha_tune.spaces import load_space
from asha_tune.sweep import SweepSettings
from asha_tune.sweep.checkpoints import CHECKPOINT_FILE, ENDED_MARKER, SUPERSEDED_MARKER
from asha_tune.trial.config import Runtime
from asha_tune.trial.model import build_model


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
    assert outcome.finished
    assert outcome.best is not None
    assert outcome.best.status == "completed"
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
    assert state["epoch"] == 4
    assert state["history"][-1]["train_loss"] == outcome.best.metrics["train_loss"]
    # weights: no optimiser to resume; the class order says what the head's outputs are
    assert set(state) == {"config", "epoch", "history", "model", "classes"}
    assert state["classes"] == ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
    assert build_model(str(kept)).fc.weight.equal(state["model"]["fc.weight"])
    assert f"its final weights: {kept}" in capsys.readouterr().out
    for folder in settings.sweep_dir.glob("*/checkpoint_*"):
        if folder.parent == kept.parent.parent and folder != kept.parent:  # replaced as it ran
            assert [p.name for p in folder.iterdir()] == [SUPERSEDED_MARKER]
        elif folder != kept.parent:  # the other trials' folders, emptied when they ended
            assert [p.name for p in folder.iterdir()] == [ENDED_MARKER]
    # The footprint: those weights (45 MB) and the sweep's records (a few hundred KB).
    total = sum(p.stat().st_size for p in settings.sweep_dir.rglob("*") if p.is_file())
    assert kept.stat().st_size < 50_000_000
    assert total < kept.stat().st_size + 2_000_000
