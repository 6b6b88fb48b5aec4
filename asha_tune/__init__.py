"""asha-tune: hyperparameter sweeps for activation-shaping domain adaptation on PACS.

The modules, one concern each:
- config      the typed trial configuration (pydantic) and the paper's conv numbering
- shaping     forward hooks, shaping functions and the shaping modes (the registries of names)
- model       ResNet-18 and its weights
- data        PACS discovery, the decode-once cache, on-device augmentation
- selection   selection protocols (oracle, source_val, target_val), splits, standard errors
- pairing     which target images go with each source batch (index, shuffled)
- training    one trial (`run_trial`), with per-epoch reports and exact checkpoints
- runner      one trial outside Ray (`asha-tune trial`): its checkpoint file and MLflow run
- spaces/     search spaces: parameter types, the space model, loading files, describing them
- study       the Optuna study of a sweep (the only module that imports optuna)
- sweep/      sweeps on Ray Tune (the only package that imports Ray): launch and resume,
              the trainable, searcher and scheduler, callbacks, checkpoints, cluster nodes
- tracking    MLflow runs, tags and metric names (the only module that imports mlflow)
- reports     what stored records say: a sweep's trials, its best one and how noisy it is
- confirm     `asha-tune confirm`: the best configurations again, with new seeds
- compare     `asha-tune compare`: sweeps, a replayed grid and the published figures
- plots       the comparison's PNGs
- reference   what judging a difference from the paper needs (seed spreads, domain sizes)
- preflight   checks a sweep passes before anything starts (data, resources, weights)
- cluster     a local multi-node cluster: Ray nodes, PostgreSQL, an MLflow server
- processes   processes a command started: start, identify, stop
- defaults    where things go unless told otherwise, and the environment variables that say so
- display     how values read on a terminal
- errors      the errors a user can act on (one line, exit status 2)
- cli         the `asha-tune` command, a thin layer over the modules above
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("asha-tune")  # one version number: pyproject.toml's
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

__all__ = ["__version__"]
