"""Replicated searches: the winner of a search is a random variable, so measure it more than once.

One run of a search picks one winner; run the whole search again with other seeds (the
sampler's, the trials', the split's) and it may pick another, with another accuracy. DomainBed
(Gulrajani & Lopez-Paz, 2020) therefore repeats every sweep and reports mean ± SE over the
repetitions; so does this module, from plain records (no torch, no Ray, no MLflow; the seeds a
replicate runs with are sweep/replicated.py's):

- `replicated_result`: per target and protocol, the winners' reported accuracy as mean ± SE
  over replicates, which configurations won how often, and the budget each replicate spent;
- `separate`: a search against the grid: "beats" only beyond two standard errors of the
  difference, else "not separable at R replicates" and how many would separate them;
- `selection_gaps`: what selecting on the test data would have bought over an honest protocol.

A winner is chosen by the one rule of `tracking.best.ranked_trials` (the sweep's own final answer):
the best last-epoch value of the selection metric among trials that ran every epoch, else among
those stopped early; ties go to the lower trial number.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asha_tune.analysis.estimates import Estimate, t_quantile
from asha_tune.display import count, values_text
from asha_tune.tracking.best import best_trial
from asha_tune.trial.selection import target_selection

SEED_KEY = "train.seed"  # a trial's seed: not part of which configuration won


# --- records -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialOutcome:
    """One ended trial as the analysis sees it (phase 2 maps MLflow records onto it)."""

    number: int
    status: str  # completed | pruned | failed
    epochs: int
    values: Mapping[str, Any]  # the sampled values, as the trial's `search` param
    metrics: Mapping[str, float]  # the last value of every metric
    device_s: float = 0.0  # time_train + time_eval over its epochs
    configuration: str | None = None  # a listed configuration's id

    @property
    def label(self) -> str:
        """Which configuration this is: a listed one's id, else its values without the seed."""
        if self.configuration:
            return self.configuration
        shown = {k: v for k, v in self.values.items() if k != SEED_KEY}
        return values_text(shown) if shown else "(no searched values)"


@dataclass(frozen=True)
class Replicate:
    """One replicate of a search: a sweep of its own, chosen by its own protocol."""

    sweep: str  # the replicated search's name (the same for every replicate)
    index: int
    protocol: str
    metric: str  # the selection metric (under oracle each target selects on its own accuracy)
    mode: str  # max | min
    trials: tuple[TrialOutcome, ...]

    def selection(self, target: str) -> tuple[str, str]:
        """(metric, mode) that picks the winner for `target` (selection.target_selection: under
        oracle the target's accuracy, under a label-free protocol the target's score)."""
        return target_selection(self.protocol, target, self.metric, self.mode)


def winner(trials: Iterable[TrialOutcome], metric: str, mode: str, reported: str) -> TrialOutcome | None:
    """The sweep's answer by the one rule of `tracking.best.ranked_trials`, among trials holding both
    the selection metric and the reported accuracy: full-budget trials first, ties to the lower
    number."""
    return best_trial(trials, metric, mode, require=(reported,))


# --- one search, replicated ------------------------------------------------------------------------


@dataclass(frozen=True)
class Winner:
    replicate: int
    trial: int
    label: str
    selection: float  # its selection-metric value
    accuracy: float  # its reported acc_<target>
    accuracy_se: float | None  # the binomial SE of that one accuracy, where recorded


@dataclass(frozen=True)
class Budget:
    replicate: int
    trials: int  # trials that ended (completed, pruned or failed)
    epochs: int
    device_s: float


def budget(replicate: Replicate) -> Budget:
    return Budget(
        replicate.index,
        len(replicate.trials),
        sum(t.epochs for t in replicate.trials),
        sum(t.device_s for t in replicate.trials),
    )


