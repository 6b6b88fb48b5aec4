"""Where asha-tune reads and writes unless told otherwise, and the environment variables that
say otherwise. The CLI's help, the README and the code all take these from here.

Three different things were once all called "storage"; each has its own name now:
- the results folder: Ray Tune's trial folders and checkpoints (`--results-dir`)
- the study URL: the database URL of the Optuna studies (`--study-url`)
- the Optuna storage object opened from that URL (study.py, Optuna's own term)
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "ASHA_TUNE_DATA_ROOT"  # the PACS folder: no default, the product never assumes one
CACHE_DIR_ENV = "ASHA_TUNE_CACHE_DIR"  # decoded images
SPACES_ENV = "ASHA_TUNE_SPACES"  # extra folders of search spaces, searched first
STUDY_RETRY_ENV = "ASHA_TUNE_STUDY_RETRY_S"  # how long to retry a lost study database
CLUSTER_DIR_ENV = "ASHA_TUNE_CLUSTER_DIR"  # `asha-tune cluster`'s folder
HEAD_LOST_ENV = "ASHA_TUNE_HEAD_LOST_S"  # how long a cluster's head may not answer a sweep
DEBUG_ENV = "ASHA_TUNE_DEBUG"  # 1: an unexpected error shows its traceback, not one line and a file
RECORDS_PROCESS_ENV = "ASHA_TUNE_RECORDS_PROCESS"  # 1 or 0: a sweep's records from a process of their own

TRACKING_DB = "mlflow.db"  # MLflow's embedded store, in the working directory
STUDY_DB = "optuna.db"  # the Optuna studies, in the working directory
RESULTS_DIR = "asha-tune-results"  # Ray's results, in the working directory
CACHE_DIR = "~/.cache/asha-tune"  # or $XDG_CACHE_HOME/asha-tune
CLUSTER_DIR = "asha-tune-cluster"  # a local cluster's data and logs, in the working directory
STUDY_RETRY_S = 300.0  # a restarted PostgreSQL comes back within it
HEAD_LOST_S = 30.0
RECORDS_PROCESS_FROM = 50  # trials from which a sweep writes its records from a process of their own
# launch --resource-wait where an autoscaler can add a node that fits a trial: a cloud GPU node
# boots in 5-15 min.
AUTOSCALER_WAIT_S = 900.0
# compare --importances: Optuna's importance evaluators by name (sweep/importance.py), the default
# first.
IMPORTANCE_EVALUATORS = ("ped_anova", "fanova")


def tracking_uri(directory: Path | None = None) -> str:
    """The embedded MLflow store: a sqlite file."""
    return f"sqlite:///{(directory or Path.cwd()).resolve() / TRACKING_DB}"


def study_url(directory: Path | None = None) -> str:
    """The Optuna studies' database: a sqlite file."""
    return f"sqlite:///{(directory or Path.cwd()).resolve() / STUDY_DB}"


def results_dir() -> Path:
    return Path.cwd() / RESULTS_DIR


def cluster_dir() -> Path:
    return Path(os.environ.get(CLUSTER_DIR_ENV) or Path.cwd() / CLUSTER_DIR).resolve()


def cache_dir() -> Path:
    if cache := os.environ.get(CACHE_DIR_ENV):
        return Path(cache).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "asha-tune"
