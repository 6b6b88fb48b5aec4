"""`launch --rehearse`: simulated figures, the records marked, and every reader refusing them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from asha_tune.errors import AshaTuneError, ConfigError
from asha_tune.spaces import load_space
from asha_tune.sweep.rehearsal import load_state, quality, rehearsal_summary, simulated_metrics
from asha_tune.sweep.settings import Rehearsal, SweepSettings
from asha_tune.sweep.study import create_study, load_recorded
from asha_tune.trial.config import Runtime

A = {"shaping.p0": 0.3, "shaping.convs": [1, 4]}
B = {"shaping.p0": 0.6, "shaping.convs": [2]}


def test_a_configuration_has_its_own_curve_the_same_everywhere_and_the_seed_adds_noise():
    curve = [simulated_metrics(A, 0, e, 4, "val_acc", "max")["val_acc"] for e in (1, 2, 3, 4)]
    assert curve == [simulated_metrics(A, 0, e, 4, "val_acc", "max")["val_acc"] for e in (1, 2, 3, 4)]
    assert quality(A) != quality(B)
    assert 0 <= quality(A) < 1
    other_seed = [simulated_metrics(A, 1, e, 4, "val_acc", "max")["val_acc"] for e in (1, 2, 3, 4)]
    assert other_seed != curve
    assert max(abs(a - b) for a, b in zip(curve, other_seed, strict=True)) < 5
    last = simulated_metrics(A, 0, 4, 4, "val_acc", "max")
    assert {"epoch", "train_loss", "source_acc", "val_acc", "target_acc"} <= set(last)
    assert last["epoch"] == 4.0


def test_a_score_no_rehearsal_simulates_is_reported_in_the_spaces_direction():
    up = simulated_metrics(A, 0, 3, 4, "target_entropy", "max")
    down = simulated_metrics(A, 0, 3, 4, "target_entropy", "min")
    assert up["target_entropy"] == up["val_acc"]
    assert down["target_entropy"] == 100 - down["val_acc"]


def test_a_rehearsal_checkpoint_that_does_not_read_is_one_clear_error(tmp_path):
    bad = tmp_path / "trial.pt"
    bad.write_text("{not json")
    with pytest.raises(AshaTuneError, match="cannot read the rehearsal checkpoint"):
        load_state(bad)
    good = tmp_path / "good.pt"
    good.write_text(json.dumps({"epoch": 2, "history": []}))
    assert load_state(good)["epoch"] == 2


def test_a_rehearsal_ends_with_its_counts_never_a_best_trial():
    trials = [SimpleNamespace(status=s) for s in ("completed", "pruned", "pruned")]
    line = rehearsal_summary(trials, load_space("quickstart"))
    assert line == (
        "rehearsal: 3 of 8 trials recorded in MLflow and Optuna (1 completed, 2 pruned); "
        "the scores are simulated, not results"
    )


def test_a_rehearsals_study_is_marked_and_warm_starts_refuse_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = load_space("quickstart")
    create_study(url, "real", space)
    create_study(url, "rehearsed", space, rehearsal=True)
    load_recorded(url, "real")  # a real sweep's reads
    with pytest.raises(AshaTuneError, match="rehearsal's .*warm starts refuse it"):
        load_recorded(url, "rehearsed")


def test_compare_and_warm_starts_refuse_a_rehearsals_records(tmp_path):
    from asha_tune.tracking import Tracker
    from asha_tune.tracking.records import sweep_parents

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracker.experiment("quickstart")
    tracker.start_run(experiment, "real", tags={"asha_tune.sweep": "real"})
    tracker.start_run(experiment, "rh", tags={"asha_tune.sweep": "rh", "asha_tune.rehearsal": "true"})
    assert sweep_parents(tracker, "real")[0].data.tags["asha_tune.sweep"] == "real"
    with pytest.raises(ConfigError) as err:
        sweep_parents(tracker, "rh")
    assert str(err.value) == (
        "sweep rh is a rehearsal (launch --rehearse: simulated trials): its scores are not results, "
        "so compare, report, confirm and warm starts refuse it"
    )


def test_confirm_refuses_a_rehearsal(tmp_path):
    from asha_tune.api import confirm

    settings = SweepSettings(
        name="rh",
        space=load_space("quickstart"),
        results_dir=tmp_path,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        study_url=f"sqlite:///{tmp_path / 'optuna.db'}",
        runtime=Runtime(),
        rehearse=Rehearsal(epoch_s=0.1),
    )
    with pytest.raises(ConfigError, match="is a rehearsal"):
        confirm(settings, top=2, seeds=2)


def test_a_rehearsal_is_saved_with_its_sweep_so_resume_rehearses_too(tmp_path):
    settings = SweepSettings(
        name="rh",
        space=load_space("quickstart"),
        results_dir=tmp_path,
        tracking_uri="sqlite:///x.db",
        study_url="sqlite:///y.db",
        runtime=Runtime(),
        rehearse=Rehearsal(epoch_s=0.25),
    )
    settings.save()
    assert SweepSettings.load("rh", tmp_path).rehearse == Rehearsal(epoch_s=0.25)


def test_the_rehearsal_module_imports_no_torch():
    import subprocess

    code = "import asha_tune.sweep.rehearsal, asha_tune.sweep.trainable, sys; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[3]
    )
    assert out.stdout.strip() == "False", out.stderr[-2000:]