@dataclass(frozen=True)
class ReplicatedResult:
    """A search's answer for one target under its protocol, over its replicates."""

    sweep: str
    target: str
    protocol: str
    metric: str
    mode: str
    winners: tuple[Winner, ...]  # one per replicate that had a winner, by replicate
    budgets: tuple[Budget, ...]  # every replicate's
    missing: tuple[int, ...] = field(default=())  # replicates with no trial scored on the target

    @property
    def accuracy(self) -> Estimate:
        """The winners' reported accuracies: mean ± SE over replicates."""
        return Estimate(tuple(w.accuracy for w in self.winners))

    @property
    def won(self) -> list[tuple[str, int]]:
        """Which configurations won how often, most often first (ties by name)."""
        counts = Counter(w.label for w in self.winners)
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))

    @property
    def by_replicate(self) -> dict[int, float]:
        return {w.replicate: w.accuracy for w in self.winners}


def replicated_result(replicates: Sequence[Replicate], target: str) -> ReplicatedResult:
    """Each replicate's winner for `target` by its own protocol, and what they add up to."""
    if not replicates:
        raise ValueError("no replicates to summarise")
    first = replicates[0]
    for r in replicates:
        if (r.sweep, r.protocol, r.metric, r.mode) != (first.sweep, first.protocol, first.metric, first.mode):
            raise ValueError(
                f"replicate {r.index} of {r.sweep} ({r.protocol}, {r.metric} {r.mode}) is not a replicate "
                f"of {first.sweep} ({first.protocol}, {first.metric} {first.mode})"
            )
    indices = [r.index for r in replicates]
    if len(set(indices)) != len(indices):
        raise ValueError(f"replicate numbers repeat: {sorted(indices)}")
    winners, missing = [], []
    reported = f"acc_{target}"
    for r in sorted(replicates, key=lambda r: r.index):
        metric, mode = r.selection(target)
        best = winner(r.trials, metric, mode, reported)
        if best is None:
            missing.append(r.index)
            continue
        winners.append(
            Winner(
                r.index,
                best.number,
                best.label,
                best.metrics[metric],
                best.metrics[reported],
                best.metrics.get(f"{reported}_se"),
            )
        )
    metric, mode = first.selection(target)
    budgets = tuple(budget(r) for r in sorted(replicates, key=lambda r: r.index))
    return ReplicatedResult(
        first.sweep, target, first.protocol, metric, mode, tuple(winners), budgets, tuple(missing)
    )


# --- a search against the grid ---------------------------------------------------------------------

SEPARATION_ASSUMES = (
    "assumes the replicates are independent, the spreads and the difference stay as measured "
    "(with few replicates the measured spread is itself rough) and both sides run n replicates"
)


@dataclass(frozen=True)
class Separation:
    """Whether a search's replicated figure differs from the grid's beyond the noise.

    It does only when |difference| > 2·SE of the difference, SE = sqrt(se_search² + se_grid²).
    Otherwise `replicates_needed` is the smallest n per side with 2·sqrt(s1²/n + s2²/n) < |d|
    (n > 4·(s1² + s2²) / d²) at the measured spreads; see SEPARATION_ASSUMES.
    `welch_t95` is what |d| would have to exceed in a two-sided 95 % Welch t-test at these
    replicate counts: with 2 or 3 replicates it is far more than 2·SE.
    """

    search: Estimate
    grid: Estimate
    difference: float  # search mean - grid mean
    se: float  # sqrt(se_search² + se_grid²); nan with a single replicate on either side
    verdict: str  # "beats" | "is beaten by" | "not separable"
    replicates_needed: int | None  # None: separable already, no spread measured, or equal means
    welch_t95: float | None

    @property
    def replicates(self) -> str:
        """`3 replicates`, or `3 and 2 replicates` where the sides differ."""
        a, b = self.search.n, self.grid.n
        return count(a, "replicate") if a == b else f"{a} and {b} replicates"

    def text(self, search: str, grid: str, unit: str = " points") -> str:
        d = f"{self.difference:+.2f}{unit}"
        if self.verdict != "not separable":
            return (
                f"{search} {self.verdict} {grid}: {d}, beyond two standard errors of the "
                f"difference (2·SE = {2 * self.se:.2f}) at {self.replicates}"
            )
        if not math.isfinite(self.se):
            return (
                f"{search} against {grid}: {d}, not separable at {self.replicates}: one replicate "
                f"measures no spread; run at least 2 of each"
            )
        more = (
            f"; about {self.replicates_needed} replicates each would separate them at the measured "
            f"spread ({SEPARATION_ASSUMES})"
            if self.replicates_needed
            else "; the means are equal: no number of replicates separates them"
        )
        noise = f"2·SE = {2 * self.se:.2f}"
        return f"{search} against {grid}: {d}, not separable at {self.replicates} ({noise}){more}"


