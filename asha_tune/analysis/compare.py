"""`asha-tune compare`: does a search beat the paper's grid, and at what cost.

This module reads the sweeps from MLflow and writes the outputs; comparison.py computes,
render.py and plots.py present.

Everything is read from stored MLflow records (sweep parent runs, their trials, confirmation
runs), never from a running sweep. Figures are grouped by target domain and by selection
protocol, never mixed: under `oracle` a trial is selected on the accuracy it reports (the paper's
protocol, optimistic), which every output says. Published figures are the paper's, labelled so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from asha_tune.analysis import plots
from asha_tune.analysis.comparison import Comparison, Sweep, TrialRun, compare
from asha_tune.analysis.render import csv_rows, report_text, write_csv
from asha_tune.errors import ConfigError
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
    STATUS_TAG,
    SWEEP_TAG,
)


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


def run_compare(names: list[str], tracking_uri: str, out_dir: Path) -> tuple[Comparison, str, str]:
    """Read the sweeps, write the table, CSV and PNGs to `out_dir`, log them as a comparison run."""
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
