"""A search's replicates as one answer (analysis/answers.py), on hand-made sweeps whose numbers
are worked out in the comments: mean ± SE of the winners, a search against a grid and a warm
start against a cold one, the selection gap, and the rows of the DomainBed-style table."""

from __future__ import annotations

import math

import pytest

from asha_tune.analysis import tables
from asha_tune.analysis.answers import answers, honest_protocols, replicate, report, report_text, results
from asha_tune.analysis.replicate_stats import replicated_result
from asha_tune.tracking.records import Sweep, TrialRecord, TrialRun

SQRT2 = math.sqrt(2)


def run(
    number: int, acc: float, status: str = "completed", mode: str = "random", **metrics: float
) -> TrialRun:
    values = {"configuration": f"c{number}"} if mode == "fixed" else {"shaping.p0": round(0.1 * number, 1)}
    record = TrialRecord(
        number,
        f"run{number}",
        status,
        2 if status == "completed" else 1,
        values,
        {"acc_cartoon": acc, **metrics},
    )
    return TrialRun(
        record,
        1000 + number,
        3.0,
        values.get("configuration"),
        {"cartoon": 2344},
        "baseline" if mode == "baseline" else "random",
    )


def sweep(
    name: str,
    replicate_: int,
    trials: list[TrialRun],
    algorithm: str = "optuna",
    protocol: str = "oracle",
    **kw,
) -> Sweep:
    return Sweep(
        f"{name}.r{replicate_}",
        f"p-{name}{replicate_}",
        "1",
        protocol,
        algorithm,
        trials,
        {},
        family=name,
        replicate=replicate_,
        **kw,
    )


def grid() -> list[Sweep]:
    # r0: baseline 50, c1 55, c2 60 -> winner c2 (60); r1: baseline 52, c1 58, c2 56 -> winner c1 (58)
    # winners 60, 58: mean 59, sd sqrt(2), SE 1.0
    def fixed(values: tuple[float, float, float]) -> list[TrialRun]:
        base, c1, c2 = values
        b = run(0, base, mode="baseline")
        b = TrialRun(b.record, b.ended_ms, b.device_s, "baseline", b.n, "baseline")
        return [
            b,
            TrialRun(run(1, c1).record, 1001, 3.0, "c1", {}, "random"),
            TrialRun(run(2, c2).record, 1002, 3.0, "c2", {}, "random"),
        ]

    return [
        sweep("G", 0, fixed((50.0, 55.0, 60.0)), "list"),
        sweep("G", 1, fixed((52.0, 58.0, 56.0)), "list"),
    ]


def search() -> list[Sweep]:
    # r0: t0 61 (entropy 0.9), t1 pruned 70 (0.2), t2 57 (0.4): oracle winner t0 (61; the pruned 70 only
    #     competes without a full-budget trial), entropy winner t2 (57): gap 4
    # r1: t0 63 (0.3), t1 62 (0.5): both winners t0 (63): gap 0
    # winners 61, 63: mean 62, SE 1.0; gap mean 2, sd 2·sqrt(2), SE 2.0
    r0 = [
        run(0, 61.0, entropy_cartoon=0.9),
        run(1, 70.0, "pruned", entropy_cartoon=0.2),
        run(2, 57.0, entropy_cartoon=0.4),
    ]
    r1 = [run(0, 63.0, entropy_cartoon=0.3), run(1, 62.0, entropy_cartoon=0.5)]
    return [sweep("S", 0, r0), sweep("S", 1, r1)]


def warm() -> list[Sweep]:
    # winners 60, 62: mean 61, SE 1.0
    return [sweep("W", r, [run(0, v)], warm_start="G") for r, v in ((0, 60.0), (1, 62.0))]


def test_each_replicate_picks_its_winner_by_its_protocol_and_the_winners_give_mean_and_se():
    (g,) = results(grid(), ["cartoon"])
    assert [(w.replicate, w.label, w.accuracy) for w in g.winners] == [(0, "c2", 60.0), (1, "c1", 58.0)]
    assert (g.accuracy.mean, g.accuracy.sd, g.accuracy.se) == pytest.approx((59.0, SQRT2, 1.0))
    assert g.won == [("c1", 1), ("c2", 1)]
    assert [(b.replicate, b.trials, b.epochs, b.device_s) for b in g.budgets] == [
        (0, 3, 6, 9.0),
        (1, 3, 6, 9.0),
    ]
    (s,) = results(search(), ["cartoon"])
    assert [w.accuracy for w in s.winners] == [
        61.0,
        63.0,
    ]  # the pruned 70 never wins over a full-budget trial


