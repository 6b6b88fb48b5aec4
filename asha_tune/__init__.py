"""asha-tune: hyperparameter sweeps for activation-shaping domain adaptation on PACS.

The modules, one concern each:
- config     the typed trial configuration (pydantic) and the paper's conv numbering
- shaping    forward hooks, shaping functions and the shaping modes
- model      ResNet-18 and its weights
- data       PACS discovery, the decode-once cache, on-device augmentation
- selection  selection protocols (oracle, source_val, target_val), splits, standard errors
- pairing    which target images go with each source batch (index, shuffled)
- training   one trial (`run_trial`), with per-epoch reports and exact checkpoints
- tracking   MLflow runs
- preflight  checks a sweep passes before anything starts (data, resources, weights)
- display    how values read on a terminal
- cli        the `asha-tune` command, a thin layer over the modules above
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
