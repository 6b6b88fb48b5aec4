"""What a person reads: accuracies in %, sampled floats to 4 significant digits, plurals."""

from __future__ import annotations

from asha_tune.analysis.verdicts import describe_best
from asha_tune.display import count, metric_text, values_text
from asha_tune.tracking.records import TrialRecord


def test_metrics_values_and_counts_read_as_a_person_expects():
    assert metric_text("target_acc", 20.714285) == "target_acc 20.71%"
    assert metric_text("acc_sketch", 5.0) == "acc_sketch 5.00%"
    assert metric_text("train_loss", 1.8432101) == "train_loss 1.843"
    assert (
        values_text({"shaping.convs": [1, 5], "shaping.p0": 0.603623456, "train.weights": "none"})
        == "shaping.convs=[1,5], shaping.p0=0.6036, train.weights=none"
    )
    assert (count(1, "epoch"), count(4, "epoch")) == ("1 epoch", "4 epochs")
    assert (count(1, "retry", "retries"), count(2, "retry", "retries")) == ("1 retry", "2 retries")
    assert count(0, "running trial") == "0 running trials"


def test_the_final_answer_says_its_rule():
    record = TrialRecord(
        number=3,
        run_id="abc",
        status="pruned",
        epochs=1,
        values={"shaping.p0": 0.123456789},
        metrics={"target_acc": 17.857142857},
    )
    assert describe_best([record], "target_acc", "max", "oracle") == (
        "best trial 3: target_acc 17.86% after 1 epoch (last epoch; no trial ran every epoch, so among those "
        "stopped early; selection oracle); shaping.p0=0.1235; MLflow run abc"
    )
