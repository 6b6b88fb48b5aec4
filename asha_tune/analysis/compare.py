"""`asha-tune compare`: does a search beat the paper's grid, and at what cost.

This module reads the sweeps (tracking.records) and writes the outputs; curves.py computes the
curves and a replayed grid against the paper, answers.py the replicate-level answers (a
replicated search's winners as mean ± SE, a search against a grid, a warm start against a cold
search, the selection gap, the DomainBed-style table); render.py, tables.py, plots.py and
matters.py present. A replicated search (NAME, with replicates NAME.r0 ...) is read whole.
Parameter importances need Optuna, so the sweep room computes them (`importances`, passed in).

Everything is read from stored MLflow records (sweep parent runs, their trials, confirmation
runs), never from a running sweep. Figures are grouped by target domain and by selection
protocol, never mixed: under `oracle` a trial is selected on the accuracy it reports (the paper's
protocol, optimistic), which every output says. Published figures are the paper's, labelled so.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from asha_tune.analysis import matters, plots, report, tables
from asha_tune.analysis.answers import Answers, answers, searches
from asha_tune.analysis.curves import Comparison, compare
from asha_tune.analysis.render import answers_rows, answers_text, csv_rows, report_text, write_csv
from asha_tune.errors import AshaTuneError, ConfigError
from asha_tune.tracking import Tracker
from asha_tune.tracking.records import Sweep, open_store, read_sweeps
from asha_tune.tracking.tags import (
    COMPARED_IN_TAG,
    COMPARES_RUNS_TAG,
    COMPARES_TAG,
    COMPARISON_KIND,
    COMPLETED,
    KIND_TAG,
)


class Importances(Protocol):
    """What the sweep room's importances (sweep/importance.py) give back; compare only shows them."""

    values: dict[str, float]
    objective: str

    def text(self) -> str: ...


ImportanceFn = Callable[[str, list[str]], Importances]  # (study URL, study names) -> importances


def run_compare(
    names: list[str], tracking_uri: str, out_dir: Path, importances: ImportanceFn | None = None
) -> tuple[Comparison, str, str]:
    """Read the sweeps, write the report, CSV, tables and PNGs to `out_dir`, log them as a
    comparison run. `importances` (the sweep room's, which reads Optuna) adds each search's."""
    if not names:
        raise ConfigError("name at least one sweep to compare")
    tracker = open_store(tracking_uri)
    sweeps = [s for name in dict.fromkeys(names) for s in read_sweeps(tracker, name)]
    comparison = compare(sweeps)
    found = answers(sweeps)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = [report_text(comparison), answers_text(found)]
    sections += write_tables(found, out_dir)
    if importances is not None:
        sections += write_importances(sweeps, found, importances, out_dir)
    text = "\n\n".join(s for s in sections if s)
    (out_dir / "comparison.txt").write_text(text + "\n")
    write_csv(csv_rows(comparison) + answers_rows(found), out_dir / "comparison.csv")
    for g in comparison.groups:
        plots.best_so_far(g, out_dir / f"best_so_far_{g.target}_{g.protocol}.png")
        what_matters(sweeps, g.target, g.protocol, out_dir)
    if comparison.grid:
        plots.grid_vs_published(comparison.grid, out_dir / "grid_vs_published.png")
    logged = {n: i for n in searches(sweeps) if importances and (i := report.read_importances(out_dir, n))}
    report.write_page(
        tracker,
        sweeps,
        out_dir / report.PAGE_FILE,
        comparison=comparison,
        found=found,
        text=text,
        importances=logged,
    )
    run_id = log_comparison(tracker, sweeps, out_dir, answer_metrics(found))
    return comparison, text, run_id


def write_tables(found: Answers, out_dir: Path) -> list[str]:
    """The DomainBed-style table of each protocol, as Markdown and LaTeX; the Markdown printed."""
    printed = []
    for protocol, table in found.tables.items():
        md = tables.markdown(table)
        (out_dir / f"table_{protocol}.md").write_text(md)
        (out_dir / f"table_{protocol}.tex").write_text(tables.latex(table))
        printed.append(
            f"== table, selection {protocol}: winners' reported accuracy (%), mean ± SE "
            f"(table_{protocol}.md, .tex) ==\n{md.rstrip()}"
        )
    return printed


def write_importances(
    sweeps: list[Sweep], found: Answers, importances: ImportanceFn, out_dir: Path
) -> list[str]:
    """Each search's parameter importances (its replicates' studies pooled), of its study's own
    objective; a search with too few trials says why in one line."""
    lines = []
    for name, members in searches(sweeps).items():
        if found.kinds[name] == "grid" or members[0].study_url is None:
            continue
        try:
            result = importances(members[0].study_url, [s.name for s in members])
        except AshaTuneError as err:
            lines.append(f"importances of {name}: not computed: {err}")
            continue
        (out_dir / f"importances_{name}.txt").write_text(result.text() + "\n")
        (out_dir / f"importances_{name}.json").write_text(
            json.dumps(
                {"search": name, "objective": result.objective, "importances": result.values}, indent=2
            )
        )
        lines.append(
            result.text() + "\n  (the study's objective, one for all targets; not a figure per target: "
            "the slice plots and heat maps show each target's)"
        )
    return ["== parameter importances ==\n" + "\n".join(lines)] if lines else []


def what_matters(sweeps: list[Sweep], target: str, protocol: str, out_dir: Path) -> list[Path]:
    """The slice plot (metric against p0 per conv set) and the conv × p0 heat map of one target
    under one protocol, over the trials of every sweep selected by it (where they have p0 and
    convs); the heat map from full-budget trials only (one budget)."""
    found = matters.matters_points(sweeps, target, protocol)
    if found is None:
        return []
    metric, mode, points, title = found
    written = [
        matters.slice_plot(
            points, metric, protocol, out_dir / f"slice_{target}_{protocol}.png", mode=mode, title=title
        )
    ]
    full = [p for p in points if p.complete]
    if matters.usable(full).points:
        written.append(
            matters.heat_map(
                full,
                metric,
                protocol,
                out_dir / f"heat_{target}_{protocol}.png",
                mode=mode,
                title=f"{title} · full-budget trials",
            )
        )
    return written


def answer_metrics(found: Answers) -> dict[str, float]:
    """The comparison run's metrics: each search's replicated accuracy and selection gaps."""
    metrics: dict[str, float] = {}
    for name, results in found.results.items():
        for r in results:
            key = f"replicated.{name}.{r.protocol}.acc_{r.target}"
            metrics[key] = r.accuracy.mean
            if r.accuracy.n > 1:
                metrics[key + "_se"] = r.accuracy.se
    for g in found.gaps:
        key = f"selection_gap.{g.search}.{g.target}.{g.protocol}"
        metrics[key] = g.gap.mean
        if g.gap.n > 1:
            metrics[key + "_se"] = g.gap.se
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def log_comparison(
    tracker: Tracker, sweeps: list[Sweep], out_dir: Path, metrics: dict[str, float] | None = None
) -> str:
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
        f"compare-{'+'.join(dict.fromkeys(s.search for s in sweeps))}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags=tags,
    )
    if metrics:
        tracker.log_metrics(run_id, metrics, step=0)
    tracker.log_artifacts(run_id, out_dir)
    tracker.finish(run_id, COMPLETED)
    parents = [s.parent_run_id for s in sweeps] + [s.family_run_id for s in sweeps if s.family_run_id]
    for parent in dict.fromkeys(parents):  # the way back, from each sweep to its latest comparison
        tracker.set_tags(parent, {COMPARED_IN_TAG: run_id})
    return run_id
