"""What a Tune trial's config and results carry besides the trial's own metrics.

A Tune trial's config is {TRIAL_NUMBER_KEY: the Optuna trial number, VALUES_KEY: the sampled
values}; the number names the trial everywhere (MLflow child run, Optuna, checkpoints), across
retries and resumes. A result with FAILED_KEY set ends the trial as failed, FAILURE_KEY saying why.
"""

from __future__ import annotations

TRIAL_NUMBER_KEY = "trial_number"
VALUES_KEY = "values"
FAILED_KEY = "failed"
FAILURE_KEY = "failure"
