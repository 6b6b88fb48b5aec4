"""The best-trial printout and the parent-run summary, on hand-made records: noise, chance, ties."""

from __future__ import annotations

import math

from asha_tune.analysis.verdicts import describe_best, describe_trial
from asha_tune.tracking.best import best_trial, judge, ranked_trials, summary
from asha_tune.tracking.records import TrialRecord
from asha_tune.trial.selection import binomial_se


def record(
    number: int,
    val: float,
    n_val: int = 2344,
    chance_val: float = 19.3,
    cartoon: float = 55.0,
    status: str = "completed",
    chance_cartoon: float = 19.5,
    n_cartoon: int = 2344,
) -> TrialRecord:
    metrics = {
        "val_acc": val,
        "val_acc_se": binomial_se(val, n_val),
        "acc_cartoon": cartoon,
        "acc_cartoon_se": binomial_se(cartoon, n_cartoon),
        "target_acc": cartoon,
        "target_acc_se": binomial_se(cartoon, n_cartoon),
        "train_loss": 1.0,
    }
    constants = {
        "n_val": n_val,
        "chance_val": chance_val,
        "n_cartoon": n_cartoon,
        "chance_cartoon": chance_cartoon,
        "n_target": n_cartoon,
        "chance_target": chance_cartoon,
    }
    return TrialRecord(
        number=number,
        run_id=f"run{number}",
        status=status,
        epochs=4 if status == "completed" else 1,
        values={"shaping.p0": 0.5},
        metrics=metrics,
        constants=constants,
    )


def test_best_trial_prefers_full_budget_trials_and_ignores_the_unfinished():
    full = [record(0, 40.0), record(1, 50.0)]
    stopped = [record(2, 70.0, status="pruned")]  # better, but on fewer epochs
    others = [
        record(3, 90.0, status="failed"),
        record(4, 95.0, status="running"),
        record(5, 99.0, status="interrupted"),
    ]
    assert best_trial(full + stopped + others, "val_acc", "max").number == 1
    assert best_trial(stopped + others + [record(6, 60.0, status="pruned")], "val_acc", "max").number == 2
    assert best_trial(full, "val_acc", "min").number == 0
    assert best_trial(others, "val_acc", "max") is None
    assert best_trial([], "val_acc", "max") is None
    assert best_trial(full, "no_such_metric", "max") is None
    # A tie goes to the earlier trial, so the answer does not depend on the order records come in.
    assert best_trial([record(8, 50.0), record(7, 50.0)], "val_acc", "max").number == 7


def test_no_answer_until_a_trial_has_ended_with_a_result():
    """A sweep interrupted in its first trial has epochs on record, but no answer to give."""
    records = [record(0, 61.2, status="interrupted"), record(1, 50.0, status="failed")]
    assert describe_best(records, "val_acc", "max", "source_val") == (
        "no answer yet: no trial has ended with a result (running, interrupted and failed trials are not ranked)"
    )
    assert describe_best(
        [*records, record(2, 40.0, status="pruned")], "val_acc", "max", "source_val"
    ).startswith("best trial 2: val_acc 40.0")


def test_the_best_shows_its_standard_error_size_chance_and_protocol():
    records = [record(0, 61.2), record(1, 50.0), record(2, 70.0, status="pruned")]
    text = describe_best(records, "val_acc", "max", "source_val", "asha-tune confirm sw")
    first, reported = text.splitlines()  # separable (61.2 against 50.0), far above chance: two lines
    # The pruned trial scored higher on fewer epochs: full-budget trials come first.
    assert first == (
        "best trial 0: val_acc 61.2 ± 1.0% (n = 2,344; chance 19.3%) after 4 epochs (last epoch, "
        "among trials that ran every epoch; selection source_val); shaping.p0=0.5; MLflow run run0"
    )
    assert reported == (
        "  reported on the targets: acc_cartoon 55.0 ± 1.0% (n = 2,344; chance 19.5%), "
        "target_acc 55.0 ± 1.0% (n = 2,344; chance 19.5%)"
    )
    assert math.isclose(binomial_se(61.2, 2344), 1.0065, abs_tol=1e-4)  # docs/selection.md's example
    assert [r.number for r in ranked_trials(records, "val_acc", "max")] == [0, 1, 2]


