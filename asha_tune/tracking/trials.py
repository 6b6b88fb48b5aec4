"""What a trial's MLflow run holds besides its params: the tags that say what its numbers mean,
and each epoch's metrics with the trial's constants (sizes, chance levels, split) as params.

Used by `asha-tune trial` (runner.py) and by a sweep's child runs (sweep/callbacks.py).
"""

from __future__ import annotations

from typing import Any

from asha_tune.tracking.client import Tracker
from asha_tune.tracking.tags import ADAPTATION_TAG, SELECTION_IMAGES_TAG, SELECTION_METRIC_TAG
from asha_tune.trial import selection
from asha_tune.trial.config import TrialConfig
from asha_tune.trial.registry import protocol_info, target_modes
from asha_tune.trial.score_info import SCORE_INFO


def selection_metric_text(protocol: str, metric: str, mode: str) -> str:
    """`target_entropy (min): mean entropy of ...`: what selects, what it is, which way is better."""
    info = next(
        (i for i in SCORE_INFO.values() if metric == i.metric or metric.startswith(f"{i.name}_")), None
    )
    if info is not None:
        what = info.summary
    elif metric == selection.VAL_ACC:
        what = protocol_info(protocol).val_acc
    else:
        what = "accuracy on the reported target images" if metric.startswith("acc_") else metric
    better = "higher" if mode == "max" else "lower"
    return f"{metric} ({mode}: {better} is better): {what}"


def selection_tags(protocol: str, source: str, targets: list[str], metric: str, mode: str) -> dict[str, str]:
    """What selects a run's figures and which images it saw (on trial and sweep runs)."""
    return {
        SELECTION_METRIC_TAG: selection_metric_text(protocol, metric, mode),
        SELECTION_IMAGES_TAG: selection.what_selection_saw(protocol, source, targets),
    }


def trial_tags(config: TrialConfig, metric: str | None = None, mode: str | None = None) -> dict[str, str]:
    """Tags that say what a trial's numbers mean beyond its params. `metric`/`mode`: the sweep's
    selection metric (default the protocol's, selection.selection_metric)."""
    d, protocol = config.data, config.selection.protocol
    own_metric, own_mode = selection.selection_metric(protocol)
    targets = list(d.target_domains or ())  # `folder`'s defaults: known only from its data root
    tags = selection_tags(protocol, ", ".join(d.sources), targets, metric or own_metric, mode or own_mode)
    if config.shaping.mode in target_modes():
        assert targets  # a target mode names its one target (TrialConfig checks it)
        tags[ADAPTATION_TAG] = selection.adaptation_images(protocol, targets[0], d.limit_per_domain)
    return tags


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
