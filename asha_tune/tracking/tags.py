"""Every name asha-tune writes into MLflow: tags, statuses and the per-epoch metrics.

docs/mlflow.md documents each of them; tests/unit/tracking/test_tags.py checks that the two agree.
"""

from __future__ import annotations

STATUS_TAG = "asha_tune.status"  # completed | pruned | failed | running | interrupted
# Modes target and bn_only: which target images the adaptation saw (selection.adaptation_images).
ADAPTATION_TAG = "asha_tune.adaptation_images"
FAILURE_TAG = "asha_tune.failure"  # why a trial or a sweep failed, one line
SWEEP_TAG = "asha_tune.sweep"  # the sweep name on its parent run
SPACE_TAG = "asha_tune.space"
RESTARTED_AS_TAG = "asha_tune.restarted_as"  # on an archived attempt: the name it was started over as
VERSION_TAG = "asha_tune.version"
# A trial's run: its number in the sweep, mode, when it started and how it ran.
TRIAL_NUMBER_TAG = "asha_tune.trial_number"
MODE_TAG = "asha_tune.mode"
FINGERPRINT_TAG = "asha_tune.fingerprint"  # TrialConfig.fingerprint(): what the trial computes
STARTED_AT_TAG = "asha_tune.started_at"
RESUMED_FROM_TAG = "asha_tune.resumed_from_epoch"
EPOCHS_RUN_TAG = "asha_tune.epochs_run"
DURATION_TAG = "asha_tune.duration_s"
RETRIES_TAG = "asha_tune.retries"
CHECKPOINT_TAG = "asha_tune.checkpoint"
NODE_TAG = "asha_tune.node_id"  # the Ray node a trial's latest epoch ran on
NODES_TAG = "asha_tune.node_ids"  # every Ray node it ran on, in order, comma-separated (retries)
# A sweep's parent run: how many trials, the best one, where its results and study are.
TRIALS_TAG = "asha_tune.trials"
BEST_TRIAL_TAG = "asha_tune.best_trial"
BEST_RUN_TAG = "asha_tune.best_run_id"
RESULTS_DIR_TAG = "asha_tune.results_dir"
STUDY_URL_TAG = "asha_tune.study_url"
# The driver running the sweep now (JSON: host, pid, Ray session and job), so that a second driver
# (a resubmitted job) continues a sweep whose driver is gone but never one whose driver is alive.
DRIVER_TAG = "asha_tune.driver"
SELECTION_TAG = "asha_tune.selection"  # the selection protocol the best trial was chosen by
# A parent run's summary of its best trial (reports.summary): is the top separable, is it near chance.
SEPARABLE_TAG = "asha_tune.top_separable"  # "yes" | "no: ..." (within two standard errors)
NEAR_CHANCE_TAG = "asha_tune.near_chance"  # "yes: ..." | "no"
# Confirmation runs (asha_tune.confirm). `asha-tune compare` reads these names: keep them.
KIND_TAG = "asha_tune.kind"  # runs that are not trials: CONFIRMATION_KIND | COMPARISON_KIND
CONFIRMATION_KIND = "confirmation"
COMPARISON_KIND = "comparison"  # an `asha-tune compare` run
CONFIRMS_TAG = "asha_tune.confirms"  # on a confirmation's parent run: the confirmed sweep's name
CONFIRMS_TRIAL_TAG = "asha_tune.confirms_trial"  # on a confirmation child: the trial number confirmed
CONFIRMS_RUN_TAG = "asha_tune.confirms_run"  # on a confirmation child: that trial's MLflow run id
COMPARES_TAG = "asha_tune.compares"  # on a comparison run: the sweep names
COMPARES_RUNS_TAG = "asha_tune.compares_runs"  # on a comparison run: their parent run ids
COMPARED_IN_TAG = "asha_tune.compared_in"  # on a sweep's parent run: its latest comparison run
# What a trial's run logs per epoch: its metrics (accuracies with their standard errors) and its
# own durations (the cost axis of `compare`), never Ray's bookkeeping (time_this_iter_s,
# timestamp, training_iteration, ...) nor the trial's wall-clock stamps (`at_*`, for
# benchmarks/sweep.py). Sizes and chance levels are params (selection.constants_of).
EPOCH_TIMINGS = ("time_train", "time_eval", "time_data", "time_total", "time_checkpoint", "time_imports")
DEVICE_TIME_METRICS = ("time_train", "time_eval")  # a trial's device-seconds, per epoch
EPOCH_METRICS = frozenset(
    {
        "epoch",
        "train_loss",
        "source_acc",
        "lr",
        "val_acc",
        "val_acc_se",
        "target_acc",
        "target_acc_se",
        *EPOCH_TIMINGS,
    }
)


def is_epoch_metric(key: str) -> bool:
    return key in EPOCH_METRICS or key.startswith("acc_")  # acc_<domain>, acc_<domain>_se


# A run's asha-tune status (STATUS_TAG); the first three are how a trial can end.
COMPLETED, PRUNED, FAILED = "completed", "pruned", "failed"
RUNNING, INTERRUPTED = "running", "interrupted"
FINAL_STATUSES = frozenset({COMPLETED, PRUNED, FAILED})
MLFLOW_STATUS = {COMPLETED: "FINISHED", PRUNED: "FINISHED", FAILED: "FAILED", INTERRUPTED: "KILLED"}
