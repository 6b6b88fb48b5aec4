"""Replicated searches: mean ± SE of the winners, search against grid, the selection gap;
every figure checked against numbers worked out by hand in the comments."""

from __future__ import annotations

import math

import pytest

from asha_tune.analysis.estimates import Estimate
from asha_tune.analysis.replicate_stats import (
    Replicate,
    TrialOutcome,
    gaps_over_replicates,
    replicated_result,
    replicates_to_separate,
    selection_gaps,
    separate,
    winner,
)

# --- mean ± SE -----------------------------------------------------------------------------------


def test_estimate_mean_sd_and_se():
    # (60, 62, 64): mean 62; sd = sqrt((4 + 0 + 4) / 2) = 2; SE = 2 / sqrt(3) = 1.1547005
    e = Estimate((60.0, 62.0, 64.0))
    assert (e.n, e.mean, e.sd) == (3, 62.0, 2.0)
    assert e.se == pytest.approx(1.1547005, abs=1e-7)
    one = Estimate((61.0,))
    assert one.mean == 61.0
    assert math.isnan(one.sd)
    assert math.isnan(one.se)


# --- one search, replicated ------------------------------------------------------------------------


def trial(number, status="completed", epochs=4, device_s=10.0, values=None, configuration=None, **metrics):
    return TrialOutcome(
        number,
        status,
        epochs,
        values if values is not None else {"shaping.p0": 0.1 * number, "train.seed": 0},
        metrics,
        device_s,
        configuration,
    )


def search_replicates() -> list[Replicate]:
    """Three replicates of a source_val search (val_acc, max)."""
    r0 = (  # trial 1 has the best val_acc: acc_cartoon 60
        trial(0, val_acc=50.0, acc_cartoon=70.0, acc_sketch=40.0),
        trial(1, val_acc=70.0, acc_cartoon=60.0, acc_sketch=45.0),
        trial(2, "failed", epochs=1, device_s=2.0),
    )
    r1 = (  # trial 0 (pruned, 2 epochs) has a higher val_acc, but a full-budget trial wins: trial 1
        trial(0, "pruned", epochs=2, device_s=5.0, val_acc=75.0, acc_cartoon=90.0, acc_sketch=50.0),
        trial(1, val_acc=65.0, acc_cartoon=62.0, acc_sketch=47.0),
    )
    r2 = (  # trials 0 and 3 tie at 70: the lower number wins; trial 5's nan is no score
        trial(
            0, val_acc=70.0, acc_cartoon=64.0, acc_sketch=43.0, values={"shaping.p0": 0.1, "train.seed": 9}
        ),
        trial(3, val_acc=70.0, acc_cartoon=10.0, acc_sketch=10.0),
        trial(5, val_acc=math.nan, acc_cartoon=99.0, acc_sketch=99.0),
    )
    return [
        Replicate("s", i, "source_val", "val_acc", "max", trials) for i, trials in enumerate((r0, r1, r2))
    ]


def test_winners_mean_and_se_over_replicates():
    result = replicated_result(search_replicates(), "cartoon")
    assert [(w.replicate, w.trial) for w in result.winners] == [(0, 1), (1, 1), (2, 0)]
    # Winners' acc_cartoon 60, 62, 64: mean 62, SE 2/sqrt(3) = 1.1547005 (as above).
    assert result.accuracy.mean == 62.0
    assert result.accuracy.se == pytest.approx(1.1547005, abs=1e-7)
    assert (result.metric, result.mode, result.missing) == ("val_acc", "max", ())
    # Which configuration won: all three winners ran p0 0.1 (replicate 2's with another seed:
    # the seed is not part of the configuration).
    assert result.won == [("shaping.p0=0.1", 3)]
    # Budget: replicate 0 ran 4 + 4 + 1 epochs in 10 + 10 + 2 device-s; replicate 1 2 + 4, 5 + 10.
    assert [(b.trials, b.epochs, b.device_s) for b in result.budgets] == [
        (3, 9, 22.0),
        (2, 6, 15.0),
        (3, 12, 30.0),
    ]
    # Under source_val the same winner serves every target: acc_sketch 45, 47, 43 -> mean 45.
    assert replicated_result(search_replicates(), "sketch").accuracy.mean == 45.0


