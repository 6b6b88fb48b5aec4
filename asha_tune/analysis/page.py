"""The report page's content as data: what `asha-tune report` (and `compare`) put on one page.

Nothing here is computed anew. The verdicts are compare's own sentences (render.versus_line,
replicated.result_lines), the tables its cells (tables, replicated.estimate_text, the replayed
grid's rows), the figures its curves, rows and cells drawn by page_plots. The page lays them out
(page_html renders it with Jinja2, escaping every string that came from records).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from asha_tune.analysis import matters, page_plots, render, tables
from asha_tune.analysis.answers import (
    Answers,
    budget_line,
    estimate_text,
    gap_lines,
    outcome,
    result_lines,
    searches,
)
from asha_tune.analysis.curves import Comparison, confirmed
from asha_tune.display import count
from asha_tune.tracking.records import Provenance, Sweep
from asha_tune.tracking.tags import (
    COMPLETED,
    DATA_FINGERPRINT_TAG,
    FAILED,
    PRUNED,
    REPLICATE_SEEDS_TAG,
    SPACE_TAG,
    VERSION_TAG,
)
from asha_tune.trial.registry import selects_on_reported
from asha_tune.trial.selection import SE_SUFFIX

TONES = {"beats": "beats", "is beaten by": "beaten", "not separable": "unsure"}
VERSIONS = ("torch", "torchvision", "ray", "optuna", "mlflow")
SEARCHED_LEFT_OUT = ("configuration", "train.seed")  # a listed configuration's id; a trial's seed


# --- what the page holds ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    text: str
    sort: float | str | None = None  # what a sortable column orders by (default: the text)
    href: str | None = None
    tone: str = ""  # good | bad | "" : a cell that reads as a yes or a no


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    notes: tuple[str, ...] = ()
    numeric: frozenset[int] = frozenset()  # right-aligned columns
    sortable: bool = False
    caption: str = ""


@dataclass(frozen=True)
class Verdict:
    target: str
    kind: str  # grid: a search against a grid | cold: warm against cold | alone: no grid to beat
    tone: str  # beats | beaten | unsure | "" (alone)
    text: str  # compare's own sentence


@dataclass(frozen=True)
class Result:
    """One search's replicated answer under its protocol, in compare's lines."""

    search: str
    kind: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Part:
    """Everything under one selection protocol: never ranked against another protocol's."""

    protocol: str
    note: str  # how it selects (render.selection_note)
    verdicts: tuple[Verdict, ...]
    published: tuple[str, ...]  # the paper's best per target, labelled as the paper's
    best: tuple[str, ...]  # each sweep's best per target (compare's lines)
    results: tuple[Result, ...]
    table: Table | None  # the DomainBed-style table
    gaps: Table | None

    @property
    def oracle(self) -> bool:
        return selects_on_reported(self.protocol)


@dataclass(frozen=True)
class Figure:
    section: str  # budget | grid | search | matters | importances
    title: str
    json: str  # Plotly's JSON
    caption: str = ""


@dataclass(frozen=True)
class SweepFacts:
    name: str
    facts: tuple[tuple[str, Cell], ...]
    space_yaml: str


@dataclass(frozen=True)
class Page:
    title: str
    generated: str
    store: str
    sweeps: Table
    parts: tuple[Part, ...]
    grid: Table | None
    confirmations: Table | None
    figures: tuple[Figure, ...]
    trials: Table
    provenance: tuple[SweepFacts, ...]
    importances: tuple[tuple[str, str], ...]  # (search, compare's importances text)
    text: str  # compare's text, whole


# --- what the page is made from beyond compare's results -------------------------------------------


@dataclass(frozen=True)
class Importance:
    """A search's importances as compare logged them (importances_<search>.json and .txt)."""

    objective: str
    values: Mapping[str, float]
    text: str = ""


# --- building it -----------------------------------------------------------------------------------


def _num(value: float | None, se: float | None = None) -> Cell:
    shown = render.figure_text(value, se if se is not None and math.isfinite(se) else None)
    return Cell(shown, value if value is not None and math.isfinite(value) else None)


