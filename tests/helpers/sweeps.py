"""Sweeps for tests: small spaces on real PACS or synthetic data, their settings, and what they
recorded in MLflow and Optuna."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import optuna
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from asha_tune.spaces import load_space
from asha_tune.sweep.settings import SweepSettings
from asha_tune.sweep.study import VALUES_ATTR, load_recorded
from asha_tune.sweep.warm_start import PastTrial
from asha_tune.trial.config import Runtime

SMALL = {
    "data": {"source": "art_painting", "targets": ["cartoon"], "image_size": 32, "limit_per_domain": 35},
    "train": {"epochs": 4, "batch_size": 16, "weights": "none", "seed": 0},
}


# Synthetic PACS (the tiny_runtime fixture): for tests about orchestration, not learning.
TINY = {
    "data": {"targets": ["cartoon"], "image_size": 32},
    "train": {"epochs": 2, "batch_size": 8, "weights": "none"},
    "scheduler": {"kind": "fifo"},
    "resources": {"cpu": 1},
}


def space_file(tmp_path: Path, name: str, base: dict = SMALL, **sections) -> Path:
    tree = {"name": name, **yaml.safe_load(yaml.safe_dump(base)), **sections}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def settings_for(tmp_path: Path, space_path: Path, name: str, runtime: Runtime, **extra) -> SweepSettings:
    return SweepSettings(
        name=name,
        space=load_space(space_path),
        results_dir=tmp_path / "results",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        study_url=f"sqlite:///{tmp_path / 'optuna.db'}",
        runtime=runtime,
        num_cpus=2,
        **extra,
    )


def mlflow_children(tmp_path: Path, experiment: str, parent: str) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")


def study_trials(tmp_path: Path, name: str) -> list:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials


def mid_trial(tmp_path: Path, name: str, number: int | None = None) -> bool:
    """A trial of the study (trial `number`, if given) is running and has recorded an epoch: the
    moment to interrupt it. Its intermediate values are written as each epoch ends, unlike Tune's
    result.json (flushed late) or the progress line (every few seconds: a short trial can run
    every epoch between two lines, and then nothing is interrupted). Read-only SQL on Optuna's
    tables: `optuna.load_study` would create the schema, racing the driver that creates it."""
    db = tmp_path / "optuna.db"
    if not db.is_file():
        return False
    query = """
        SELECT 1 FROM trials t JOIN studies s ON s.study_id = t.study_id
        WHERE s.study_name = ? AND t.state = 'RUNNING' AND (? IS NULL OR t.number = ?)
        AND EXISTS (SELECT 1 FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id)"""
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
            return conn.execute(query, (name, number, number)).fetchone() is not None
    except sqlite3.OperationalError:  # no tables yet, or locked: ask again
        return False


def quiet_env(**extra: str) -> dict:
    """The environment of a CLI run, without the auth mode earlier in-process launches set."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def finished_trials(url: str, study_name: str) -> list[PastTrial]:
    """Every trial of another asha-tune study as a PastTrial: its settings from the space the
    study records (a listed configuration's resolved), its value of that space's metric."""
    study, space = load_recorded(url, study_name)
    states = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in states or VALUES_ATTR not in t.user_attrs:
            continue
        out.append(
            PastTrial(
                f"{study_name} trial {t.number}",
                states[t.state],
                space.trial_config(t.user_attrs[VALUES_ATTR]).model_dump(mode="json"),
                space.scheduler.metric,
                t.value,
                dict(t.intermediate_values),
            )
        )
    return out
