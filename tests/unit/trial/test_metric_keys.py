"""The names of a trial's metrics (selection.py): which keys are a target's accuracy."""

from __future__ import annotations

from types import SimpleNamespace as Record

from asha_tune.analysis.answers import targets_of
from asha_tune.spaces.space import is_reported_target_metric
from asha_tune.trial.selection import domain_acc, se_key, target_of


def test_a_target_is_read_off_its_accuracy_and_never_off_its_standard_error():
    assert target_of(domain_acc("Real World")) == "Real World"
    assert target_of("acc_cartoon") == "cartoon"
    assert target_of(se_key("acc_cartoon")) is None
    for other in ("target_acc", "val_acc", "source_acc", "raw_acc_cartoon", "entropy_cartoon", "n_cartoon"):
        assert target_of(other) is None
    assert is_reported_target_metric("acc_sketch")
    assert is_reported_target_metric("target_acc")
    assert not is_reported_target_metric("acc_sketch_se")
    assert not is_reported_target_metric("val_acc")


def test_the_targets_of_sweeps_are_their_trials_accuracies():
    """Sweeps stand in as records with `trials`, each with a `record` of metrics."""
    trial = Record(
        record=Record(metrics={"acc_sketch": 1.0, "acc_sketch_se": 0.1, "acc_cartoon": 2.0, "val_acc": 3})
    )
    assert targets_of([Record(trials=[trial])]) == ["cartoon", "sketch"]