def run_link(ui_url: str | None, experiment_id: str, run_id: str) -> str | None:
    """A run's page in the MLflow UI, where the page knows one (a tracking server)."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}" if ui_url else None


def redact(uri: str) -> str:
    """A store's or study's URI without its credentials (user:password@)."""
    return re.sub(r"//[^/@\s]+@", "//", uri)


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ms else "-"


def _gpu_cell(percent: float | None) -> Cell:
    return Cell("-" if percent is None else f"{percent:.0f}%", percent)


def _sweeps_table(sweeps: Sequence[Sweep], ui_url: str | None) -> Table:
    """One row a sweep; a mean GPU use column where a sweep's trials logged any."""
    rows = []
    gpu = any(s.gpu_percent is not None for s in sweeps)
    for s in sweeps:
        what = "replayed grid" if s.lists_configurations else f"{s.algorithm} search"
        if s.family:
            what += f", replicate {s.replicate} of {s.family}"
        if s.warm_start:
            what += f", warm-started from {s.warm_start} ({count(s.warm_added, 'trial')} added)"
        statuses = Counter(t.record.status for t in s.trials)
        ended = ", ".join(f"{statuses[k]} {k}" for k in (COMPLETED, PRUNED, FAILED) if statuses[k])
        rows.append(
            (
                Cell(s.name, href=run_link(ui_url, s.experiment_id, s.parent_run_id)),
                Cell(what),
                Cell(s.protocol + tables.protocol_mark(s.protocol)),
                Cell(f"{len(s.trials)} ({ended})" if ended else "0", len(s.trials)),
                Cell(str(sum(t.record.epochs for t in s.trials)), sum(t.record.epochs for t in s.trials)),
                _num(sum(t.device_s for t in s.trials)),
                *([_gpu_cell(s.gpu_percent)] if gpu else []),
            )
        )
    notes = [
        f"{tables.ORACLE_MARK}{render.selection_note(p)}"
        for p in dict.fromkeys(s.protocol for s in sweeps)
        if selects_on_reported(p)
    ]
    return Table(
        (
            "sweep",
            "what it is",
            "selection",
            "trials ended",
            "epochs",
            "device-s",
            *(["mean GPU use"] if gpu else []),
        ),
        tuple(rows),
        tuple(notes),
        frozenset({3, 4, 5, 6}),
    )


def _domainbed(table: tables.Table) -> Table:
    rows = []
    for r in table.rows:
        cells = [r.cells[t] for t in table.targets] + [r.mean]
        rows.append(
            (
                Cell(r.label),
                Cell(r.protocol + tables.protocol_mark(r.protocol)),
                *(Cell(tables.estimate_cell(e, 1, "±"), e.mean if e is not None else None) for e in cells),
            )
        )
    columns = ("configuration", "selection", *table.targets, "mean")
    return Table(
        columns,
        tuple(rows),
        tuple(tables.footnotes(table)),
        frozenset(range(2, len(columns))),
        caption="winners' reported accuracy (%), mean ± SE",
    )


def _gaps(found: Answers, names: set[str]) -> Table | None:
    mine = sorted(
        (g for g in found.gaps if g.search in names), key=lambda g: (g.search, g.target, g.protocol)
    )
    if not mine:
        return None
    rows = tuple(
        (
            Cell(g.search),
            Cell(g.target),
            Cell(f"{g.protocol} (by {g.metric})"),
            Cell(estimate_text(g.gap, " points"), g.gap.mean),
        )
        for g in mine
    )
    caption = gap_lines(mine)[0].rstrip(":")
    return Table(("search", "target", "honest protocol", "gap"), rows, caption=caption)


