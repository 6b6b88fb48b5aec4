"""Sweeps on Ray Tune with an Optuna study: the only room that imports Ray and Optuna.

- settings     where a sweep runs and records (sweep.json); keys: what a Tune trial carries
- resume_policy  what `resume` re-runs, by each trial's and replicate's state
- study        the sweep's Optuna study; importance: which parameters matter (Optuna's evaluators);
               warm_start: another sweep's trials given to a new study before it searches
- preflight    what a sweep must pass before anything starts (data, resources, weights)
- session      the Ray session: join or start Ray, the token, the environment, waiting for a node
- tuner        the trainable with its resources and the Tuner (searcher, scheduler, callbacks)
- records      a sweep's MLflow parent run: opened, claimed, closed by what its trials say; an
               earlier attempt archived
- watch        the head watch: closes the records and ends the driver once the Ray head is lost
- single       one sweep: launch, resume, run on Ray
- replicated   a search run R times (NAME.r0 ...), each replicate a sweep of its own (single)
- confirm      `asha-tune confirm`: the best configurations again, with new seeds (single)
- searcher     an Optuna-study searcher (COMPLETE/PRUNED/FAIL) and an ASHA that survives resume
- trainable    the trial inside a Tune trial; checkpoints: which checkpoints a sweep writes and keeps
- callbacks    MLflow child runs and the progress line, from the driver
- ray_compat   every call into Ray's private API, behind one version-pinned test
- detach       `launch --detach` and `logs`: the driver submitted as a Ray job (JobSubmissionClient);
               jobs: what of it needs no Ray (submission ids, the entrypoint, the job's state),
               which `asha-tune status` reads

Which of single or replicated a command runs is asha_tune.api's, a facade above this room, which
also tells a sweep's answer (analysis/) through `records.Reports`. The modules are layers
(pyproject.toml's contract inside sweep/: each imports only those below it, so no cycle).

May import Ray, Optuna, the rooms below (tracking, spaces, trial) and the kernel; never analysis.
"""

from __future__ import annotations

from asha_tune.sweep.settings import SweepSettings, sweep_name

__all__ = ["SweepSettings", "sweep_name"]
