"""Tracking: MLflow, and nothing else imports it.

- tags       every tag, status and metric name asha-tune writes (documented in docs/mlflow.md)
- client     the Tracker: runs, params, metrics, tags, artifacts through one MlflowClient
- records    a trial's run read back as a TrialRecord; the trials of a sweep
- trials     what a trial's run holds: its tags, its epochs' metrics and constants
- credentials  MLflow's client credentials file

May import: mlflow (lazily), asha_tune.trial.{config,registry,selection} (no torch), the shared
kernel (defaults, errors, display). Never torch, Ray or Optuna.
"""

from __future__ import annotations

from asha_tune.tracking.client import Tracker, TrackingUnavailableError

__all__ = ["Tracker", "TrackingUnavailableError"]
