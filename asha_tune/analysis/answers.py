"""A search's replicates as one answer, from records: what `launch --replicates` reports at the
end and `compare` builds on.

A replicated search NAME is R sweeps NAME.r0 ... (sweep/replicated.py); a sweep of its own is a
search of one replicate. Per target, each replicate's winner is chosen by its own protocol
(selection.target_selection, the rule of tracking.best.ranked_trials) and the winners' reported
accuracies give mean ± SE over replicates (analysis/replicate_stats.py). Beside it: which
configurations won, what each replicate spent, the selection gap (the oracle's winner minus each
honest protocol's winner among the same trials), a search against a grid, and the rows of the
DomainBed-style table (analysis/tables.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asha_tune.analysis.estimates import Estimate
from asha_tune.analysis.replicate_stats import (
    Replicate,
    ReplicatedResult,
    SelectionGap,
    Separation,
    TrialOutcome,
    gaps_over_replicates,
    replicated_result,
    selection_gaps,
    separate,
)
from asha_tune.analysis.tables import NOT_SELECTED, Table, TableRow, build_table, row_from_results
from asha_tune.display import count
from asha_tune.tracking.records import Sweep, TrialRun
from asha_tune.tracking.tags import COMPLETED
from asha_tune.trial.registry import (
    SELECTION_PROTOCOLS,
    selection_label,
    selects_on_reported,
    val_acc_protocol,
)
from asha_tune.trial.selection import VAL_ACC, label_free, score_key, target_of

BASELINE = "baseline"
FIXED_ALGORITHMS = ("list", "grid")  # sweeps of fixed configurations: where a baseline row comes from


def outcome(trial: TrialRun) -> TrialOutcome:
    r = trial.record
    return TrialOutcome(
        r.number, r.status, r.epochs, r.values, r.metrics, trial.device_s, trial.configuration
    )


def replicate(sweep: Sweep) -> Replicate:
    return Replicate(
        sweep.search,
        sweep.replicate,
        sweep.protocol,
        sweep.metric,
        sweep.mode,
        tuple(outcome(t) for t in sweep.trials),
    )


def searches(sweeps: Sequence[Sweep]) -> dict[str, list[Sweep]]:
    """Sweeps by the search they are replicates of (a sweep of its own is its own), in order."""
    found: dict[str, list[Sweep]] = {}
    for sweep in sweeps:
        found.setdefault(sweep.search, []).append(sweep)
    return found


def targets_of(sweeps: Sequence[Sweep]) -> list[str]:
    """The target domains the sweeps' trials report (acc_<domain>), alphabetically."""
    return sorted(
        {
            target
            for s in sweeps
            for t in s.trials
            for metric in t.record.metrics
            if (target := target_of(metric)) is not None
        }
    )


def results(members: Sequence[Sweep], targets: Sequence[str]) -> list[ReplicatedResult]:
    """Per target, the search's winners over its replicates (targets no trial reports left out)."""
    replicates = [replicate(s) for s in members]
    out = [replicated_result(replicates, t) for t in targets]
    return [r for r in out if r.winners]


# --- the selection gap ---------------------------------------------------------------------------


def honest_protocols(sweep: Sweep, target: str) -> dict[str, tuple[str, str]]:
    """The honest protocols whose choice a sweep's records can tell, and the (metric, mode) each
    selects on for `target`: the label-free ones (every trial logs their scores), and the held-out
    accuracy val_acc under the protocol that held it out (a label-free sweep holds out source
    images, as source_val)."""
    protocols: dict[str, tuple[str, str]] = {}
    held_out = val_acc_protocol(sweep.protocol)
    if held_out is not None:
        protocols[held_out] = (VAL_ACC, "max")
    for name in SELECTION_PROTOCOLS:
        score = label_free(name)
        if score is not None:
            protocols[name] = (score_key(score.name, target), score.direction)
    return protocols


def sweep_gaps(sweep: Sweep, targets: Sequence[str]) -> list[SelectionGap]:
    """Per target, the oracle's winner's reported accuracy minus each honest protocol's winner's,
    among one sweep's trials (no rerun: the records hold every target accuracy and score)."""
    trials = [outcome(t) for t in sweep.trials]
    return [
        g for target in targets for g in selection_gaps(trials, [target], honest_protocols(sweep, target))
    ]


@dataclass(frozen=True)
class Gap:
    search: str
    target: str
    protocol: str
    metric: str
    gap: Estimate  # over replicates
    per_replicate: tuple[SelectionGap, ...]