def _part(protocol: str, comparison: Comparison, found: Answers, sweeps: Sequence[Sweep]) -> Part:
    names = {name for name, members in searches(sweeps).items() if members[0].protocol == protocol}
    versus = sorted(
        (v for v in found.versus if v.protocol == protocol),
        key=lambda v: (v.kind != "grid", v.target, v.search),
    )
    verdicts = [Verdict(v.target, v.kind, TONES[v.separation.verdict], render.versus_line(v)) for v in versus]
    if not any(v.kind == "grid" for v in versus):  # nothing to beat: each search's own answer
        verdicts += [
            Verdict(r.target, "alone", "", f"{name}: {result_lines(r)[0]}")
            for name, results in found.results.items()
            if name in names
            for r in results
        ]
    groups = [g for g in comparison.groups if g.protocol == protocol]
    results = tuple(
        Result(
            name,
            found.kinds[name],
            tuple([line for r in rs for line in result_lines(r)] + [budget_line(rs[0])]),
        )
        for name, rs in found.results.items()
        if name in names and rs
    )
    table = found.tables.get(protocol)
    return Part(
        protocol,
        render.selection_note(protocol),
        tuple(verdicts),
        tuple(f"target {g.target}: {render.published_line(g)}" for g in groups if g.published_best),
        tuple(f"target {g.target} · {render.best_line(g, r).strip()}" for g in groups for r in g.best_rows),
        results,
        _domainbed(table) if table else None,
        _gaps(found, names),
    )


def _grid_table(comparison: Comparison) -> Table | None:
    rows = comparison.grid
    if not rows:
        return None
    several = len({r.sweep for r in rows}) > 1
    text = render.grid_text(rows)
    return Table(
        (
            "configuration",
            "target",
            "ours ± SE",
            "published (paper)",
            "difference",
            "2·SE",
            "seed spread",
            "within noise",
        ),
        tuple(
            (
                Cell(f"{r.configuration} ({r.sweep})" if several else r.configuration),
                Cell(r.target),
                _num(r.ours, r.ours_se),
                _num(r.published),
                Cell(f"{r.difference:+.2f}", r.difference),
                _num(2 * r.se_difference),
                _num(r.seed_spread),
                Cell("yes" if r.within_noise else "no", tone="good" if r.within_noise else "bad"),
            )
            for r in rows
        ),
        (text[-1].strip(),),
        frozenset({2, 3, 4, 5, 6}),
        sortable=True,
        caption=text[0].rstrip(":"),
    )


def _confirmations(sweeps: Sequence[Sweep], targets: Sequence[str]) -> Table | None:
    rows = []
    for s in sweeps:
        labels = {t.record.number: outcome(t).label for t in s.trials}
        for trial in sorted(s.confirmations):
            cells = []
            for target in targets:
                found = confirmed(s, trial, f"acc_{target}")
                cells.append(Cell(f"{found[0]:.2f} ± {found[1]:.2f}", found[0]) if found else Cell("-"))
            runs = len(s.confirmations[trial])
            rows.append(
                (
                    Cell(s.name),
                    Cell(str(trial), trial),
                    Cell(labels.get(trial, "-")),
                    Cell(str(runs), runs),
                    *cells,
                )
            )
    if not rows:
        return None
    columns = ("sweep", "trial", "configuration", "runs", *(f"acc_{t}" for t in targets))
    return Table(
        columns,
        tuple(rows),
        ("mean ± sd over the confirmation runs (new seeds, full budget), per target",),
        frozenset(range(3, len(columns))),
        caption="confirmations (asha-tune confirm)",
    )


def _trials(
    sweeps: Sequence[Sweep], targets: Sequence[str], provenance: Mapping[str, Provenance], ui_url: str | None
) -> Table:
    failures = any(p.failures for p in provenance.values())
    gpu = any(t.gpu_use for s in sweeps for t in s.trials)  # a column only where a GPU was used
    rows = []
    for s in sweeps:
        known = provenance.get(s.name, Provenance())
        for t in sorted(s.trials, key=lambda t: t.record.number):
            r = t.record
            metrics = r.metrics
            selection = metrics.get(s.metric)
            cells = [
                Cell(s.name),
                Cell(str(r.number), r.number),
                Cell(outcome(t).label),
                Cell(r.status, tone="bad" if r.status == FAILED else ""),
                Cell(str(r.epochs), r.epochs),
                Cell(
                    f"{s.metric} {render.figure_text(selection, metrics.get(s.metric + SE_SUFFIX))}"
                    if selection is not None
                    else "-",
                    selection,
                ),
                *(_num(metrics.get(f"acc_{d}"), metrics.get(f"acc_{d}{SE_SUFFIX}")) for d in targets),
                _num(t.device_s),
                *([_num(sum(t.gpu_use) / len(t.gpu_use) if t.gpu_use else None)] if gpu else []),
                Cell(known.devices.get(r.run_id, "-")),
                Cell(r.run_id, href=run_link(ui_url, s.experiment_id, r.run_id)),
            ]
            if failures:
                cells.append(Cell(known.failures.get(r.run_id, "")))
            rows.append(tuple(cells))
    columns = (
        "sweep",
        "trial",
        "configuration",
        "status",
        "epochs",
        "selection metric ± SE",
        *(f"acc_{d} ± SE" for d in targets),
        "device-s",
        *(["GPU use %"] if gpu else []),
        "device",
        "MLflow run",
    )
    n = len(columns)
    notes = _trial_notes(gpu)
    return Table(
        columns + (("why it failed",) if failures else ()),
        tuple(rows),
        tuple(notes),
        frozenset({1, 4, 5, *range(6, n - 2)}),
        sortable=True,
    )


