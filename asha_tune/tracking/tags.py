"""Every name asha-tune writes into MLflow: tags, statuses and the per-epoch metrics.

docs/mlflow.md documents each of them; tests/unit/test_docs.py checks that the two agree.
"""

from __future__ import annotations

from asha_tune.trial.usage import CPU_METRIC as CPU_METRIC
from asha_tune.trial.usage import GPU_MEMORY_METRIC as GPU_MEMORY_METRIC
from asha_tune.trial.usage import GPU_UTILIZATION_METRIC as GPU_UTILIZATION_METRIC
from asha_tune.trial.usage import MEMORY_METRIC as MEMORY_METRIC

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
RAY_TRIAL_TAG = "ray.trial_id"  # the Tune trial id a sweep's child run was last run as
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
# Where a trial computed (devices.describe_device: "cpu", "cuda:0 NVIDIA H200"): a param from its
# first epoch; a resume on another device (`resume --device`) names the new one in a tag.
DEVICE_PARAM = "device"
RESUMED_ON_DEVICE_TAG = "asha_tune.resumed_on_device"
# A sweep's parent run: how many trials, the best one, where its results and study are.
TRIALS_TAG = "asha_tune.trials"
BEST_TRIAL_TAG = "asha_tune.best_trial"
BEST_RUN_TAG = "asha_tune.best_run_id"
RESULTS_DIR_TAG = "asha_tune.results_dir"
# The data a sweep read, as its launch found it: each domain's fingerprint (trial/datasets.py; it
# changes when a file is added, removed, renamed or rewritten), e.g. "art_painting 6bff7ad98e9f123a, ...".
DATA_FINGERPRINT_TAG = "asha_tune.data_fingerprint"
SPACE_ARTIFACT = "space.json"  # the resolved space, an artifact of the parent run (records.recorded_space)
STUDY_URL_TAG = "asha_tune.study_url"
# The driver running the sweep now (JSON: host, pid, Ray session and job), so that a second driver
# (a resubmitted job) continues a sweep whose driver is gone but never one whose driver is alive.
DRIVER_TAG = "asha_tune.driver"
# A sweep's driver while it runs (sweep/control.py), so that `asha-tune status` and `stop` work from
# any machine that reaches the store: it refreshes HEARTBEAT_TAG every few seconds (JSON: the time,
# its host and pid), and stops as Ctrl-C does once `asha-tune stop` sets STOP_REQUEST_TAG (JSON:
# when, from where).
HEARTBEAT_TAG = "asha_tune.heartbeat"
STOP_REQUEST_TAG = "asha_tune.stop_requested"
SELECTION_TAG = "asha_tune.selection"  # the selection protocol the best trial was chosen by
# On trial and sweep runs: what selects (the metric, what it is, which way is better), and which
# images selection saw (label-free protocols: unlabelled target images, no target label).
SELECTION_METRIC_TAG = "asha_tune.selection_metric"
SELECTION_IMAGES_TAG = "asha_tune.selection_images"
# A replicated search (--replicates R): its parent run holds R replicate sweeps, each a sweep of its
# own (NAME.r0 ...) nested under it, tagged with its kind, its number and its seeds.
REPLICATES_TAG = "asha_tune.replicates"  # on the replicated search's parent run: R
REPLICATE_KIND = "replicate"  # KIND_TAG of a replicate's parent run
REPLICATE_TAG = "asha_tune.replicate"  # on a replicate's parent run: its number r
REPLICATE_OF_TAG = "asha_tune.replicate_of"  # on a replicate's parent run: the replicated search
REPLICATE_SEEDS_TAG = "asha_tune.replicate_seeds"  # "sampler S, trial T, split P"
# --warm-start SWEEP: on the warm-started sweep's parent run, where its study's first trials came from.
WARM_START_TAG = "asha_tune.warm_start"  # the source sweep's name
WARM_START_ADDED_TAG = "asha_tune.warm_start_added"  # how many of its trials were added
WARM_START_SKIPPED_TAG = "asha_tune.warm_start_skipped"  # how many were not (warm_start.txt says why)
# asha-tune extend NAME --trials N (sweep/extend.py): on a trial run the extension added, which one
# it was (1, 2, ...); on the sweep's parent run, how many extensions it has had.
EXTENSION_TAG = "asha_tune.extension"
EXTENSIONS_TAG = "asha_tune.extensions"
# A parent run's summary of its best trial (tracking/best.py): is the top separable, is it near chance.
# launch --rehearse: on a rehearsal's parent run and every child run ("true"); its scores are simulated,
# so compare, confirm and warm starts refuse it and its parent run logs no best figures.
REHEARSAL_TAG = "asha_tune.rehearsal"
SEPARABLE_TAG = "asha_tune.top_separable"  # "yes" | "no: ..." (within two standard errors)
NEAR_CHANCE_TAG = "asha_tune.near_chance"  # "yes: ..." | "no"
# Confirmation runs (sweep/confirm.py). `asha-tune compare` reads these names: keep them.
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
# What a trial used over each epoch, sampled in its own process (trial/usage.py): the CPU time of
# the process and its children (100 = one core busy) and their peak resident memory; where Ray gave
# it GPUs, their mean NVML utilisation and their peak memory used (by every process on them). A trial
# without a GPU logs no GPU metrics. A sweep's mean GPU utilisation is the mean over every epoch
# logged: `compare`, `report`, `status` and the progress line show it. The names' home: trial/usage.py.
USAGE_METRICS = (CPU_METRIC, MEMORY_METRIC, GPU_UTILIZATION_METRIC, GPU_MEMORY_METRIC)
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
        "target_entropy",  # the label-free scores over the targets (score_info.py)
        "target_im",
        "target_snd",
        "selected_epoch",  # selection.epoch best: the epoch whose figures the run reports
        *EPOCH_TIMINGS,
        *USAGE_METRICS,
    }
)
# acc_<domain>(_se); a label-free score of one target, e.g. entropy_cartoon; under selection.epoch
# best, raw_<metric>: the epoch's own figure before selection.
EPOCH_METRIC_PREFIXES = ("acc_", "entropy_", "im_", "snd_", "raw_")


def is_epoch_metric(key: str) -> bool:
    return key in EPOCH_METRICS or key.startswith(EPOCH_METRIC_PREFIXES)


# A run's asha-tune status (STATUS_TAG); the first three are how a trial can end.
COMPLETED, PRUNED, FAILED = "completed", "pruned", "failed"
RUNNING, INTERRUPTED = "running", "interrupted"
FINAL_STATUSES = frozenset({COMPLETED, PRUNED, FAILED})
MLFLOW_STATUS = {COMPLETED: "FINISHED", PRUNED: "FINISHED", FAILED: "FAILED", INTERRUPTED: "KILLED"}