def gaps(members: Sequence[Sweep], targets: Sequence[str]) -> list[Gap]:
    """A search's selection gaps, per target and honest protocol, as mean ± SE over replicates
    (replicate_stats.gaps_over_replicates)."""
    per_replicate = [sweep_gaps(sweep, targets) for sweep in members]
    over = gaps_over_replicates(per_replicate)
    found: dict[tuple[str, str], list[SelectionGap]] = {}
    for replicate_gaps in per_replicate:
        for g in replicate_gaps:
            found.setdefault((g.target, g.protocol), []).append(g)
    return [
        Gap(members[0].search, target, protocol, per[0].metric, over[(target, protocol)], tuple(per))
        for (target, protocol), per in found.items()
    ]


# --- against each other ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Versus:
    target: str
    protocol: str
    search: str
    other: str
    kind: str  # "grid": a search against a grid; "cold": a warm-started search against a cold one
    separation: Separation

    def text(self) -> str:
        return self.separation.text(self.search, self.other)


def versus(by_search: dict[str, list[ReplicatedResult]], kinds: dict[str, str]) -> list[Versus]:
    """Each search against each grid, and each warm-started search against each cold search,
    per target, under the same protocol (never across protocols).

    `kinds`: search -> "grid" | "warm" | "search"."""
    out = []
    for name, mine in by_search.items():
        if kinds[name] == "grid":
            continue
        for other, theirs in by_search.items():
            pairing = "grid" if kinds[other] == "grid" else "cold" if kinds[name] == "warm" else None
            if other == name or pairing is None or (pairing == "cold" and kinds[other] != "search"):
                continue
            for a in mine:
                b = next((r for r in theirs if (r.target, r.protocol) == (a.target, a.protocol)), None)
                if b is not None:
                    out.append(
                        Versus(a.target, a.protocol, name, other, pairing, separate(a.accuracy, b.accuracy))
                    )
    return out


def kind(members: Sequence[Sweep]) -> str:
    first = members[0]
    if first.lists_configurations:
        return "grid"
    return "warm" if first.warm_start else "search"


# --- the table -----------------------------------------------------------------------------------


def row_label(search: str, members: Sequence[Sweep]) -> str:
    what = {"grid": "grid", "warm": f"search warm-started from {members[0].warm_start}", "search": "search"}
    return f"{search}'s winner ({what[kind(members)]})"


def baseline_row(sweeps: Sequence[Sweep], protocol: str, targets: Sequence[str]) -> TableRow | None:
    """The baseline (mode baseline) of the fixed-configuration sweeps under `protocol`: one figure
    per run of it (its seeds, over replicates), never selected."""
    values: dict[str, dict[int, float]] = {}
    k = 0
    for sweep in sweeps:
        if sweep.protocol != protocol or sweep.algorithm not in FIXED_ALGORITHMS:
            continue
        for trial in sorted(sweep.trials, key=lambda t: t.record.number):
            if trial.mode != BASELINE or trial.record.status != COMPLETED:
                continue
            for target in targets:
                value = trial.record.metrics.get(f"acc_{target}")
                if value is not None and math.isfinite(value):
                    values.setdefault(target, {})[k] = value
            k += 1
    return TableRow("baseline (no shaping)", NOT_SELECTED, values, over="seeds") if values else None


def table_rows(sweeps: Sequence[Sweep], protocol: str, targets: Sequence[str]) -> list[TableRow]:
    """Grids' winners, then the searches' (cold, then warm-started), then the baseline, under one
    protocol: every row selected by it, its cells mean ± SE over replicates."""
    rows: list[tuple[int, TableRow]] = []
    order = {"grid": 0, "search": 1, "warm": 2}
    for name, members in searches(sweeps).items():
        if members[0].protocol != protocol:
            continue
        found = results(members, targets)
        if found:
            rows.append((order[kind(members)], row_from_results(row_label(name, members), found)))
    rows.sort(key=lambda pair: pair[0])
    base = baseline_row(sweeps, protocol, targets)
    return [row for _, row in rows] + ([base] if base else [])


# --- the report of one replicated search ------------------------------------------------------------


def estimate_text(e: Estimate, unit: str = "") -> str:
    if e.n == 0:
        return "-"
    if e.n == 1:
        return f"{e.mean:.2f}{unit} (1 replicate: no spread measured)"
    return f"{e.mean:.2f} ± {e.se:.2f}{unit} (mean ± SE over {e.n} replicates; sd {e.sd:.2f})"


