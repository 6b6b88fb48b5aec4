"""`asha-tune compare`: does a search beat the paper's grid, and at what cost.

Everything is read from stored MLflow records (sweep parent runs, their trials, confirmation
runs), never from a running sweep. Figures are grouped by target domain and by selection
protocol, never mixed: under `oracle` a trial is selected on the accuracy it reports (the paper's
protocol, optimistic), which every output says. Published figures are the paper's, labelled so.
"""

from __future__ import annotations

import csv
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from asha_tune.analysis import reference
from asha_tune.analysis.verdicts import best_trial
from asha_tune.display import count, values_text
from asha_tune.errors import ConfigError
from asha_tune.tracking import Tracker
from asha_tune.tracking.client import local_store
from asha_tune.tracking.records import TrialRecord, trial_record
from asha_tune.tracking.tags import (
    COMPARED_IN_TAG,
    COMPARES_RUNS_TAG,
    COMPARES_TAG,
    COMPARISON_KIND,
    COMPLETED,
    CONFIRMS_TRIAL_TAG,
    DEVICE_TIME_METRICS,
    FINAL_STATUSES,
    KIND_TAG,
    STATUS_TAG,
    SWEEP_TAG,
)
from asha_tune.trial.selection import SE_SUFFIX, VAL_ACC, binomial_se

ORACLE_NOTE = "oracle: selected on the data it reports (optimistic)"


@dataclass(frozen=True)
class TrialRun:
    record: TrialRecord
    ended_ms: int
    device_s: float  # sum over its logged epochs of time_train + time_eval
    configuration: str | None
    n: dict[str, int]  # evaluation set sizes (n_<domain>), from the run's params


@dataclass
class Sweep:
    name: str
    parent_run_id: str
    experiment_id: str
    protocol: str
    algorithm: str
    trials: list[TrialRun]  # ended trials, in order of completion
    published: dict[str, dict[str, float]]  # configuration id -> published figures (its space)
    confirmations: dict[int, list[dict[str, float]]] = field(default_factory=dict)  # trial -> runs

    @property
    def is_grid(self) -> bool:
        return self.algorithm == "list"


# --- reading ---------------------------------------------------------------------------------


def open_store(uri: str) -> Tracker:
    db = local_store(uri)
    if db is not None and not db.is_file():
        raise ConfigError(f"no MLflow store at {db}: pass --tracking-uri (the store the sweeps used)")
    return Tracker(uri)


def find_parent(tracker: Tracker, name: str) -> Any:
    ids = tracker.experiment_ids()
    runs = [
        r
        for r in tracker.client.search_runs(ids, f"tags.`{SWEEP_TAG}` = '{name}'", max_results=50)
        if KIND_TAG not in r.data.tags and "mlflow.parentRunId" not in r.data.tags
    ]
    if not runs:
        known = sorted(
            {
                r.data.tags[SWEEP_TAG]
                for r in tracker.client.search_runs(ids, f"tags.`{SWEEP_TAG}` != ''", max_results=500)
                if "mlflow.parentRunId" not in r.data.tags
            }
        )
        hint = f" (sweeps there: {', '.join(known)})" if known else " (it holds no sweep)"
        raise ConfigError(f"no sweep named {name} in {tracker.uri}{hint}")
    return runs[0]


def _device_seconds(tracker: Tracker, run: Any) -> float:
    history = tracker.client.get_metric_history
    return sum(m.value for key in DEVICE_TIME_METRICS for m in history(run.info.run_id, key))


def _trial(tracker: Tracker, run: Any) -> TrialRun:
    record = trial_record(run)
    values, params = record.values, run.data.params
    n = {k[2:]: int(v) for k, v in params.items() if k.startswith("n_") and v.isdigit()}
    return TrialRun(
        record, int(run.info.end_time or 0), _device_seconds(tracker, run), values.get("configuration"), n
    )