def test_which_configurations_won_counts_listed_ids():
    reps = [
        Replicate(
            "g",
            i,
            "oracle",
            "val_acc",
            "max",
            (trial(0, configuration=a, acc_c=x), trial(1, configuration=b, acc_c=y)),
        )
        for i, (a, x, b, y) in enumerate(
            [
                ("rand-c1", 60.0, "da-c4", 63.0),
                ("rand-c1", 64.0, "da-c4", 61.0),
                ("rand-c1", 59.0, "da-c4", 62.0),
            ]
        )
    ]
    result = replicated_result(reps, "c")
    # oracle: each replicate picks on acc_c itself: da-c4 (63), rand-c1 (64), da-c4 (62).
    assert result.metric == "acc_c"
    assert result.won == [("da-c4", 2), ("rand-c1", 1)]
    assert result.accuracy.mean == pytest.approx((63 + 64 + 62) / 3)


def test_a_replicate_without_the_target_is_missing_not_zero():
    reps = search_replicates()
    reps[1] = Replicate("s", 1, "source_val", "val_acc", "max", (trial(0, val_acc=60.0, acc_cartoon=61.0),))
    result = replicated_result(reps, "sketch")
    assert result.missing == (1,)
    assert result.by_replicate == {0: 45.0, 2: 43.0}
    assert result.accuracy.n == 2
    assert len(result.budgets) == 3


def test_replicates_of_different_searches_are_refused():
    reps = search_replicates()
    other = Replicate("s", 3, "oracle", "val_acc", "max", ())
    with pytest.raises(ValueError, match="replicate 3 of s .* is not a replicate of s"):
        replicated_result([*reps, other], "cartoon")
    with pytest.raises(ValueError, match="repeat"):
        replicated_result([reps[0], reps[0]], "cartoon")


def test_winner_follows_the_mode():
    trials = [trial(0, target_entropy=0.9, acc_c=50.0), trial(1, target_entropy=0.4, acc_c=40.0)]
    assert winner(trials, "target_entropy", "min", "acc_c").number == 1
    assert winner(trials, "target_entropy", "max", "acc_c").number == 0
    assert winner(trials, "snd", "max", "acc_c") is None


# --- a search against the grid ---------------------------------------------------------------------


def test_a_search_beats_the_grid_beyond_two_standard_errors():
    # search (60, 62, 64): mean 62, sd 2, SE² = 4/3; grid (58, 59, 60): mean 59, sd 1, SE² = 1/3.
    # d = 3; SE of d = sqrt(4/3 + 1/3) = sqrt(5/3) = 1.2909944; 2·SE = 2.5819889 < 3: beats.
    s = separate(Estimate((60.0, 62.0, 64.0)), Estimate((58.0, 59.0, 60.0)))
    assert s.difference == 3.0
    assert s.verdict == "beats"
    assert s.replicates_needed is None
    assert s.se == pytest.approx(1.2909944, abs=1e-7)
    # Welch: df = (5/3)² / ((4/3)²/2 + (1/3)²/2) = (25/9) / (17/18) = 50/17 = 2.941;
    # t(0.975, 2.941) = 3.2188 (tables: t(.975, 2) = 4.303, t(.975, 3) = 3.182): 3.2188 · 1.2910 = 4.155.
    assert s.welch_t95 == pytest.approx(3.2188 * math.sqrt(5 / 3), abs=1e-3)
    assert s.welch_t95 > 3.0  # at 3 replicates a 95 % t-test would not call it
    assert (
        "beats grid: +3.00 points, beyond two standard errors of the difference (2·SE = 2.58) at 3 replicates"
        in s.text("search", "grid")
    )
    reverse = separate(Estimate((58.0, 59.0, 60.0)), Estimate((60.0, 62.0, 64.0)))
    assert reverse.verdict == "is beaten by"
    assert reverse.difference == -3.0


