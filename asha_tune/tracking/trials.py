"""What a trial's MLflow run holds besides its params: the tags that say what its numbers mean,
and each epoch's metrics with the trial's constants (sizes, chance levels, split) as params.

Used by `asha-tune trial` (runner.py) and by a sweep's child runs (sweep/callbacks.py).
"""

from __future__ import annotations

from typing import Any

from asha_tune.tracking.client import Tracker
from asha_tune.tracking.tags import ADAPTATION_TAG
from asha_tune.trial import selection
from asha_tune.trial.config import TrialConfig
from asha_tune.trial.registry import target_modes


def trial_tags(config: TrialConfig) -> dict[str, str]:
    """Tags that say what a trial's numbers mean beyond its params."""
    if config.shaping.mode not in target_modes():
        return {}
    d = config.data
    targets = d.target_domains  # a target mode names its one target (TrialConfig checks it)
    assert targets is not None
    return {
        ADAPTATION_TAG: selection.adaptation_images(config.selection.protocol, targets[0], d.limit_per_domain)
    }


def log_constants(tracker: Tracker, run_id: str, constants: dict[str, Any]) -> None:
    """A trial's constants as params. Those a machine chooses (the data path) keep the first
    attempt's value: a resumed trial elsewhere may choose otherwise, and params cannot change."""
    first = {k for k in constants if k in selection.FIRST_ATTEMPT_CONSTANTS}
    if first:
        logged = tracker.params(run_id)
        constants = {k: v for k, v in constants.items() if k not in first or k not in logged}
    if constants:
        tracker.log_params(run_id, constants)


def log_epoch(tracker: Tracker, run_id: str, metrics: dict[str, Any]) -> None:
    """An epoch's metrics; the trial's constants (sizes, chance levels, split hash) as params.

    Params cannot change, so logging the same constants again (every epoch, after a resume)
    is a no-op, and a different value would be an error: the split never changes within a run.
    """
    constants = selection.constants_of(metrics)
    if constants:
        log_constants(tracker, run_id, constants)
    per_epoch = {k: v for k, v in metrics.items() if k not in constants}
    tracker.log_metrics(run_id, per_epoch, step=int(metrics["epoch"]))
