"""What a Tune trial's config and results carry besides the trial's own metrics, and how the
driver's callbacks travel in Tune's saved experiment.

A Tune trial's config is {TRIAL_NUMBER_KEY: the Optuna trial number, VALUES_KEY: the sampled
values}; the number names the trial everywhere (MLflow child run, Optuna, checkpoints), across
retries and resumes. A result with FAILED_KEY set ends the trial as failed, FAILURE_KEY saying why.
"""

from __future__ import annotations

TRIAL_NUMBER_KEY = "trial_number"
VALUES_KEY = "values"
FAILED_KEY = "failed"
FAILURE_KEY = "failure"
NODE_KEY = "node_id"  # in every result: the id of the Ray node the trial ran on


class DriverState:
    """Tune saves its callbacks with the experiment (pickled) and restores them on resume. Only
    public attributes are state; `_`-prefixed ones are this driver's caches (open clients, what it
    has logged so far), rebuilt by `_reset` after a restore."""

    def _reset(self) -> None:
        pass

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._reset()
