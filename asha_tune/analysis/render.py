"""The comparison as text and CSV: every figure says its protocol; those of a protocol that
selects on the data it reports (oracle) say so, in its record's words (registry.selection_label);
published figures are the paper's."""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path
from typing import Any

from asha_tune.analysis import reference
from asha_tune.analysis.answers import Answers, Gap, Versus, budget_line, estimate_text, result_lines
from asha_tune.analysis.curves import Comparison, GridRow, Group
from asha_tune.display import count
from asha_tune.trial.registry import PAPER_PROTOCOL, selection_label, selects_on_reported


def figure_text(value: float | None, se: float | None = None) -> str:
    """A figure to two decimals, ± its SE where given; `-` for none (the report page's too)."""
    if value is None:
        return "-"
    return f"{value:.2f}" + (f" ± {se:.2f}" if se is not None else "")


def _reached(what: str, level: float | None, epochs: Any, seconds: Any) -> str:
    if level is None:
        return f"no {what} to reach"
    if epochs is None:
        return f"{what} ({level:.2f}) not reached"
    return f"{what} ({level:.2f}) reached at {count(epochs, 'epoch')}, {seconds:.0f} device-s"


def report_text(comparison: Comparison) -> str:
    lines = ["sweeps and the selection protocol each used (recorded on its parent run):"]
    for s in comparison.sweeps:
        kind = "replayed grid" if s.lists_configurations else f"{s.algorithm} search"
        if s.family:
            kind += f", replicate {s.replicate} of {s.family}" + (f" (seeds: {s.seeds})" if s.seeds else "")
        if s.warm_start:
            kind += f", warm-started from {s.warm_start} ({count(s.warm_added, 'trial')} added)"
        note = _reported_note(s.protocol)
        ended = count(len(s.trials), "trial")
        gpu = "" if s.gpu_percent is None else f", mean GPU use {s.gpu_percent:.0f}%"
        lines.append(f"  {s.name}: {kind}, selection {s.protocol}{note}, {ended} ended{gpu}")
    for g in comparison.groups:
        lines += ["", *_group_text(g)]
    if comparison.grid:
        lines += ["", *grid_text(comparison.grid)]
    return "\n".join(lines)


def selection_note(protocol: str) -> str:
    """How a protocol's figures were selected, in a heading's words: `oracle: selected on the
    data it reports (optimistic)`."""
    return selection_label(protocol, caveat=True)


def _reported_note(protocol: str) -> str:
    """` (oracle: ...)` beside the name of a protocol selected on the data it reports."""
    return f" ({selection_note(protocol)})" if selects_on_reported(protocol) else ""


def _group_text(g: Group) -> list[str]:
    lines = [f"== target {g.target} · selection {selection_note(g.protocol)} =="]
    pub = g.published_best
    lines.append(published_line(g))
    lines.append(
        "grid's best under this protocol: "
        + (figure_text(g.grid_best) if g.grid_best is not None else "no replayed grid with this protocol")
    )
    lines.append(
        "best so far against budget spent, trials in order of completion (budget: the whole "
        "sweep's epochs and device-seconds of time_train + time_eval):"
    )
    lines.append(
        f"  {'sweep':20s} {'ended':>5s} {'epochs':>7s} {'device-s':>9s} {'best trial':>10s} "
        f"{'selection':>16s} {'acc_' + g.target + ' ± se':>18s}"
    )
    for name, points in g.curves.items():
        for p in points:
            best = "-" if p.best_trial is None else p.best_trial
            lines.append(
                f"  {name:20s} {p.completed:5d} {p.budget_epochs:7d} {p.budget_device_s:9.1f} {best:>10} "
                f"{figure_text(p.best_selection):>16s} {figure_text(p.best_acc, p.best_acc_se):>18s}"
            )
    lines.append("best configuration of each sweep (selected by its protocol) beside the paper's best:")
    lines += [best_line(g, r) for r in g.best_rows]
    if pub:
        lines.append(
            f"  paper (published, {reference.PUBLISHED_SELECTION}): {pub[0]}: acc_{g.target} {pub[1]:.2f}"
        )
    return lines


def published_line(g: Group) -> str:
    """The paper's best figure on the group's target, labelled as the paper's (oracle-selected)."""
    pub = g.published_best
    return "published best: " + (
        f"{pub[1]:.2f} % ({pub[0]}; paper, selected by {reference.PUBLISHED_SELECTION})" if pub else "none"
    )


def best_line(g: Group, r: dict[str, Any]) -> str:
    """A sweep's best trial on the group's target, confirmed or not, and when it reached the grid's
    and the paper's best."""
    confirmed = (
        f"confirmed {r['confirmed_mean']:.2f} ± {r['confirmed_sd']:.2f} (mean ± sd, "
        f"{count(r['confirmed_n'], 'run')})"
        if r["confirmed_n"]
        else "not confirmed"
    )
    grid = _reached("grid best", g.grid_best, r["matched_grid_best_epochs"], r["matched_grid_best_device_s"])
    published = _reached(
        "published best",
        g.published_best[1] if g.published_best else None,
        r["matched_published_best_epochs"],
        r["matched_published_best_device_s"],
    )
    selection = f"{r['selection_metric']} {figure_text(r['selection'], r['selection_se'])}"
    return (
        f"  {r['sweep']}: trial {r['best_trial']} {r['configuration']}: acc_{g.target} "
        f"{figure_text(r['acc'], r['acc_se'])} ({selection}); {confirmed}; {grid}; {published}"
    )


