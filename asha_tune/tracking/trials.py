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
    return {
        ADAPTATION_TAG: selection.adaptation_images(
            config.selection.protocol, d.targets[0], d.limit_per_domain
        )
    }


def log_epoch(tracker: Tracker, run_id: str, metrics: dict[str, Any]) -> None:
    """An epoch's metrics; the trial's constants (sizes, chance levels, split hash) as params.

    Params cannot change, so logging the same constants again (every epoch, after a resume)
    is a no-op, and a different value would be an error: the split never changes within a run.
    """
    constants = selection.constants_of(metrics)
    if constants:
        tracker.log_params(run_id, constants)
    per_epoch = {k: v for k, v in metrics.items() if k not in constants}
    tracker.log_metrics(run_id, per_epoch, step=int(metrics["epoch"]))