def test_a_runner_up_within_two_standard_errors_is_not_separable_and_points_to_confirm():
    records = [record(0, 61.2), record(1, 60.0), record(2, 59.5), record(3, 40.0)]
    verdict = judge(records, "val_acc", "max")
    combined = 2 * math.sqrt(binomial_se(61.2, 2344) ** 2 + binomial_se(60.0, 2344) ** 2)
    assert verdict.separable is False
    assert math.isclose(verdict.threshold, combined)
    assert verdict.contenders == 3  # 59.5 is within 2 combined SEs of 61.2 too; 40.0 is not
    text = describe_best(records, "val_acc", "max", "source_val", "asha-tune confirm sw")
    line = text.splitlines()[2]
    assert line.startswith(
        "  not separable: the runner-up, trial 1 (val_acc 60.0 ± 1.0% (n = 2,344; chance 19.3%)), "
        f"is 1.2 points away, within two standard errors of the difference ({combined:.1f})"
    )
    assert line.endswith(
        "not separable without more seeds; re-run the best configurations with new seeds: "
        "asha-tune confirm sw --top 3 --seeds 3"
    )
    assert "near chance" not in text
    # Just outside two combined standard errors: separable, no such line.
    apart = [record(0, 61.2), record(1, 61.2 - combined - 0.05)]
    assert judge(apart, "val_acc", "max").separable is True
    assert "not separable" not in describe_best(apart, "val_acc", "max", "source_val", "asha-tune confirm sw")
    # The parent run says so too.
    metrics, tags = summary(records, "val_acc", "max")
    assert tags["asha_tune.top_separable"].startswith("no: runner-up trial 1 within two standard errors")
    assert tags["asha_tune.best_trial"] == "0"
    assert tags["asha_tune.best_run_id"] == "run0"
    assert metrics == {
        "best_val_acc": 61.2,
        "best_val_acc_se": binomial_se(61.2, 2344),
        "best_acc_cartoon": 55.0,
        "best_acc_cartoon_se": binomial_se(55.0, 2344),
        "best_target_acc": 55.0,
        "best_target_acc_se": binomial_se(55.0, 2344),
    }
    assert summary(apart, "val_acc", "max")[1]["asha_tune.top_separable"] == "yes"


def test_a_best_near_chance_says_so_and_what_a_meaningful_run_needs():
    # The quickstart as a new user saw it: 28 held-out art images, 140 cartoon images at 20.7 %
    # where the majority class is 19.3 %. val_acc is clear of chance, the targets are not.
    quick = record(0, 46.4, n_val=28, chance_val=22.1, cartoon=20.7, n_cartoon=140, chance_cartoon=19.3)
    text = describe_best([quick], "val_acc", "max", "source_val", "asha-tune confirm q")
    assert (
        "  near chance: target_acc 20.7% is within two standard errors of its chance level 19.3% "
        "(always guessing the majority class)"
    ) in text
    assert (
        "a meaningful run needs ImageNet weights (--weights imagenet), 224 px images "
        "(data.image_size: 224) and a GPU"
    ) in text
    assert "not separable" not in text  # one trial: nothing to separate from
    assert summary([quick], "val_acc", "max")[1]["asha_tune.near_chance"].startswith("yes: target_acc")
    # Two standard errors above chance is not near it.
    far = record(0, 61.2, cartoon=19.5 + 2 * binomial_se(22.0, 2344) + 0.5)
    assert "near chance" not in describe_best([far], "val_acc", "max", "source_val")
    assert summary([far], "val_acc", "max")[1]["asha_tune.near_chance"] == "no"
    # The selection metric itself near its chance level.
    low = record(0, 25.0, n_val=28, chance_val=22.1)
    assert (
        "near chance: val_acc 25.0% is within two standard errors of its chance level 22.1%"
        in describe_best([low], "val_acc", "max", "source_val")
    )


def test_a_single_trial_prints_the_same_figures():
    final = {
        "val_acc": 20.0,
        "val_acc_se": binomial_se(20.0, 140),
        "acc_cartoon": 20.0,
        "acc_cartoon_se": binomial_se(20.0, 140),
        "target_acc": 20.0,
        "target_acc_se": binomial_se(20.0, 140),
        "n_val": 140,
        "chance_val": 19.3,
        "n_cartoon": 140,
        "chance_cartoon": 19.3,
        "n_target": 140,
        "chance_target": 19.3,
        "split_hash": "abc",
    }
    lines = describe_trial(final, 2, "oracle").splitlines()
    assert lines[0] == "done: 2 epochs, val_acc 20.0 ± 3.4% (n = 140; chance 19.3%) (selection oracle)"
    assert lines[1].startswith("  reported on the targets: acc_cartoon 20.0 ± 3.4% (n = 140; chance 19.3%)")
    assert lines[2].startswith("  near chance: val_acc 20.0%")
