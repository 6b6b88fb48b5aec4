"""A sweep's saved settings (sweep.json): what `resume` reads back, its hints, and the runtime
options `resume` replaces."""

from __future__ import annotations

from asha_tune.cli import main
from asha_tune.cluster.processes import free_port
from asha_tune.spaces import load_space
from asha_tune.sweep import SweepSettings
from asha_tune.sweep.study import create_study
from asha_tune.tracking import Tracker
from asha_tune.trial.config import Runtime


def saved_sweep(tmp_path, name: str, **extra) -> SweepSettings:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = load_space("quickstart", ["train.epochs=1"])
    tracker = Tracker(tracking)
    parent = tracker.start_run(tracker.experiment(space.name), name)
    settings = SweepSettings(
        name=name,
        space=space,
        results_dir=tmp_path / "results",
        tracking_uri=tracking,
        study_url=f"sqlite:///{tmp_path / 'optuna.db'}",
        parent_run_id=parent,
        runtime=Runtime(data_root=tmp_path / "pacs", device="cpu"),
        **extra,
    )
    settings.save()
    create_study(settings.study_url, name, space)
    return settings


def test_resume_takes_a_new_address_and_refuses_a_dead_one_at_once(tmp_path, pacs_root, capsys, monkeypatch):
    # The sweep was launched on a cluster that is gone; `resume --address` points it elsewhere.
    # Nothing listens at the new address either: resume says so in one line, before Ray (which
    # would retry for minutes) and before anything is saved.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    settings = saved_sweep(tmp_path, "moved", address="127.0.0.1:1")
    new = f"127.0.0.1:{free_port()}"
    code = main(
        [
            "resume",
            "moved",
            "--results-dir",
            str(tmp_path / "results"),
            "--address",
            new,
            "--data-root",
            str(pacs_root),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    assert err[0].startswith(
        f"asha-tune resume: error: --address {new}: cannot reach a Ray cluster (nothing listens there)"
    ), err
    assert SweepSettings.load("moved", tmp_path / "results") == settings  # nothing saved
