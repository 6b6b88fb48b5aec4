"""Hand-made MLflow records of sweeps, as launch and the driver's callbacks write them (a real
sqlite store): parent runs (a sweep, a replicated search and its replicates) and trial runs with
per-epoch metrics, for the analysis and warm-start tests that need known numbers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mlflow.tracking import MlflowClient

from asha_tune.tracking import Tracker
from asha_tune.tracking.records import Sweep, read_sweeps
from asha_tune.tracking.tags import (
    KIND_TAG,
    REPLICATE_KIND,
    REPLICATE_OF_TAG,
    REPLICATE_SEEDS_TAG,
    REPLICATE_TAG,
    REPLICATES_TAG,
    STATUS_TAG,
    STUDY_URL_TAG,
    SWEEP_TAG,
)


@dataclass
class Trial:
    """One trial's record: its values (the `search` param), status, and per-epoch metrics."""

    values: dict[str, Any]
    status: str = "completed"
    epochs: list[dict[str, float]] = field(default_factory=list)  # one dict per epoch
    params: dict[str, str] = field(default_factory=dict)  # e.g. shaping.mode, shaping.p0
    train_s: float = 1.0
    ended: int = 1000


def parent(
    client: MlflowClient,
    experiment: str,
    name: str,
    space: dict,
    *,
    protocol: str = "oracle",
    algorithm: str = "optuna",
    metric: str = "val_acc",
    mode: str = "max",
    nested_under: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """A sweep's parent run: its params, tags and space.json, as `launch` logs them."""
    all_tags = {SWEEP_TAG: name, STATUS_TAG: "completed", **(tags or {})}
    if nested_under:
        all_tags["mlflow.parentRunId"] = nested_under
    run = client.create_run(experiment, run_name=name, tags=all_tags).info.run_id
    for key, value in {
        "selection.protocol": protocol,
        "search.algorithm": algorithm,
        "scheduler.metric": metric,
        "scheduler.mode": mode,
    }.items():
        client.log_param(run, key, value)
    client.log_dict(run, space, "space.json")
    client.set_terminated(run, "FINISHED")
    return run


def trials(client: MlflowClient, experiment: str, parent_run: str, made: list[Trial]) -> list[str]:
    """One child run per trial, numbered in order, as TrackingCallback writes them."""
    ids = []
    for number, t in enumerate(made):
        run = client.create_run(
            experiment,
            run_name=f"trial-{number:03d}",
            tags={
                "mlflow.parentRunId": parent_run,
                "asha_tune.trial_number": str(number),
                STATUS_TAG: t.status,
                "asha_tune.epochs_run": str(len(t.epochs)),
            },
        ).info.run_id
        client.log_param(run, "search", json.dumps(t.values))
        for key, value in t.params.items():
            client.log_param(run, key, value)
        for epoch, metrics in enumerate(t.epochs, 1):
            client.log_metric(run, "time_train", t.train_s, step=epoch)
            client.log_metric(run, "time_eval", 0.5, step=epoch)
            for key, value in metrics.items():
                client.log_metric(run, key, value, step=epoch)
        client.set_terminated(
            run, "FAILED" if t.status == "failed" else "FINISHED", end_time=t.ended + number
        )
        ids.append(run)
    return ids


def replicated(
    client: MlflowClient,
    experiment: str,
    name: str,
    space: dict,
    per_replicate: list[list[Trial]],
    study_url: str | None = None,
    **kwargs: Any,
) -> tuple[str, list[str]]:
    """A replicated search: its parent run and one nested replicate sweep per list of trials."""
    top = parent(
        client,
        experiment,
        name,
        {**space, "search": {**space.get("search", {}), "replicates": len(per_replicate)}},
        tags={REPLICATES_TAG: str(len(per_replicate))},
        **kwargs,
    )
    replicate_runs = []
    for r, made in enumerate(per_replicate):
        tags = {
            KIND_TAG: REPLICATE_KIND,
            REPLICATE_TAG: str(r),
            REPLICATE_OF_TAG: name,
            REPLICATE_SEEDS_TAG: f"sampler {r}, trial {r}",
            **({STUDY_URL_TAG: study_url} if study_url else {}),
        }
        run = parent(client, experiment, f"{name}.r{r}", space, nested_under=top, tags=tags, **kwargs)
        trials(client, experiment, run, made)
        replicate_runs.append(run)
    return top, replicate_runs


def read_sweep(tracker: Tracker, name: str) -> Sweep:
    """A sweep that is not replicated, as compare reads it."""
    (sweep,) = read_sweeps(tracker, name)
    return sweep
