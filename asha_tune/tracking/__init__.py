"""Tracking: MLflow, and nothing else imports it.

- tags       every tag, status and metric name asha-tune writes (documented in docs/mlflow.md)
- client     the Tracker: runs, params, metrics, tags, artifacts through one MlflowClient; every
             search reads every page
- records    the one reader of stored runs: a trial's run as a TrialRecord, the trials of a sweep,
             a sweep by name, a sweep whole as `compare` reads it (Sweep, TrialRun)
- best       which trial is a sweep's best (one rule), its noise, the summary its parent run carries
- trials     what a trial's run holds: its tags, its epochs' metrics and constants
- credentials  MLflow's client credentials file
- sweep_state  a sweep's state for `status` and `list`, from SweepRecords (MlflowRecords: the Tracker)
- reader     SweepRecords without importing MLflow: its tables (sqlite3, psycopg) or its REST API

MLflow filter strings, its tables, its REST API and the MlflowClient are used here only. May
import: mlflow (lazily), the spaces, asha_tune.trial.{config,registry,selection} (no torch), the
shared kernel (defaults, errors, display). Never torch, Ray or Optuna.
"""

from __future__ import annotations

from asha_tune.tracking.client import Tracker, TrackingUnavailableError

__all__ = ["Tracker", "TrackingUnavailableError"]
