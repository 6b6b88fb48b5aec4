"""`--warm-start SWEEP` from MLflow records: paper_search's study receives a replayed paper_grid's
trials valued by its own metric (acc_cartoon, which the grid's records hold though its study
optimised val_acc), the others listed as skipped with why; the added trials then sit in ASHA's
rungs. Real sqlite MLflow and Optuna stores, hand-made records."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from asha_tune.errors import ConfigError
from asha_tune.spaces import load_space
from asha_tune.sweep.searcher import ResumableASHA
from asha_tune.sweep.study import WARM_START_ATTR, StudyHandle, create_study
from asha_tune.sweep.warm_start import check_warm_start, past_trials, warm_start_from
from asha_tune.tracking import Tracker
from tests.helpers import records
from tests.helpers.records import Trial

SMALL = ["train.epochs=2", "train.weights=none", "data.image_size=32"]


def epochs(*cartoon: float, **others: float) -> list[dict[str, float]]:
    return [{"acc_cartoon": v, "val_acc": v, **others} for v in cartoon]


@pytest.fixture(scope="module")
def grid_records(tmp_path_factory):
    """A replicated paper grid's records (two replicates), made once for the module."""
    tmp_path = tmp_path_factory.mktemp("grid")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("paper_grid", artifact_location=(tmp_path / "art").as_uri())
    grid = load_space("paper_grid", [*SMALL, "search.only=[baseline,rand-c1-p0.7,da-c4-cartoon]"])
    made = [
        Trial({"configuration": "baseline"}, epochs=epochs(50.0, 54.0)),
        Trial({"configuration": "rand-c1-p0.7"}, epochs=epochs(52.0, 58.0)),
        Trial({"configuration": "da-c4-cartoon"}, epochs=epochs(55.0, 61.0)),
        Trial({"configuration": "da-c4-cartoon"}, status="failed", epochs=epochs(10.0)),
        Trial({"configuration": "rand-c1-p0.7"}, epochs=[{"val_acc": 40.0}, {"val_acc": 41.0}]),
    ]
    space_json = grid.model_dump(mode="json")
    records.replicated(client, experiment, "grid", space_json, [made[:3], made[3:]], algorithm="list")
    return Tracker(uri)


@pytest.fixture
def stores(grid_records, tmp_path):
    """The grid's records, and a new paper_search study to warm-start."""
    study_url = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = load_space("paper_search", [*SMALL, "scheduler.grace_period=1"])
    create_study(study_url, "search", search)
    return grid_records, study_url, search


def test_the_grids_trials_come_from_its_records_valued_by_the_searchs_metric(stores):
    tracker, _, _ = stores
    found, skipped = past_trials(tracker, "grid", "acc_cartoon")
    assert [(p.source, p.state, p.value, p.intermediate) for p in found] == [
        ("grid.r0 trial 0", "completed", 54.0, {1: 50.0, 2: 54.0}),
        ("grid.r0 trial 1", "completed", 58.0, {1: 52.0, 2: 58.0}),
        ("grid.r0 trial 2", "completed", 61.0, {1: 55.0, 2: 61.0}),
        ("grid.r1 trial 0", "failed", None, {}),
    ]
    assert found[1].config["shaping"] == {
        **found[1].config["shaping"],
        "mode": "random",
        "convs": [1],
        "p0": 0.7,
    }
    assert found[1].config["data"]["targets"] == ["cartoon", "sketch", "photo"]
    assert skipped == [("grid.r1 trial 1", "its records hold no acc_cartoon")]


def test_a_search_is_warm_started_from_a_replayed_grid(stores):
    tracker, study_url, search = stores
    result = warm_start_from(tracker, "grid", study_url, "search")
    assert result.added == [("grid.r0 trial 1", 0), ("grid.r0 trial 2", 1)]
    why = dict(result.skipped)
    assert why["grid.r0 trial 0"] == "shaping.mode 'baseline' is not one of its choices (random, target)"
    assert why["grid.r1 trial 0"] == "it failed: no result to learn from"
    assert why["grid.r1 trial 1"] == "its records hold no acc_cartoon"
    assert result.text().splitlines()[0] == "warm start: 2 trials added, 3 skipped"
    study = optuna.load_study(study_name="search", storage=study_url)
    added = study.trials
    assert [(t.state, t.value, t.intermediate_values) for t in added] == [
        (TrialState.COMPLETE, 58.0, {1: 52.0, 2: 58.0}),
        (TrialState.COMPLETE, 61.0, {1: 55.0, 2: 61.0}),
    ]
    assert added[0].params == {
        "shaping.mode": "random",
        "shaping.convs.size": 1,
        "shaping.convs.size1": "1",
        "shaping.p0": 0.7,
    }
    assert added[1].user_attrs[WARM_START_ATTR] == "grid.r0 trial 2"
    again = warm_start_from(tracker, "grid", study_url, "search")  # idempotent
    assert again.added == []
    assert len(optuna.load_study(study_name="search", storage=study_url).trials) == 2
    # The sweep's own trials are numbered after the added ones.
    number, _ = StudyHandle(study_url, "search", search).ask("ray-0", known=set())
    assert number == 2


def test_a_warm_start_as_large_as_the_sweep_leaves_every_trial_of_the_sweep_to_run(grid_records, tmp_path):
    """The added trials are not the sweep's: a search of 2 trials warm-started with 2 still asks
    for 2 of its own (counted as its own, it ended before running any: CI's failure)."""
    study_url = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = load_space("paper_search", [*SMALL, "scheduler.grace_period=1", "search.num_trials=2"])
    create_study(study_url, "search", search)
    assert len(warm_start_from(grid_records, "grid", study_url, "search").added) == search.num_trials == 2
    handle = StudyHandle(study_url, "search", search)
    known: set[int] = set()
    for number in (2, 3):  # numbered after the added ones
        asked = handle.ask(f"ray-{number}", known=known)
        assert asked is not None
        assert asked[0] == number
        known.add(number)
    assert handle.ask("ray-more", known=known) is None  # the sweep's 2, and no more


def test_the_warm_started_trials_sit_in_ashas_rungs(stores):
    tracker, study_url, search = stores
    warm_start_from(tracker, "grid", study_url, "search")
    asha = ResumableASHA(
        StudyHandle(study_url, "search", search),
        time_attr="epoch",
        metric="acc_cartoon",
        mode="max",
        max_t=2,
        grace_period=1,
        reduction_factor=2,
    )
    new = SimpleNamespace(trial_id="new")
    asha.on_trial_add(None, new)  # replays the study: the two grid trials' epoch-1 values 52 and 55
    assert asha.replayed
    assert asha.on_trial_result(None, new, {"epoch": 1, "acc_cartoon": 50.0}) == "STOP"
    strong = SimpleNamespace(trial_id="strong")
    asha.on_trial_add(None, strong)
    assert asha.on_trial_result(None, strong, {"epoch": 1, "acc_cartoon": 56.0}) == "CONTINUE"


def test_what_a_warm_start_refuses_is_one_line(stores):
    tracker, _, search = stores
    with pytest.raises(ConfigError, match="a sweep cannot be warm-started from itself"):
        check_warm_start(search, "s", "s")
    with pytest.raises(ConfigError, match="space paper_grid runs a list of configurations"):
        check_warm_start(load_space("paper_grid"), "g2", "grid")
    with pytest.raises(ConfigError, match=r"no sweep named nope in sqlite:///.* \(sweeps there: grid\)"):
        past_trials(tracker, "nope", "acc_cartoon")