def grid_text(rows: list[GridRow]) -> list[str]:
    """The replayed grid against the published figures, per configuration, and what noise is."""
    lines = [
        "replayed grid, ours against published (paper), per configuration; ours selected nothing "
        "(every configuration ran), both are single runs:",
        f"  {'configuration':26s} {'target':8s} {'ours ± se':>14s} {'published':>9s} {'diff':>7s} "
        f"{'2·se':>6s} {'seed spread':>11s}  within noise",
    ]
    several = len({r.sweep for r in rows}) > 1
    for r in rows:
        spread = "-" if r.seed_spread is None else f"{r.seed_spread:.1f}"
        label = f"{r.configuration} ({r.sweep})" if several else r.configuration
        lines.append(
            f"  {label:26s} {r.target:8s} {figure_text(r.ours, r.ours_se):>14s} "
            f"{r.published:9.2f} {r.difference:+7.2f} {2 * r.se_difference:6.2f} {spread:>11s}  "
            f"{'yes' if r.within_noise else 'no'}"
        )
    lines.append(
        "  noise: within 2 binomial standard errors of the difference, or within the seed spread "
        f"({reference.SEED_SPREAD_SOURCE})"
    )
    return lines


def answers_text(a: Answers) -> str:
    """Replicate-level figures: each search's answer, searches against grids, warm against cold,
    and the selection gap; a sweep of its own counts as one replicate."""
    lines = [
        "== replicated results: per target and protocol, each replicate's winner selected by its own "
        "protocol, its reported accuracy as mean ± SE over replicates (a sweep of its own is one) =="
    ]
    for name, found in a.results.items():
        if not found:
            continue
        lines.append(f"{name} ({a.kinds[name]}):")
        lines += [f"  {line}" for r in found for line in result_lines(r)]
        lines.append(f"  {budget_line(found[0])}")
    for kind, title in (
        (
            "grid",
            "a search against a grid: it beats the grid only beyond two standard errors of the difference",
        ),
        ("cold", "a warm-started search against a cold one (same rule)"),
    ):
        mine = [v for v in a.versus if v.kind == kind]
        if mine:
            lines += ["", f"== {title} =="]
            lines += [f"  {versus_line(v)}" for v in mine]
    if a.gaps:
        lines += ["", *_gap_lines_by_search(a.gaps)]
    return "\n".join(lines)


def versus_line(v: Versus) -> str:
    """One verdict: a search against a grid (or a warm start against a cold search), one target
    and protocol; compare's text and the report's page both say it so."""
    return f"target {v.target} · selection {v.protocol}{_reported_note(v.protocol)}: {v.text()}"


def _gap_lines_by_search(gaps: list[Gap]) -> list[str]:
    lines = [  # the gap's reference selects on the reported accuracy, as the paper's protocol does
        f"== selection gap: the {PAPER_PROTOCOL}'s winner's reported accuracy minus each honest protocol's "
        "winner's among the same trials, per target (what selecting on the test data would have bought) =="
    ]
    for g in sorted(gaps, key=lambda g: (g.search, g.target, g.protocol)):
        gap = estimate_text(g.gap, " points")
        lines.append(f"  {g.search} · target {g.target} · {g.protocol} (by {g.metric}): {gap}")
    return lines


def answers_rows(a: Answers) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, found in a.results.items():
        for r in found:
            e = r.accuracy
            rows.append(
                {
                    "section": "replicated",
                    "sweep": name,
                    "kind": a.kinds[name],
                    "protocol": r.protocol,
                    "target": r.target,
                    "selection_metric": r.metric,
                    "acc": e.mean,
                    "acc_se": e.se if e.n > 1 else None,
                    "acc_sd": e.sd if e.n > 1 else None,
                    "replicates": e.n,
                    "won": "; ".join(f"{label} x{n}" for label, n in r.won),
                    "epochs": sum(b.epochs for b in r.budgets),
                    "device_s": sum(b.device_s for b in r.budgets),
                }
            )
    for v in a.versus:
        sep = v.separation
        rows.append(
            {
                "section": f"versus_{v.kind}",
                "sweep": v.search,
                "other": v.other,
                "protocol": v.protocol,
                "target": v.target,
                "difference": sep.difference,
                "se_difference": sep.se,
                "verdict": sep.verdict,
                "replicates": sep.search.n,
                "other_replicates": sep.grid.n,
                "replicates_needed": sep.replicates_needed,
                "welch_t95": sep.welch_t95,
            }
        )
    for g in a.gaps:
        rows.append(
            {
                "section": "selection_gap",
                "sweep": g.search,
                "protocol": g.protocol,
                "target": g.target,
                "selection_metric": g.metric,
                "gap": g.gap.mean,
                "gap_se": g.gap.se if g.gap.n > 1 else None,
                "replicates": g.gap.n,
            }
        )
    return rows


def csv_rows(comparison: Comparison) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for g in comparison.groups:
        for points in g.curves.values():
            rows += [{"section": "best_so_far", **asdict(p)} for p in points]
        rows += [{"section": "best", **r} for r in g.best_rows]
        if g.published_best:
            rows.append(
                {
                    "section": "best",
                    "sweep": "paper (published)",
                    "protocol": reference.PUBLISHED_SELECTION,
                    "target": g.target,
                    "configuration": g.published_best[0],
                    "acc": g.published_best[1],
                }
            )
    rows += [
        {"section": "grid_vs_published", "protocol": reference.PUBLISHED_SELECTION, **asdict(r)}
        for r in comparison.grid
    ]
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