def _welch_t95(search: Estimate, grid: Estimate) -> float | None:
    """The 97.5 % t quantile at the Welch-Satterthwaite degrees of freedom, times the SE."""
    v1, v2 = search.sd**2 / search.n, grid.sd**2 / grid.n
    if not (math.isfinite(v1) and math.isfinite(v2)) or v1 + v2 == 0:
        return None
    df = (v1 + v2) ** 2 / (v1**2 / (search.n - 1) + v2**2 / (grid.n - 1))
    return t_quantile(df) * math.sqrt(v1 + v2)


def replicates_to_separate(sd_a: float, sd_b: float, difference: float) -> int | None:
    """The smallest n (>= 2) with 2·sqrt(sd_a²/n + sd_b²/n) < |difference|; None if d = 0."""
    if difference == 0 or not (math.isfinite(sd_a) and math.isfinite(sd_b)):
        return None
    return max(2, math.floor(4 * (sd_a**2 + sd_b**2) / difference**2) + 1)


def separate(search: Estimate, grid: Estimate) -> Separation:
    d = search.mean - grid.mean
    se = math.sqrt(search.se**2 + grid.se**2)  # nan when either side has one replicate
    if math.isfinite(se) and abs(d) > 2 * se:
        return Separation(
            search, grid, d, se, "beats" if d > 0 else "is beaten by", None, _welch_t95(search, grid)
        )
    return Separation(
        search,
        grid,
        d,
        se,
        "not separable",
        replicates_to_separate(search.sd, grid.sd, d) if math.isfinite(se) else None,
        _welch_t95(search, grid),
    )


# --- the selection gap -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectionGap:
    """For one target: the oracle's winner's reported accuracy against an honest protocol's.

    The oracle selects on the accuracy it reports, so its figure is what selecting on the test
    data would buy; the gap is that figure minus what the honest protocol's winner reports
    (same sweep, same records: no rerun).
    """

    target: str
    protocol: str  # the honest protocol
    metric: str  # the metric it selected on
    oracle_trial: int
    oracle_accuracy: float
    trial: int
    accuracy: float

    @property
    def gap(self) -> float:
        return self.oracle_accuracy - self.accuracy


def selection_gaps(
    trials: Sequence[TrialOutcome], targets: Sequence[str], honest: Mapping[str, tuple[str, str]]
) -> list[SelectionGap]:
    """Per target, the gap to each honest protocol whose metric the records hold.

    `honest` maps a protocol to the (metric, mode) it selects on, e.g. {"source_val": ("val_acc",
    "max"), "entropy": ("target_entropy", "min")}: `val_acc` means whatever the sweep's own
    protocol held out, so the caller names it. A protocol whose metric no trial holds is left out.
    """
    gaps = []
    for target in targets:
        reported = f"acc_{target}"
        oracle = winner(trials, reported, "max", reported)
        if oracle is None:
            continue
        for protocol, (metric, mode) in honest.items():
            chosen = winner(trials, metric, mode, reported)
            if chosen is None:
                continue
            gaps.append(
                SelectionGap(
                    target,
                    protocol,
                    metric,
                    oracle.number,
                    oracle.metrics[reported],
                    chosen.number,
                    chosen.metrics[reported],
                )
            )
    return gaps


def gaps_over_replicates(per_replicate: Sequence[Sequence[SelectionGap]]) -> dict[tuple[str, str], Estimate]:
    """(target, protocol) -> the gap as mean ± SE over the replicates that measured it."""
    found: dict[tuple[str, str], list[float]] = {}
    for gaps in per_replicate:
        for g in gaps:
            found.setdefault((g.target, g.protocol), []).append(g.gap)
    return {key: Estimate(tuple(values)) for key, values in found.items()}