def _confirmations(tracker: Tracker, experiment_id: str, parent_run_id: str) -> dict[int, list[dict]]:
    """Confirmation runs nested under the sweep's parent: the last metrics of each repeat, by trial."""
    found: dict[int, list[dict[str, float]]] = {}
    nested = tracker.find_runs(
        experiment_id, f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{KIND_TAG}` = 'confirmation'"
    )
    for confirmation in nested:
        children = f"tags.mlflow.parentRunId = '{confirmation.info.run_id}'"
        for run in tracker.find_runs(experiment_id, children):
            number = run.data.tags.get(CONFIRMS_TRIAL_TAG)
            if number is not None and run.data.tags.get(STATUS_TAG) == COMPLETED:
                found.setdefault(int(number), []).append(dict(run.data.metrics))
    return found


def read_sweep(tracker: Tracker, name: str) -> Sweep:
    parent = find_parent(tracker, name)
    pid, experiment_id = parent.info.run_id, parent.info.experiment_id
    children = tracker.find_runs(experiment_id, f"tags.mlflow.parentRunId = '{pid}'")
    trials = [
        _trial(tracker, r)
        for r in children  # ended trials; not a nested confirmation
        if KIND_TAG not in r.data.tags and r.data.tags.get(STATUS_TAG) in FINAL_STATUSES
    ]
    trials.sort(key=lambda t: (t.ended_ms, t.record.number))
    space = tracker.load_dict(pid, "space.json") or {}
    published = {c["id"]: dict(c.get("published") or {}) for c in space.get("configurations", [])}
    params = parent.data.params
    return Sweep(
        name,
        pid,
        experiment_id,
        params.get("selection.protocol", "unknown"),
        params.get("search.algorithm", "unknown"),
        trials,
        published,
        _confirmations(tracker, experiment_id, pid),
    )


def paper_best(domain: str) -> tuple[str, float] | None:
    """The paper's best published figure on a target, and its configuration (from paper_grid)."""
    from asha_tune.spaces import load_space

    space = load_space(reference.paper_grid_path())
    figures = [
        (c.id, c.published[f"acc_{domain}"]) for c in space.configurations if f"acc_{domain}" in c.published
    ]
    return max(figures, key=lambda f: f[1]) if figures else None


# --- computing -------------------------------------------------------------------------------


def selection_metric(protocol: str, domain: str) -> str:
    """What picks the best trial for a target: under oracle the target's own accuracy."""
    return f"acc_{domain}" if protocol == "oracle" else VAL_ACC


@dataclass(frozen=True)
class CurvePoint:
    sweep: str
    protocol: str
    target: str
    completed: int  # trials ended so far
    trial: int  # the trial that just ended
    budget_epochs: int
    budget_device_s: float
    best_trial: int | None
    selection_metric: str
    best_selection: float | None
    best_acc: float | None  # the reported target accuracy of the best trial so far
    best_acc_se: float | None


def curve(sweep: Sweep, domain: str) -> list[CurvePoint]:
    """Best selection so far against budget spent (the whole sweep's), trial by trial as they
    ended; the best is picked by `reports.best_trial`'s rule, as the sweep's final answer."""
    metric, acc = selection_metric(sweep.protocol, domain), f"acc_{domain}"
    points, ended, epochs, seconds = [], [], 0, 0.0
    for k, trial in enumerate(sweep.trials, 1):
        epochs, seconds = epochs + trial.record.epochs, seconds + trial.device_s
        ended.append(trial.record)
        best = best_trial([r for r in ended if acc in r.metrics], metric, "max")
        m = best.metrics if best else {}
        points.append(
            CurvePoint(
                sweep.name,
                sweep.protocol,
                domain,
                k,
                trial.record.number,
                epochs,
                seconds,
                best.number if best else None,
                metric,
                m.get(metric),
                m.get(acc),
                m.get(acc + SE_SUFFIX),
            )
        )
    return points


def first_reaching(points: list[CurvePoint], level: float | None) -> CurvePoint | None:
    if level is None:
        return None
    return next((p for p in points if p.best_acc is not None and p.best_acc >= level - 1e-9), None)


@dataclass(frozen=True)
class GridRow:
    sweep: str
    configuration: str
    trial: int
    target: str
    ours: float
    ours_se: float
    published: float
    difference: float  # ours - published, percentage points
    se_difference: float  # binomial: sqrt(se_ours^2 + se_published^2), published at our n
    seed_spread: float | None  # the known repeat spread for the target (reference.SEED_SPREAD_PP)
    within_2se: bool
    within_seed_spread: bool | None
    within_noise: bool


def grid_rows(sweep: Sweep) -> list[GridRow]:
    """A replayed grid, configuration by configuration: ours against published, and the noise."""
    rows = []
    for trial in sweep.trials:
        figures = sweep.published.get(trial.configuration or "", {})
        for metric, published in figures.items():
            domain = metric.removeprefix("acc_")
            if metric not in trial.record.metrics or trial.record.status != COMPLETED:
                continue
            ours = trial.record.metrics[metric]
            n = trial.n.get(domain) or reference.DOMAIN_SIZES[domain]
            se = trial.record.metrics.get(metric + SE_SUFFIX, binomial_se(ours, n))
            se_diff = math.hypot(se, binomial_se(published, n))
            diff = ours - published
            spread = reference.SEED_SPREAD_PP.get(domain)
            within_se = abs(diff) <= 2 * se_diff
            within_spread = None if spread is None else abs(diff) <= spread
            rows.append(
                GridRow(
                    sweep.name,
                    trial.configuration or "",
                    trial.record.number,
                    domain,
                    ours,
                    se,
                    published,
                    diff,
                    se_diff,
                    spread,
                    within_se,
                    within_spread,
                    within_se or bool(within_spread),
                )
            )
    return rows


def confirmed(sweep: Sweep, trial: int | None, metric: str) -> tuple[float, float, int] | None:
    """Mean, sd and count of a metric over a trial's confirmation runs, where `confirm` ran."""
    runs = sweep.confirmations.get(trial, []) if trial is not None else []
    values = [m[metric] for m in runs if metric in m]
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


@dataclass
class Group:
    """One target domain under one selection protocol."""

    target: str
    protocol: str
    curves: dict[str, list[CurvePoint]]
    grid_best: float | None  # the best grid's selected trial, reported accuracy
    published_best: tuple[str, float] | None
    best_rows: list[dict[str, Any]]


@dataclass
class Comparison:
    sweeps: list[Sweep]
    groups: list[Group]
    grid: list[GridRow]


def _best_row(
    sweep: Sweep,
    points: list[CurvePoint],
    domain: str,
    grid_best: float | None,
    published: tuple[str, float] | None,
) -> dict[str, Any]:
    last = points[-1] if points else None
    trial = next((t for t in sweep.trials if last and t.record.number == last.best_trial), None)
    row: dict[str, Any] = {
        "sweep": sweep.name,
        "protocol": sweep.protocol,
        "target": domain,
        "best_trial": last.best_trial if last else None,
        "configuration": (trial.configuration or values_text(trial.record.values)) if trial else None,
        "selection_metric": last.selection_metric if last else None,
        "selection": last.best_selection if last else None,
        "selection_se": (
            trial.record.metrics.get(f"{last.selection_metric}{SE_SUFFIX}") if trial and last else None
        ),
        "acc": last.best_acc if last else None,
        "acc_se": last.best_acc_se if last else None,
        "trials": len(points),
        "epochs": last.budget_epochs if last else 0,
        "device_s": last.budget_device_s if last else 0.0,
    }
    for label, level in (("grid_best", grid_best), ("published_best", published[1] if published else None)):
        hit = first_reaching(points, level)
        row[f"matched_{label}_epochs"] = hit.budget_epochs if hit else None
        row[f"matched_{label}_device_s"] = hit.budget_device_s if hit else None
    conf = confirmed(sweep, row["best_trial"], f"acc_{domain}")
    row["confirmed_mean"], row["confirmed_sd"], row["confirmed_n"] = conf if conf else (None, None, 0)
    return row


def compare(sweeps: list[Sweep]) -> Comparison:
    groups = []
    keys = sorted(
        {
            (sweep.protocol, metric.removeprefix("acc_"))
            for sweep in sweeps
            for t in sweep.trials
            for metric in t.record.metrics
            if metric.startswith("acc_") and not metric.endswith(SE_SUFFIX)
        }
    )
    for protocol, domain in keys:
        members = [s for s in sweeps if s.protocol == protocol]
        curves = {s.name: curve(s, domain) for s in members}
        curves = {k: v for k, v in curves.items() if any(p.best_acc is not None for p in v)}
        grids = [
            v[-1].best_acc
            for k, v in curves.items()
            if next(s for s in members if s.name == k).is_grid and v[-1].best_acc is not None
        ]
        grid_best = max(grids) if grids else None
        published = paper_best(domain)
        rows = [
            _best_row(s, curves[s.name], domain, grid_best, published) for s in members if s.name in curves
        ]
        groups.append(Group(domain, protocol, curves, grid_best, published, rows))
    return Comparison(sweeps, groups, [row for s in sweeps if s.is_grid for row in grid_rows(s)])


# --- output ----------------------------------------------------------------------------------


def _pct(value: float | None, se: float | None = None) -> str:
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
        kind = "replayed grid" if s.is_grid else f"{s.algorithm} search"
        note = f" ({ORACLE_NOTE})" if s.protocol == "oracle" else ""
        ended = count(len(s.trials), "trial")
        lines.append(f"  {s.name}: {kind}, selection {s.protocol}{note}, {ended} ended")
    for g in comparison.groups:
        lines += ["", *_group_text(g)]
    if comparison.grid:
        lines += ["", *_grid_text(comparison.grid)]
    return "\n".join(lines)


def _group_text(g: Group) -> list[str]:
    held_out = f"{g.protocol}: selected on held-out images, not the reported ones"
    lines = [f"== target {g.target} · selection {ORACLE_NOTE if g.protocol == 'oracle' else held_out} =="]
    pub = g.published_best
    lines.append(
        "published best: " + (f"{pub[1]:.2f} % ({pub[0]}; paper, selected by oracle)" if pub else "none")
    )
    lines.append(
        "grid's best under this protocol: "
        + (_pct(g.grid_best) if g.grid_best is not None else "no replayed grid with this protocol")
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
                f"  {name:20s} {p.completed:5d} {p.budget_epochs:7d} {p.budget_device_s:9.1f} "
                f"{best:>10} {_pct(p.best_selection):>16s} {_pct(p.best_acc, p.best_acc_se):>18s}"
            )
    lines.append("best configuration of each sweep (selected by its protocol) beside the paper's best:")
    lines += [_best_line(g, r) for r in g.best_rows]
    if pub:
        lines.append(f"  paper (published, oracle): {pub[0]}: acc_{g.target} {pub[1]:.2f}")
    return lines


def _best_line(g: Group, r: dict[str, Any]) -> str:
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
    selection = f"{r['selection_metric']} {_pct(r['selection'], r['selection_se'])}"
    return (
        f"  {r['sweep']}: trial {r['best_trial']} {r['configuration']}: acc_{g.target} "
        f"{_pct(r['acc'], r['acc_se'])} ({selection}); {confirmed}; {grid}; {published}"
    )


def _grid_text(rows: list[GridRow]) -> list[str]:
    lines = [
        "replayed grid, ours against published (paper), per configuration; ours selected nothing "
        "(every configuration ran), both are single runs:",
        f"  {'configuration':26s} {'target':8s} {'ours ± se':>14s} {'published':>9s} {'diff':>7s} "
        f"{'2·se':>6s} {'seed spread':>11s}  within noise",
    ]
    for r in rows:
        spread = "-" if r.seed_spread is None else f"{r.seed_spread:.1f}"
        lines.append(
            f"  {r.configuration:26s} {r.target:8s} {_pct(r.ours, r.ours_se):>14s} "
            f"{r.published:9.2f} {r.difference:+7.2f} {2 * r.se_difference:6.2f} {spread:>11s}  "
            f"{'yes' if r.within_noise else 'no'}"
        )
    lines.append(
        "  noise: within 2 binomial standard errors of the difference, or within the seed spread "
        f"({reference.SEED_SPREAD_SOURCE})"
    )
    return lines


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
    rows += [{"section": "grid_vs_published", "protocol": "oracle", **asdict(r)} for r in comparison.grid]
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def run_compare(names: list[str], tracking_uri: str, out_dir: Path) -> tuple[Comparison, str, str]:
    """Read the sweeps, write the table, CSV and PNGs to `out_dir`, log them as a comparison run."""
    from asha_tune.analysis import plots

    if not names:
        raise ConfigError("name at least one sweep to compare")
    tracker = open_store(tracking_uri)
    sweeps = [read_sweep(tracker, name) for name in dict.fromkeys(names)]
    comparison = compare(sweeps)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = report_text(comparison)
    (out_dir / "comparison.txt").write_text(text + "\n")
    write_csv(csv_rows(comparison), out_dir / "comparison.csv")
    for g in comparison.groups:
        plots.best_so_far(g, out_dir / f"best_so_far_{g.target}_{g.protocol}.png")
    if comparison.grid:
        plots.grid_vs_published(comparison.grid, out_dir / "grid_vs_published.png")
    run_id = log_comparison(tracker, sweeps, out_dir)
    return comparison, text, run_id


def log_comparison(tracker: Tracker, sweeps: list[Sweep], out_dir: Path) -> str:
    """A run in the first sweep's experiment, tagged with (and linking to) the sweeps' parent runs."""
    experiment_id = sweeps[0].experiment_id
    links = "\n".join(
        f"- [{s.name}](#/experiments/{s.experiment_id}/runs/{s.parent_run_id}) (selection {s.protocol})"
        for s in sweeps
    )
    tags = {
        KIND_TAG: COMPARISON_KIND,
        COMPARES_TAG: ",".join(s.name for s in sweeps),
        COMPARES_RUNS_TAG: ",".join(s.parent_run_id for s in sweeps),
        **{f"{COMPARES_TAG}.{s.name}": s.parent_run_id for s in sweeps},
        "mlflow.note.content": f"Comparison of sweeps (published figures are the paper's):\n{links}",
    }
    run_id = tracker.start_run(
        experiment_id,
        f"compare-{'+'.join(s.name for s in sweeps)}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags=tags,
    )
    tracker.log_artifacts(run_id, out_dir)
    tracker.finish(run_id, COMPLETED)
    for s in sweeps:  # the way back, from each sweep to its latest comparison
        tracker.set_tags(s.parent_run_id, {COMPARED_IN_TAG: run_id})
    return run_id