def result_lines(result: ReplicatedResult) -> list[str]:
    """A search's answer for one target: mean ± SE, each replicate's winner, what won how often."""
    note = f" ({selection_label(result.protocol)})" if selects_on_reported(result.protocol) else ""
    lines = [
        f"target {result.target} · selection {result.protocol}{note}, each replicate's winner by "
        f"{result.metric} ({result.mode}): acc_{result.target} {estimate_text(result.accuracy)}"
    ]
    for w in result.winners:
        se = f" ± {w.accuracy_se:.2f}" if w.accuracy_se is not None else ""
        lines.append(
            f"  replicate {w.replicate}: trial {w.trial} {w.label}: acc_{result.target} {w.accuracy:.2f}{se} "
            f"({result.metric} {w.selection:.4g})"
        )
    if result.missing:
        lines.append(f"  no winner in replicate {', '.join(map(str, result.missing))} (no trial reported it)")
    total = len(result.winners)
    won = ", ".join(f"{label} ({n} of {total})" for label, n in result.won)
    lines.append(f"  configurations that won: {won}")
    return lines


def budget_line(result: ReplicatedResult) -> str:
    parts = [
        f"replicate {b.replicate}: {count(b.trials, 'trial')}, {count(b.epochs, 'epoch')}, "
        f"{b.device_s:.0f} device-s"
        for b in result.budgets
    ]
    return "budget (time_train + time_eval): " + "; ".join(parts)


def gap_lines(found: Sequence[Gap]) -> list[str]:
    if not found:
        return []
    lines = [
        "selection gap: the oracle's winner's reported accuracy minus each honest protocol's winner's, "
        "among the same trials (what selecting on the test data would have bought):"
    ]
    for g in sorted(found, key=lambda g: (g.target, g.protocol)):
        lines.append(f"  target {g.target} · {g.protocol} (by {g.metric}): {estimate_text(g.gap, ' points')}")
    return lines


def report(name: str, members: Sequence[Sweep]) -> dict[str, Any]:
    """What a replicated search's parent run logs (replicates.json) and its text says."""
    targets = targets_of(members)
    found = results(members, targets)
    return {
        "search": name,
        "replicates": [
            {"replicate": s.replicate, "sweep": s.name, "seeds": s.seeds, "trials": len(s.trials)}
            for s in members
        ],
        "results": [
            {
                "target": r.target,
                "protocol": r.protocol,
                "metric": r.metric,
                "mode": r.mode,
                "mean": r.accuracy.mean,
                "se": r.accuracy.se if r.accuracy.n > 1 else None,
                "sd": r.accuracy.sd if r.accuracy.n > 1 else None,
                "n": r.accuracy.n,
                "winners": [vars(w) for w in r.winners],
                "won": [{"configuration": label, "times": n} for label, n in r.won],
                "budgets": [vars(b) for b in r.budgets],
            }
            for r in found
        ],
        "selection_gaps": [
            {
                "target": g.target,
                "protocol": g.protocol,
                "metric": g.metric,
                "mean": g.gap.mean,
                "n": g.gap.n,
                "se": g.gap.se if g.gap.n > 1 else None,
            }
            for g in gaps(members, targets)
        ],
    }


def report_text(name: str, members: Sequence[Sweep]) -> str:
    targets = targets_of(members)
    found = results(members, targets)
    first = members[0]
    seeds = "; ".join(f"r{s.replicate}: {s.seeds}" for s in members if s.seeds)
    lines = [
        f"replicated search {name}: {count(len(members), 'replicate')} "
        f"({', '.join(s.name for s in members)}), "
        f"{first.algorithm} search, selection {first.protocol}" + (f"; seeds {seeds}" if seeds else "")
    ]
    if not found:
        lines.append("  no replicate has a trial that reported a result")
    for r in found:
        lines += result_lines(r)
    if found:
        lines.append(budget_line(found[0]))
    return "\n".join(lines + gap_lines(gaps(members, targets)))


# --- everything compare answers beside its curves ------------------------------------------------------


@dataclass
class Answers:
    targets: list[str]
    kinds: dict[str, str]  # search -> grid | search | warm
    results: dict[str, list[ReplicatedResult]]  # search -> its per-target results
    versus: list[Versus]
    gaps: list[Gap]
    tables: dict[str, Table]  # protocol -> the DomainBed-style table of the searches under it


def answers(sweeps: Sequence[Sweep]) -> Answers:
    targets = targets_of(sweeps)
    by_search = searches(sweeps)
    kinds = {name: kind(members) for name, members in by_search.items()}
    found = {name: results(members, targets) for name, members in by_search.items()}
    tables = {}
    for protocol in dict.fromkeys(s.protocol for s in sweeps):
        rows = table_rows(sweeps, protocol, targets)
        if rows:
            tables[protocol] = build_table(rows, [t for t in targets if any(t in r.values for r in rows)])
    return Answers(
        targets,
        kinds,
        found,
        versus(found, kinds),
        [g for members in by_search.values() for g in gaps(members, targets)],
        tables,
    )