def test_a_label_free_replicate_selects_each_target_on_its_own_score():
    lf = [sweep("E", 0, search()[0].trials, protocol="entropy", metric="target_entropy", mode="min")]
    result = replicated_result([replicate(s) for s in lf], "cartoon")
    assert (result.metric, result.mode) == ("entropy_cartoon", "min")
    # among the full-budget trials the lowest entropy is t2's 0.4 (the pruned t1's 0.2 does not compete)
    assert [(w.trial, w.accuracy) for w in result.winners] == [(2, 57.0)]
    assert set(honest_protocols(lf[0], "cartoon")) == {"source_val", "entropy", "im", "snd"}
    assert set(honest_protocols(search()[0], "cartoon")) == {
        "entropy",
        "im",
        "snd",
    }  # oracle holds nothing out


def test_a_search_beats_the_grid_only_beyond_two_standard_errors_of_the_difference():
    a = answers(grid() + search() + warm())
    assert a.kinds == {"G": "grid", "S": "search", "W": "warm"}
    found = {(v.search, v.other): v for v in a.versus}
    assert set(found) == {("S", "G"), ("W", "G"), ("W", "S")}  # a grid against nothing, cold against no warm
    beats = found[("S", "G")].separation  # d = 62 - 59 = 3 > 2·sqrt(1 + 1) = 2.83
    assert beats.verdict == "beats"
    assert beats.difference == pytest.approx(3.0)
    assert beats.se == pytest.approx(SQRT2)
    assert found[("S", "G")].text().startswith("S beats G: +3.00 points, beyond two standard errors")
    close = found[("W", "G")].separation  # d = 2 <= 2.83: not separable; n > 4·(2 + 2)/4 = 4, so 5
    assert close.verdict == "not separable"
    assert close.replicates_needed == 5
    assert (
        "W against G: +2.00 points, not separable at 2 replicates (2·SE = 2.83); about 5 replicates each"
        in (found[("W", "G")].text())
    )
    cold = found[("W", "S")]  # d = -1: n > 4·4/1 = 16, so 17
    assert cold.kind == "cold"
    assert cold.separation.replicates_needed == 17


def test_the_selection_gap_is_the_oracle_winner_minus_each_honest_protocols_over_replicates():
    a = answers(search())
    (gap,) = a.gaps  # only entropy: no im, snd or held-out accuracy in these records
    assert (gap.search, gap.target, gap.protocol, gap.metric) == (
        "S",
        "cartoon",
        "entropy",
        "entropy_cartoon",
    )
    assert [g.gap for g in gap.per_replicate] == [4.0, 0.0]
    assert (gap.gap.mean, gap.gap.sd, gap.gap.se) == pytest.approx((2.0, 2 * SQRT2, 2.0))


def test_the_table_rows_are_the_winners_then_the_baseline_over_its_seeds():
    a = answers(search() + grid() + warm())
    table = a.tables["oracle"]
    assert [r.label for r in table.rows] == [
        "G's winner (grid)",
        "S's winner (search)",
        "W's winner (search warm-started from G)",
        "baseline (no shaping)",
    ]
    base = table.rows[-1]
    assert base.protocol == tables.NOT_SELECTED
    assert base.over == "seeds"
    assert (base.cells["cartoon"].mean, base.cells["cartoon"].se) == pytest.approx((51.0, 1.0))
    md = tables.markdown(table)
    assert "| G's winner (grid) | oracle† | 59.0 ± 1.0 (n=2) | 59.0 ± 1.0 (n=2) |" in md
    assert "| baseline (no shaping) | none | 51.0 ± 1.0 (n=2) | 51.0 ± 1.0 (n=2) |" in md
    assert "†oracle: selected on the data it reports" in md
    assert r"59.0 $\pm$ 1.0 (n=2)" in tables.latex(table)


def test_the_report_of_a_replicated_search():
    text = report_text("S", search())
    assert (
        text.splitlines()[0]
        == "replicated search S: 2 replicates (S.r0, S.r1), optuna search, selection oracle"
    )
    assert (
        "target cartoon · selection oracle (oracle: selected on the data it reports), each replicate's winner by "
        "acc_cartoon (max): acc_cartoon 62.00 ± 1.00 (mean ± SE over 2 replicates; sd 1.41)"
    ) in text
    assert "  replicate 0: trial 0 shaping.p0=0: acc_cartoon 61.00 (acc_cartoon 61)" in text
    assert "configurations that won: shaping.p0=0 (2 of 2)" in text
    assert (
        "budget (time_train + time_eval): replicate 0: 3 trials, 5 epochs, 9 device-s; replicate 1: 2 trials"
        in text
    )
    assert (
        "target cartoon · entropy (by entropy_cartoon): 2.00 ± 2.00 points (mean ± SE over 2 replicates"
        in text
    )
    logged = report("S", search())
    (result,) = logged["results"]
    assert (result["mean"], result["n"], result["won"]) == (
        62.0,
        2,
        [{"configuration": "shaping.p0=0", "times": 2}],
    )
    assert logged["selection_gaps"][0]["mean"] == 2.0
