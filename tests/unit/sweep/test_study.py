"""The Optuna study, the searcher's tell states and ASHA's rebuild, on a real sqlite study."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from asha_tune.errors import AshaTuneError
from asha_tune.spaces import load_space
from asha_tune.sweep.keys import FAILED_KEY
from asha_tune.sweep.searcher import ResumableASHA, StudySearcher
from asha_tune.sweep.study import StudyHandle, create_study


@pytest.fixture
def handle(tmp_path):
    space = load_space("quickstart")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study(url, "s", space)
    return StudyHandle(url, "s", space)


def reload(handle: StudyHandle) -> optuna.Study:
    return optuna.load_study(study_name=handle.name, storage=handle.url)


def test_searcher_tells_complete_pruned_and_fail(handle):
    searcher = StudySearcher(handle, "target_acc", "max", max_epochs=4)
    configs = {tid: searcher.suggest(tid) for tid in ("full", "stopped", "crashed", "diverged")}
    assert [c["trial_number"] for c in configs.values()] == [0, 1, 2, 3]
    for epoch in (1, 2, 3):
        searcher.on_trial_result("full", {"epoch": epoch, "target_acc": 10.0 + epoch})
    searcher.on_trial_complete("full", {"epoch": 4, "target_acc": 20.0})
    searcher.on_trial_result("stopped", {"epoch": 1, "target_acc": 5.0})
    # Tune withholds the epoch that triggered the stop from on_trial_result:
    searcher.on_trial_complete("stopped", {"epoch": 2, "target_acc": 4.0})
    searcher.on_trial_result("crashed", {"epoch": 1, "target_acc": 9.0})
    searcher.on_trial_complete("crashed", None, error=True)
    searcher.on_trial_complete("diverged", {"epoch": 1, "target_acc": float("nan"), FAILED_KEY: 1.0})

    trials = reload(handle).trials
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.FAIL,
    ]
    assert trials[0].value == 20.0
    assert trials[0].intermediate_values == {1: 11.0, 2: 12.0, 3: 13.0, 4: 20.0}
    assert trials[1].intermediate_values == {1: 5.0, 2: 4.0}
    assert trials[1].value == 4.0
    assert trials[0].user_attrs["values"] == configs["full"]["values"]


def test_suggestions_are_valid_trials_and_seeded(handle, tmp_path):
    searcher = StudySearcher(handle, "target_acc", "max", max_epochs=4)
    first = [searcher.suggest(f"t{i}")["values"] for i in range(5)]
    for values in first:
        handle.space.trial_config(values)
    other = tmp_path / "other.db"
    create_study(f"sqlite:///{other}", "s", handle.space)
    again = StudySearcher(StudyHandle(f"sqlite:///{other}", "s", handle.space), "target_acc", "max", 4)
    assert [again.suggest(f"t{i}")["values"] for i in range(5)] == first


def test_orphaned_trials_are_handed_out_again_after_a_restore(handle, tmp_path):
    searcher = StudySearcher(handle, "target_acc", "max", max_epochs=4)
    searcher.suggest("a")
    snapshot = tmp_path / "searcher.pkl"
    searcher.save(str(snapshot))  # Ray's last snapshot knew only trial a
    orphan = searcher.suggest("b")  # asked after the snapshot, then the driver died

    restored = pickle.loads(pickle.dumps(StudySearcher(handle, "target_acc", "max", 4)))
    restored.restore(str(snapshot))
    again = restored.suggest("c")
    assert again == orphan  # same Optuna trial, same values: no extra trial in the study
    assert len(reload(handle).trials) == 2
    assert reload(handle).trials[1].user_attrs["ray_trial_id"] == "c"


def test_many_orphans_are_handed_out_in_order_from_one_read_of_the_study(handle, monkeypatch):
    """A driver killed with hundreds of trials asked but not started (its records behind): the
    resumed searcher reads them once, not once per ask (that made each ask cost O(orphans))."""
    first = StudySearcher(handle, "val_acc", "max", max_epochs=4)
    asked = [first.suggest(f"old-{i}") for i in range(6)]  # the driver died before Ray ran them
    reads = []
    real = optuna.Study.get_trials
    monkeypatch.setattr(
        optuna.Study, "get_trials", lambda self, *a, **k: reads.append(k) or real(self, *a, **k)
    )
    resumed = StudySearcher(StudyHandle(handle.url, handle.name, handle.space), "val_acc", "max", 4)
    again = [resumed.suggest(f"new-{i}") for i in range(6)]
    assert again == asked  # the same trials, same values, in order
    unfinished = [k for k in reads if k.get("states")]
    assert len(unfinished) == 1, reads
    assert resumed.suggest("new-6")["trial_number"] == 6  # then new trials, the study growing
    assert len(reload(handle).trials) == 7


def test_a_trial_half_asked_when_the_driver_died_is_completed_not_duplicated(handle):
    study = reload(handle)
    partial = study.ask()  # killed after ask, before any value or attribute was stored
    partial.suggest_int("shaping.convs.size", 1, 2)
    searcher = StudySearcher(handle, "target_acc", "max", max_epochs=4)
    config = searcher.suggest("ray-1")
    assert config["trial_number"] == partial.number
    assert len(config["values"]["shaping.convs"]) == partial.params["shaping.convs.size"]
    assert "shaping.p0" in config["values"]
    handle.space.trial_config(config["values"])
    assert len(reload(handle).trials) == 1


def test_a_resumed_study_samples_anew(handle):
    first = StudySearcher(handle, "target_acc", "max", 4)
    a = first.suggest("a")
    first.on_trial_complete("a", {"epoch": 4, "target_acc": 1.0})
    resumed = StudySearcher(pickle.loads(pickle.dumps(handle)), "target_acc", "max", 4)
    assert resumed.suggest("b")["values"] != a["values"]


def test_grid_study_enqueues_every_configuration(tmp_path):
    space = load_space("baseline")
    url = f"sqlite:///{tmp_path / 'o.db'}"
    create_study(url, "grid", space)
    searcher = StudySearcher(StudyHandle(url, "grid", space), "target_acc", "max", 30)
    seeds = [searcher.suggest(f"t{i}")["values"]["train.seed"] for i in range(5)]
    assert seeds == [0, 1, 2, 3, 4]


def test_existing_study_name_is_refused(handle):
    with pytest.raises(AshaTuneError, match="a study named s already exists"):
        create_study(handle.url, "s", handle.space)


def asha(handle: StudyHandle) -> ResumableASHA:
    return ResumableASHA(
        handle,
        time_attr="epoch",
        metric="target_acc",
        mode="max",
        max_t=4,
        grace_period=1,
        reduction_factor=2,
    )


def test_asha_rungs_are_rebuilt_from_the_study(handle):
    searcher = StudySearcher(handle, "target_acc", "max", max_epochs=4)
    for tid, value in (("a", 50.0), ("b", 60.0), ("c", 70.0)):
        searcher.suggest(tid)
        searcher.on_trial_result(tid, {"epoch": 1, "target_acc": value})

    weak = {"epoch": 1, "target_acc": 40.0}
    fresh = asha(handle)
    fresh.replayed = True  # what plain ASHA sees after Tuner.restore: no history
    fresh.on_trial_add(None, SimpleNamespace(trial_id="new"))
    assert fresh.on_trial_result(None, SimpleNamespace(trial_id="new"), weak) == "CONTINUE"

    rebuilt = pickle.loads(pickle.dumps(asha(handle)))  # as restored from tuner.pkl
    rebuilt.on_trial_add(None, SimpleNamespace(trial_id="new"))
    assert rebuilt.replayed
    assert rebuilt.on_trial_result(None, SimpleNamespace(trial_id="new"), weak) == "STOP"
    strong = SimpleNamespace(trial_id="strong")
    rebuilt.on_trial_add(None, strong)
    assert rebuilt.on_trial_result(None, strong, {"epoch": 1, "target_acc": 80.0}) == "CONTINUE"


def test_a_resumed_searcher_never_grows_the_study_past_its_trials(handle):
    from ray.tune.search import Searcher

    searcher = StudySearcher(handle, "val_acc", "max", max_epochs=4)
    for i in range(8):  # quickstart's 8 trials
        searcher.suggest(f"t{i}")
    for i in range(7):
        searcher.on_trial_complete(f"t{i}", {"epoch": 4, "val_acc": 50.0 + i})
    # Tune's snapshot knew trials 0-4; 5 and 6 ended after it, 7 was running when the driver died.
    resumed = StudySearcher(handle.__class__(handle.url, handle.name, handle.space), "val_acc", "max", 4)
    resumed.numbers = {f"t{i}": i for i in range(5)}
    resumed.ended = {f"t{i}" for i in range(5)}
    resumed._known = set(range(5))
    assert resumed.suggest("again")["trial_number"] == 7  # the orphan, handed out again
    assert resumed.suggest("more") == Searcher.FINISHED  # 5 and 6 ended: nothing more to ask
    assert len(reload(handle).trials) == 8