def _trial_notes(gpu: bool) -> list[str]:
    """What the per-trial table's columns mean (GPU use only where a trial logged it)."""
    return [
        "Click a column's heading to sort by it. Selection metric: each sweep's own (its scheduler's); "
        "± SE: the binomial standard error of one evaluation.",
        "MLflow run: a link where the page knows the MLflow UI (a tracking server, or report --ui-url); "
        "otherwise the run's id, to find with asha-tune ui NAME.",
        *(
            ["GPU use: the trial's mean utilisation of its GPUs over its epochs (a shared GPU's whole use)."]
            if gpu
            else []
        ),
    ]


def _provenance(s: Sweep, known: Provenance, ui_url: str | None) -> SweepFacts:
    import yaml

    tags, params = known.tags, known.params
    versions = [f"asha-tune {tags[VERSION_TAG]}"] if VERSION_TAG in tags else []
    versions += [f"{p} {tags[f'{p}.version']}" for p in VERSIONS if f"{p}.version" in tags]
    facts: list[tuple[str, Cell]] = [
        ("MLflow run", Cell(s.parent_run_id, href=run_link(ui_url, s.experiment_id, s.parent_run_id))),
        ("experiment", Cell(s.experiment_id)),
        ("space", Cell(tags.get(SPACE_TAG, "-"))),
        ("search", Cell(f"{s.algorithm}, selection {s.protocol}, metric {s.metric} ({s.mode})")),
        ("started", Cell(_when(known.started_ms))),
        ("ended", Cell(_when(known.ended_ms))),
        ("commit", Cell(tags.get("mlflow.source.git.commit", "not recorded"))),
        ("data (domain fingerprints)", Cell(tags.get(DATA_FINGERPRINT_TAG, "not recorded"))),
        ("versions", Cell(", ".join(versions) or "not recorded")),
    ]
    seeds = [f"{k} {params[k]}" for k in ("search.seed", "selection.split_seed") if k in params]
    if s.seeds or tags.get(REPLICATE_SEEDS_TAG):
        seeds.insert(0, f"replicate {s.replicate} seeds: {s.seeds or tags[REPLICATE_SEEDS_TAG]}")
    trial_seeds = sorted(
        {str(t.record.values.get("train.seed")) for t in s.trials if "train.seed" in t.record.values}
    )
    if trial_seeds:
        seeds.append(f"train.seed {', '.join(trial_seeds)}")
    facts.append(("seeds", Cell("; ".join(seeds) or "-")))
    devices = Counter(known.devices.get(t.record.run_id, "not recorded") for t in s.trials)
    facts.append(
        ("devices", Cell(", ".join(f"{d} ({count(n, 'trial')})" for d, n in devices.most_common()) or "-"))
    )
    if s.study_url:
        facts.append(("Optuna study", Cell(f"{s.name} in {redact(s.study_url)}")))
    if s.warm_start:
        facts.append(("warm start", Cell(f"from {s.warm_start}, {count(s.warm_added, 'trial')} added")))
    space = yaml.safe_dump(dict(known.space), sort_keys=False, allow_unicode=True) if known.space else ""
    return SweepFacts(s.name, tuple(facts), space)


