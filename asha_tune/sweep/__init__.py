"""Sweeps on Ray Tune: the only place that imports Ray.

- settings     where a sweep runs and records (sweep.json), no Ray needed
- trainable    the foundation trial inside a Tune trial
- searcher     an Optuna-study searcher (PRUNED/FAIL/COMPLETE) and a resumable ASHA
- callbacks    MLflow child runs and live progress, from the driver
- lifecycle    launch, resume, restart; replicated: a search run R times (NAME.r0 ...)
- study        the sweep's Optuna study; importance: which parameters matter; warm_start: another
               sweep's trials given to a new study
"""

from __future__ import annotations

from asha_tune.sweep.settings import SweepSettings, sweep_name

__all__ = ["SweepSettings", "sweep_name"]
