"""`asha-tune compare`: does a search beat the paper's grid, and at what cost.

This module reads the sweeps from MLflow and writes the outputs; comparison.py computes the
curves and a replayed grid against the paper, replicated.py the replicate-level answers (a
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
from typing import Any, Protocol

from asha_tune.analysis import matters, plots, tables
from asha_tune.analysis.comparison import Comparison, Sweep, TrialRun, compare, selection_metric
from asha_tune.analysis.matters import CONVS, P0
from asha_tune.analysis.render import answers_rows, answers_text, csv_rows, report_text, write_csv
from asha_tune.analysis.replicated import Answers, answers, searches
from asha_tune.errors import AshaTuneError, ConfigError
from asha_tune.tracking import Tracker
from asha_tune.tracking.client import local_store
from asha_tune.tracking.records import trial_record
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
    PRUNED,
    REHEARSAL_TAG,
    REPLICATE_KIND,
    REPLICATE_OF_TAG,
    REPLICATE_SEEDS_TAG,
    REPLICATE_TAG,
    REPLICATES_TAG,
    STATUS_TAG,
    STUDY_URL_TAG,
    SWEEP_TAG,
    WARM_START_ADDED_TAG,
    WARM_START_TAG,
)
from asha_tune.trial.selection import VAL_ACC


def open_store(uri: str) -> Tracker:
    db = local_store(uri)
    if db is not None and not db.is_file():
        raise ConfigError(f"no MLflow store at {db}: pass --tracking-uri (the store the sweeps used)")
    return Tracker(uri)


def _is_sweep(run: Any) -> bool:
    """A sweep's parent run: a sweep of its own, a replicated search, or one of its replicates."""
    tags = run.data.tags
    if tags.get(KIND_TAG) == REPLICATE_KIND:
        return True
    return KIND_TAG not in tags and "mlflow.parentRunId" not in tags


def refuse_rehearsal(tags: dict[str, str], name: str) -> None:
    """A rehearsal's scores are simulated (`launch --rehearse`): never read as results."""
    if tags.get(REHEARSAL_TAG) == "true":
        raise ConfigError(
            f"sweep {name} is a rehearsal (launch --rehearse: simulated trials): its scores are not "
            "results, so compare, confirm and warm starts refuse it"
        )


def find_parent(tracker: Tracker, name: str) -> Any:
    ids = tracker.experiment_ids()
    runs = [
        r
        for r in tracker.client.search_runs(ids, f"tags.`{SWEEP_TAG}` = '{name}'", max_results=50)
        if _is_sweep(r)
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
    refuse_rehearsal(runs[0].data.tags, name)
    return runs[0]


def _device_seconds(tracker: Tracker, run: Any) -> float:
    history = tracker.client.get_metric_history
    return sum(m.value for key in DEVICE_TIME_METRICS for m in history(run.info.run_id, key))


def replicate_parents(tracker: Tracker, parent: Any) -> list[Any]:
    """The replicates' parent runs of a replicated search, by number; else the sweep itself."""
    if REPLICATES_TAG not in parent.data.tags:
        return [parent]
    nested = tracker.find_runs(
        parent.info.experiment_id,
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`{KIND_TAG}` = '{REPLICATE_KIND}'",
    )
    return sorted(nested, key=lambda r: int(r.data.tags.get(REPLICATE_TAG, 0)))


def sweep_parents(tracker: Tracker, name: str) -> list[Any]:
    """The parent runs whose trials make up sweep `name`: its own, or its replicates'."""
    return replicate_parents(tracker, find_parent(tracker, name))


def _settings(params: dict[str, str]) -> dict[str, Any]:
    """shaping.p0 (a number, where it is one) and shaping.convs, as the run logged them."""
    out: dict[str, Any] = {}
    try:
        out[P0] = float(params[P0])
    except (KeyError, ValueError):
        pass
    try:
        convs = json.loads(params.get(CONVS, "null"))
        if isinstance(convs, list) and convs:
            out[CONVS] = convs
    except ValueError:
        pass
    return out


def _trial(tracker: Tracker, run: Any) -> TrialRun:
    record = trial_record(run)
    values, params = record.values, run.data.params
    n = {k[2:]: int(v) for k, v in params.items() if k.startswith("n_") and v.isdigit()}
    return TrialRun(
        record,
        int(run.info.end_time or 0),
        _device_seconds(tracker, run),
        values.get("configuration"),
        n,
        params.get("shaping.mode"),
        _settings(params),
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


def read_sweeps(tracker: Tracker, name: str) -> list[Sweep]:
    """A sweep, or every replicate of a replicated search (NAME.r0, NAME.r1, ...)."""
    return [_read(tracker, parent) for parent in sweep_parents(tracker, name)]


def read_sweep(tracker: Tracker, name: str) -> Sweep:
    return _read(tracker, find_parent(tracker, name))


def _read(tracker: Tracker, parent: Any) -> Sweep:
    name = parent.data.tags[SWEEP_TAG]
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
    params, tags = parent.data.params, parent.data.tags
    return Sweep(
        name,
        pid,
        experiment_id,
        params.get("selection.protocol", "unknown"),
        params.get("search.algorithm", "unknown"),
        trials,
        published,
        _confirmations(tracker, experiment_id, pid),
        metric=params.get("scheduler.metric", VAL_ACC),
        mode=params.get("scheduler.mode", "max"),
        family=tags.get(REPLICATE_OF_TAG, ""),
        family_run_id=tags.get("mlflow.parentRunId") if REPLICATE_OF_TAG in tags else None,
        replicate=int(tags.get(REPLICATE_TAG, 0)),
        seeds=tags.get(REPLICATE_SEEDS_TAG, ""),
        study_url=tags.get(STUDY_URL_TAG),
        warm_start=tags.get(WARM_START_TAG),
        warm_added=int(tags.get(WARM_START_ADDED_TAG, 0)),
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
    members = [s for s in sweeps if s.protocol == protocol]
    if not members:
        return []
    metric, mode = selection_metric(protocol, target, members[0].metric, members[0].mode)
    points = [
        matters.Point(t.settings, t.record.metrics[metric], t.record.status == COMPLETED)
        for s in members
        for t in s.trials
        if metric in t.record.metrics and t.record.status in (COMPLETED, PRUNED)
    ]
    if not matters.usable(points).points:
        return []
    title = f"target {target} · {', '.join(dict.fromkeys(s.search for s in members))}"
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
