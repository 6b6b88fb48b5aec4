"""asha-tune: hyperparameter sweeps for activation-shaping domain adaptation.

The package is a house of rooms, each a folder that says what it may import (`make lint` checks
it with import-linter; the layers are listed top to bottom, each importing only those below it):

- cli.py     the `asha-tune` command: argument parsing over the Python API below
- api.py     the Python API (launch, resume, confirm; the resume policy): runs a sweep (sweep/) and
             tells its answer (analysis/); beside it, independent of it:
  cluster/   a local multi-node cluster (Ray nodes, PostgreSQL, an MLflow server) started and
             stopped by pid; imports the sweep room for Ray's token and private calls
  monitor.py `asha-tune status`, `list` and `stop`: a sweep seen and stopped through its records
             (analysis/status.py says it, sweep/control.py tells its driver's life); no torch,
             Ray or Optuna, not even through another module
- sweep/     sweeps on Ray Tune with an Optuna study: the only room that imports Ray and Optuna
             (settings, study, preflight, session, tuner, records, single, replicated, searcher,
             trainable, callbacks, checkpoints, confirm, control: the driver's heartbeat and stop
             requests; every private Ray call in ray_compat);
             never analysis. Beside it, independent of it and of each other:
  runner.py  one trial outside Ray (`asha-tune trial`): a checkpoint file and an MLflow run
  analysis/  records into answers (the best trial with its noise, confirmation report, compare,
             plots, replicates, tables): no torch, no Ray, no Optuna
- tracking/  MLflow, and only here: the client, every name written to it, runs read back as records,
             which trial is best
- spaces/    search spaces: YAML files validated with pydantic, sampled define-by-run
- trial/     one trial: configuration, registry of names, shaping, model, data, selection, training;
             torch, never Ray, MLflow or Optuna (config, registry and selection import no torch)
- dotted.py  dotted paths (`train.lr`) in nested dicts: configurations, `--set`, MLflow's params
- the kernel every room may use: defaults, errors, display, environ, files

The Python API is the CLI's (`asha_tune.launch(settings)` ...), imported on first use so that
`import asha_tune` stays light.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("asha-tune")  # one version number: pyproject.toml's
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

# The entry points the README documents, by the module that defines each.
_API = {
    "TrialConfig": "asha_tune.trial.config",
    "Runtime": "asha_tune.trial.config",
    "run_trial": "asha_tune.trial.training",
    "run_logged_trial": "asha_tune.runner",
    "load_space": "asha_tune.spaces",
    "SweepSettings": "asha_tune.sweep.settings",
    "launch": "asha_tune.api",
    "resume": "asha_tune.api",
    "extend": "asha_tune.api",
    "confirm": "asha_tune.api",
    "run_compare": "asha_tune.analysis.compare",
    "run_report": "asha_tune.analysis.report",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'asha_tune' has no attribute {name!r}")
