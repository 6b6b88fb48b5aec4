"""Sweeps on Ray Tune with an Optuna study: the only room that imports Ray and Optuna.

- settings     where a sweep runs and records (sweep.json); keys: what a Tune trial carries
- study        the sweep's Optuna study; importance: which parameters matter (Optuna's evaluators);
               warm_start: another sweep's trials given to a new study before it searches
- preflight    what a sweep must pass before anything starts (data, resources, weights)
- session      the Ray session: join or start Ray, the token, the environment, waiting for a node
- tuner        the trainable with its resources and the Tuner (searcher, scheduler, callbacks)
- lifecycle    launch, restart, resume; the records closed however a sweep ends
- replicated   a search run R times (NAME.r0 ...), each replicate a sweep of its own
- searcher     an Optuna-study searcher (COMPLETE/PRUNED/FAIL) and an ASHA that survives resume
- trainable    the trial inside a Tune trial; checkpoints: which checkpoints a sweep writes and keeps
- callbacks    MLflow child runs and the progress line, from the driver
- confirm      `asha-tune confirm`: the best configurations again, with new seeds
- ray_compat   every call into Ray's private API, behind one version-pinned test

May import Ray, Optuna, every room below (analysis, tracking, spaces, trial) and the kernel.
"""

from __future__ import annotations

from asha_tune.sweep.settings import SweepSettings, sweep_name

__all__ = ["SweepSettings", "sweep_name"]
