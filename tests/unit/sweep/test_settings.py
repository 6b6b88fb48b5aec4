"""A sweep's saved settings (sweep.json): what `resume` reads back, its hints, and the runtime
options `resume` replaces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asha_tune.errors import ConfigError
from asha_tune.spaces import load_space
from asha_tune.sweep import SweepSettings
from asha_tune.sweep.settings import SWEEP_FILE, check_name
from asha_tune.sweep.study import create_study
from asha_tune.tracking import Tracker
from asha_tune.trial.config import Runtime
from tests.helpers.mlflow import mlflow_store


def saved_sweep(tmp_path, name: str, **extra) -> SweepSettings:
    tracking = mlflow_store(tmp_path / "mlflow.db")
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


def test_settings_round_trip_through_sweep_json(tmp_path):
    settings = saved_sweep(tmp_path, "rt", address="127.0.0.1:6379", resource_wait_s=30)
    loaded = SweepSettings.load("rt", tmp_path / "results")
    assert loaded == settings
    assert json.loads((tmp_path / "results" / "rt" / SWEEP_FILE).read_text())["address"] == "127.0.0.1:6379"


def test_an_unknown_sweep_names_the_folder_and_the_sweeps_in_it(tmp_path):
    with pytest.raises(ConfigError, match=r"^no sweep nope in \S+results$"):
        SweepSettings.load("nope", tmp_path / "results")
    saved_sweep(tmp_path, "b-sweep")
    saved_sweep(tmp_path, "a-sweep")
    with pytest.raises(ConfigError, match=r"no sweep nope in \S+ \(sweeps there: a-sweep, b-sweep\)$"):
        SweepSettings.load("nope", tmp_path / "results")


@pytest.mark.parametrize("name", ["has space", "slash/name", "semi;colon", ""])
def test_sweep_names_are_plain(name):
    with pytest.raises(ConfigError, match="use letters, digits"):
        check_name(name)
    assert check_name("rl-10_v2.1") == "rl-10_v2.1"


def test_the_results_folder_and_the_study_url_have_one_name_each(capsys):
    from asha_tune.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["launch", "--space", "quickstart", "--results-dir", "r", "--study-url", "sqlite:///s.db"]
    )
    assert (args.results_dir, args.study_url) == (Path("r"), "sqlite:///s.db")
    for old in ("--storage", "--study-storage"):  # the names of a version never released: gone
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["launch", "--space", "q", old, "x"])
        assert exit_.value.code == 2
        assert f"unrecognized arguments: {old} x" in capsys.readouterr().err


def test_launch_if_exists_resume_continues_a_sweep_only_as_it_was_launched(tmp_path):
    from asha_tune.sweep.settings import continuing

    saved = saved_sweep(tmp_path, "job", address="127.0.0.1:6379", resource_wait_s=30)
    again = saved.model_copy(
        update={
            "address": None,
            "resource_wait_s": None,
            "runtime": Runtime(data_root=tmp_path, device="cpu"),
        }
    )
    kept = continuing(again)  # a resubmitted job: its own cluster and runtime, the sweep's records
    assert kept.parent_run_id == saved.parent_run_id
    assert kept.address is None
    assert kept.resource_wait_s is None
    assert kept.runtime.data_root == tmp_path
    other = again.model_copy(update={"space": load_space("quickstart", ["train.epochs=2"])})
    with pytest.raises(ConfigError, match=r"^sweep job exists with another space than this launch's"):
        continuing(other)
    elsewhere = again.model_copy(update={"study_url": f"sqlite:///{tmp_path / 'other.db'}"})
    with pytest.raises(ConfigError, match="another --study-url"):
        continuing(elsewhere)