def test_not_separable_and_how_many_replicates_would_separate():
    # search (60, 64): mean 62, sd 2·sqrt(2) (s² = 8), SE 2; grid (59, 61): mean 60, s² = 2, SE 1.
    # d = 2; SE of d = sqrt(4 + 1) = 2.2360680; 2·SE = 4.47 > 2: not separable.
    # n per side: 2·sqrt((8 + 2)/n) < 2  <=>  n > 10: 11 replicates
    # (n = 10 gives exactly 2, not below it; n = 11 gives 1.907).
    s = separate(Estimate((60.0, 64.0)), Estimate((59.0, 61.0)))
    assert s.verdict == "not separable"
    assert s.se == pytest.approx(math.sqrt(5), abs=1e-12)
    assert s.replicates_needed == 11
    assert replicates_to_separate(math.sqrt(8), math.sqrt(2), -2.0) == 11  # the sign does not matter
    text = s.text("paper_search", "paper_grid")
    assert (
        "paper_search against paper_grid: +2.00 points, not separable at 2 replicates (2·SE = 4.47)" in text
    )
    assert "about 11 replicates each would separate them" in text
    assert "assumes" in text


def test_separation_edge_cases():
    single = separate(Estimate((62.0,)), Estimate((59.0, 60.0)))
    assert single.verdict == "not separable"
    assert single.replicates_needed is None
    assert single.welch_t95 is None
    assert "not separable at 1 and 2 replicates: one replicate measures no spread" in single.text("a", "b")
    equal = separate(Estimate((60.0, 62.0)), Estimate((59.0, 63.0)))
    assert equal.difference == 0
    assert equal.replicates_needed is None
    assert "no number of replicates separates them" in equal.text("a", "b")
    # No spread at all on either side and a difference: SE 0, separable at 2 replicates.
    exact = separate(Estimate((61.0, 61.0)), Estimate((60.0, 60.0)))
    assert exact.verdict == "beats"
    assert exact.welch_t95 is None
    # Few replicates needed are at least 2 (one measures no spread).
    assert replicates_to_separate(0.1, 0.1, 10.0) == 2


# --- the selection gap -----------------------------------------------------------------------------


def gap_sweep() -> list[TrialOutcome]:
    return [
        trial(0, val_acc=70.0, target_entropy=0.8, acc_cartoon=55.0, acc_sketch=40.0),
        trial(1, val_acc=60.0, target_entropy=0.3, acc_cartoon=58.0, acc_sketch=47.0),
        trial(2, val_acc=65.0, target_entropy=0.5, acc_cartoon=61.0, acc_sketch=42.0),
        trial(3, "pruned", epochs=1, val_acc=99.0, target_entropy=0.1, acc_cartoon=99.0, acc_sketch=99.0),
    ]


def test_selection_gap_per_target_and_protocol():
    honest = {
        "source_val": ("val_acc", "max"),
        "entropy": ("target_entropy", "min"),
        "snd": ("target_snd", "max"),
    }
    gaps = selection_gaps(gap_sweep(), ["cartoon", "sketch"], honest)
    # Full-budget trials only (trial 3 was stopped early). cartoon: oracle picks trial 2 (61);
    # val_acc picks trial 0 (55): gap 6; entropy picks trial 1 (58): gap 3.
    # sketch: oracle picks trial 1 (47); val_acc trial 0 (40): gap 7; entropy trial 1: gap 0.
    # snd: no trial holds target_snd, so no row.
    got = {(g.target, g.protocol): (g.oracle_trial, g.trial, g.gap) for g in gaps}
    assert got == {
        ("cartoon", "source_val"): (2, 0, 6.0),
        ("cartoon", "entropy"): (2, 1, 3.0),
        ("sketch", "source_val"): (1, 0, 7.0),
        ("sketch", "entropy"): (1, 1, 0.0),
    }
    assert selection_gaps(gap_sweep(), ["photo"], honest) == []


def test_selection_gap_over_replicates():
    honest = {"source_val": ("val_acc", "max")}
    second = [  # another replicate: oracle trial 1 (66), val_acc trial 0 (62): gap 4
        trial(0, val_acc=70.0, acc_cartoon=62.0),
        trial(1, val_acc=50.0, acc_cartoon=66.0),
    ]
    over = gaps_over_replicates(
        [selection_gaps(gap_sweep(), ["cartoon"], honest), selection_gaps(second, ["cartoon"], honest)]
    )
    # gaps 6 and 4: mean 5, sd sqrt(2), SE 1
    assert over[("cartoon", "source_val")].mean == 5.0
    assert over[("cartoon", "source_val")].se == pytest.approx(1.0)