def _search_figures(sweeps: Sequence[Sweep], found: Answers) -> list[Figure]:
    """Parallel coordinates and slices over each search's searched parameters (its replicates
    pooled), against each selection metric its winners were chosen by."""
    figures = []
    for name, members in searches(sweeps).items():
        if found.kinds[name] == "grid":
            continue
        for metric, mode in dict.fromkeys((r.metric, r.mode) for r in found.results.get(name, [])):
            trials = [
                (s, t)
                for s in members
                for t in s.trials
                if t.record.status in (COMPLETED, PRUNED)
                and isinstance(t.record.metrics.get(metric), (int, float))
                and math.isfinite(t.record.metrics[metric])
            ]
            values = [
                {k: v for k, v in t.record.values.items() if k not in SEARCHED_LEFT_OUT} for _, t in trials
            ]
            if not trials or not any(values):
                continue
            label = matters.selected_label(metric, members[0].protocol, mode)
            metric_values = [t.record.metrics[metric] for _, t in trials]
            figures.append(
                Figure(
                    "search",
                    f"{name}: parallel coordinates ({metric})",
                    page_plots.parallel(
                        values, metric_values, [t.record.epochs for _, t in trials], name, label, mode
                    ),
                    "Drag along an axis to keep only the trials in that range; drag an axis's title to "
                    "move it.",
                )
            )
            figures.append(
                Figure(
                    "search",
                    f"{name}: slices ({metric})",
                    page_plots.slices(
                        values,
                        metric_values,
                        [t.record.status == COMPLETED for _, t in trials],
                        [f"{s.name} trial {t.record.number}" for s, t in trials],
                        name,
                        label,
                    ),
                )
            )
    return figures


def _figures(
    sweeps: Sequence[Sweep], comparison: Comparison, found: Answers, importances: Mapping[str, Importance]
) -> list[Figure]:
    figures = [
        Figure("budget", f"best so far: target {g.target}, selection {g.protocol}", page_plots.best_so_far(g))
        for g in comparison.groups
        if g.curves
    ]
    if comparison.grid:
        figures.append(
            Figure("grid", "replayed grid against the paper", page_plots.grid_vs_published(comparison.grid))
        )
    figures += _search_figures(sweeps, found)
    for g in comparison.groups:
        points = matters.matters_points(list(sweeps), g.target, g.protocol)
        if points is None:
            continue
        metric, mode, all_points, title = points
        full = [p for p in all_points if p.complete]
        cells = matters.heat_map_cells(full)
        if cells.rows:
            figures.append(
                Figure(
                    "matters",
                    f"conv × p0: target {g.target}, selection {g.protocol}",
                    page_plots.heat_map(cells, metric, g.protocol, mode, f"{title} · full-budget trials"),
                    f"{len(full)} full-budget trials with a p0 and a conv set; a cell: their mean and count.",
                )
            )
    for name, imp in importances.items():
        figures.append(
            Figure(
                "importances", f"importances: {name}", page_plots.importances(imp.values, name, imp.objective)
            )
        )
    return figures


def build(
    sweeps: Sequence[Sweep],
    comparison: Comparison,
    found: Answers,
    *,
    text: str,
    store: str,
    provenance: Mapping[str, Provenance] | None = None,
    importances: Mapping[str, Importance] | None = None,
    ui_url: str | None = None,
    generated: datetime | None = None,
) -> Page:
    """The page of these sweeps, from compare's results (`comparison`, `found`) and its `text`."""
    provenance = provenance or {}
    importances = importances or {}
    names = list(searches(sweeps))
    protocols = list(dict.fromkeys(s.protocol for s in sweeps))
    return Page(
        title=f"asha-tune report: {', '.join(names)}",
        generated=(generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        store=redact(store),
        sweeps=_sweeps_table(sweeps, ui_url),
        parts=tuple(_part(p, comparison, found, sweeps) for p in protocols),
        grid=_grid_table(comparison),
        confirmations=_confirmations(sweeps, found.targets),
        figures=tuple(_figures(sweeps, comparison, found, importances)),
        trials=_trials(sweeps, found.targets, provenance, ui_url),
        provenance=tuple(_provenance(s, provenance.get(s.name, Provenance()), ui_url) for s in sweeps),
        importances=tuple((name, imp.text) for name, imp in importances.items() if imp.text),
        text=text,
    )
