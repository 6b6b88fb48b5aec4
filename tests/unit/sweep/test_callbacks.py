"""The driver-side Tune callbacks: how a trial's end is named, the progress line, failure lines.

Tune's Trial objects are stood in for by the attributes the callbacks read (config, status,
last_result, error_file, num_failures); the callbacks run against real Tune in tests/integration/test_sweep.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from asha_tune.sweep import progress as progress_line
from asha_tune.sweep.callbacks import ProgressCallback, failure_line, run_duration, trial_status
from asha_tune.sweep.keys import FAILED_KEY, FAILURE_KEY


def trial(number: int, status: str = "RUNNING", **attrs) -> SimpleNamespace:
    fields = {"last_result": {}, "error_file": None, "num_failures": 0, **attrs}
    return SimpleNamespace(config={"trial_number": number}, status=status, **fields)


def lines(capsys) -> list[str]:
    return [line.split("] ", 1)[1] for line in capsys.readouterr().out.splitlines()]


def test_a_trial_ends_completed_pruned_or_failed():
    assert trial_status({"epoch": 4, "val_acc": 50.0}, 4) == "completed"
    assert trial_status({"epoch": 3, "val_acc": 50.0}, 4) == "pruned"
    assert trial_status({"epoch": 4, FAILED_KEY: 1.0}, 4) == "failed"  # even at the last epoch


@pytest.fixture
def every_change(monkeypatch):
    """A line for every change of the picture (without a terminal, at most one every few seconds:
    test_progress.py)."""
    monkeypatch.setattr(progress_line, "LINE_EVERY_S", 0.0)


def test_the_progress_line_counts_states_and_keeps_the_best_epoch(capsys, every_change):
    progress = ProgressCallback("val_acc", "max", num_trials=4, max_epochs=2)
    a, b, c = trial(0), trial(1), trial(2, status="PENDING")
    trials = [a, b, c]
    progress.on_trial_start(0, trials, a)
    progress.on_trial_result(0, trials, a, {"epoch": 1, "val_acc": 40.0})
    progress.on_trial_result(0, trials, b, {"epoch": 1, "val_acc": 55.5})
    progress.on_trial_result(0, trials, a, {"epoch": 2, "val_acc": 50.0})  # not better than 55.5
    progress.on_trial_result(0, trials, b, {"epoch": 2, "val_acc": float("nan")})  # never the best
    a.last_result = {"epoch": 2, "val_acc": 50.0}
    progress.on_trial_complete(0, trials, a)
    a.status = "TERMINATED"  # Tune sets it after telling the callbacks
    b.last_result = {"epoch": 1, "val_acc": 55.5}
    progress.on_trial_complete(0, trials, b)
    out = lines(capsys)
    assert out[0] == "trials 3/4 · running 2 · stopped early 0 · finished 0 · failed 0"
    assert out[1].endswith("best epoch so far: val_acc 40.00% (trial 0, epoch 1)")
    assert out[2].endswith("best epoch so far: val_acc 55.50% (trial 1, epoch 1)")
    # An unchanged picture prints nothing: a's second epoch and b's NaN changed neither count nor best.
    assert out[3] == (
        "trials 3/4 · running 1 · stopped early 0 · finished 1 · failed 0 · "
        "best epoch so far: val_acc 55.50% (trial 1, epoch 1)"
    )
    assert out[4].startswith("trials 3/4 · running 0 · stopped early 1 · finished 1 · failed 0")
    assert len(out) == 5


def test_the_best_epoch_follows_the_mode(capsys, every_change):
    progress = ProgressCallback("train_loss", "min", num_trials=1, max_epochs=3)
    a = trial(0)
    for epoch, loss in enumerate([1.5, 0.75, 0.9], start=1):
        progress.on_trial_result(0, [a], a, {"epoch": epoch, "train_loss": loss})
    assert lines(capsys)[-1].endswith("best epoch so far: train_loss 0.75 (trial 0, epoch 2)")


def test_a_failed_trial_is_one_line_with_its_reason(tmp_path, capsys):
    error_file = tmp_path / "error.txt"
    error_file.write_text(
        "Traceback (most recent call last):\n  File ...\n\nDataError: cannot read image x.jpg\n"
    )
    crashed = trial(3, error_file=str(error_file), num_failures=3)
    assert failure_line(crashed, None) == (
        f"trial 3 failed after 2 retries: DataError: cannot read image x.jpg (traceback: {error_file})"
    )
    assert (
        failure_line(trial(4, num_failures=1), None)
        == "trial 4 failed: the trial raised an error (no error file)"
    )
    refused = {"epoch": 1, FAILED_KEY: 1.0, FAILURE_KEY: "DivergedError: loss is nan at epoch 1"}
    assert failure_line(trial(5), refused) == (
        "trial 5 failed: DivergedError: loss is nan at epoch 1 (not retried: it would fail again)"
    )

    progress = ProgressCallback("val_acc", "max", num_trials=2, max_epochs=2)
    failing = trial(5, last_result=refused)
    progress.on_trial_complete(0, [failing, trial(6)], failing)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == failure_line(failing, refused)
    assert out[1].endswith("trials 2/2 · running 1 · stopped early 0 · finished 0 · failed 1")


def test_a_runs_duration_is_never_shorter_than_the_compute_it_reports():
    # A trial of 0.4 s wall whose start stamp was taken late still lasted its own compute.
    assert run_duration(0.0004, {"time_total": 0.37}) == 0.37
    assert run_duration(12.3456, {"time_total": 3.0}) == 12.346  # wall time, millisecond stamps
    assert run_duration(0.25, {}) == 0.25  # a trial that reported nothing


def test_a_sweep_child_run_records_the_device_its_trial_used(tmp_path):
    from mlflow.tracking import MlflowClient

    from asha_tune.spaces import load_space
    from asha_tune.sweep.callbacks import TrackingCallback
    from asha_tune.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    experiment = tracker.experiment("devices")
    parent = tracker.start_run(experiment, "sweep")
    space = load_space("quickstart")
    callback = TrackingCallback(uri, experiment, parent, space)
    t = trial(0, trial_id="t0")
    t.config["values"] = {"shaping.p0": 0.5, "shaping.convs": [1]}
    callback.on_trial_start(0, [t], t)
    for epoch in (1, 2):
        callback.on_trial_result(0, [t], t, {"epoch": epoch, "val_acc": 40.0, "device": "cpu"})
    callback.get_state()  # as Tune before its snapshot: what is queued is written
    (child,) = tracker.child_runs(experiment, parent)
    run = MlflowClient(uri).get_run(child.info.run_id).data
    assert run.params["device"] == "cpu"
    assert "device" not in run.metrics


def test_a_trials_run_is_written_in_batches_each_epoch_once_across_a_resume(tmp_path):
    from mlflow.tracking import MlflowClient

    from asha_tune.spaces import load_space
    from asha_tune.sweep.callbacks import TrackingCallback
    from asha_tune.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri)
    experiment = tracker.experiment("batches")
    parent = tracker.start_run(experiment, "sweep")
    children = f"tags.mlflow.parentRunId = '{parent}'"
    space = load_space("quickstart")
    values = {"shaping.p0": 0.5, "shaping.convs": [1]}
    callback = TrackingCallback(uri, experiment, parent, space, rehearsal=True, records="batches-1")
    t = trial(0, trial_id="t0")
    t.config["values"] = values
    callback.on_trial_start(0, [t], t)
    for epoch in (1, 2):
        callback.on_trial_result(0, [t], t, {"epoch": epoch, "val_acc": 40.0 + epoch, "node_id": "n1"})
    assert tracker.find_runs(experiment, children) == []  # a running trial's reports wait a moment
    callback.get_state()  # Tune asks before its snapshot: everything is written first
    (run,) = tracker.find_runs(experiment, children)
    assert run.data.params["search"]
    assert run.data.tags["asha_tune.rehearsal"] == "true"
    assert run.data.tags["asha_tune.node_ids"] == "n1"
    callback.on_experiment_end([])  # the driver is killed here: a resume continues the same run

    again = TrackingCallback(uri, experiment, parent, space, rehearsal=True, records="batches-2")
    t = trial(0, trial_id="t0")
    t.config["values"] = values
    again.on_trial_start(0, [t], t)
    # From its checkpoint at epoch 1, on another node: epoch 2 again (kept as first logged), then 3.
    again.on_trial_result(0, [t], t, {"epoch": 2, "val_acc": 99.0, "node_id": "n2"})
    again.on_trial_result(0, [t], t, {"epoch": 3, "val_acc": 43.0, "node_id": "n2"})
    t.last_result = {"epoch": 3, "val_acc": 43.0}
    again.on_trial_complete(0, [t], t)
    again.on_experiment_end([])
    (run,) = tracker.find_runs(experiment, children)
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "val_acc")
    assert sorted((m.step, m.value) for m in history) == [(1, 41.0), (2, 42.0), (3, 43.0)]
    assert run.data.tags["asha_tune.status"] == "pruned"
    assert run.info.status == "FINISHED"
    assert run.data.tags["asha_tune.resumed_from_epoch"] == "1"
    assert run.data.tags["asha_tune.node_ids"] == "n1,n2"
    assert run.data.metrics["final_val_acc"] == 43.0


def test_ended_trials_checkpoints_are_emptied_once_their_records_are_written_but_the_best(tmp_path):
    from pyarrow.fs import LocalFileSystem

    from asha_tune.sweep.checkpoints import CheckpointCleanup
    from asha_tune.sweep.writer import close_writer, writer_for

    def ended(number: int, epoch: int, value: float) -> SimpleNamespace:
        folder = tmp_path / f"trial{number}"
        (folder / "checkpoint_000000").mkdir(parents=True)
        (folder / "checkpoint_000000" / "trial.pt").write_text("state")
        storage = SimpleNamespace(storage_filesystem=LocalFileSystem(), trial_fs_path=str(folder))
        last = {"epoch": epoch, "val_acc": value}
        return trial(number, status="RUNNING", trial_id=f"t{number}", last_result=last, storage=storage)

    def kept(t: SimpleNamespace) -> bool:
        return (tmp_path / f"trial{t.config['trial_number']}" / "checkpoint_000000" / "trial.pt").exists()

    cleanup = CheckpointCleanup("val_acc", "max", max_epochs=4, records="cleanup")
    seen: list[tuple[int, bool]] = []
    trials = [ended(0, 4, 50.0), ended(1, 4, 60.0), ended(2, 2, 90.0), ended(3, 4, 60.0)]
    for t in trials:
        # Its records wait in the writer; its checkpoints are emptied only after they are written.
        writer_for("cleanup").touch(
            t.config["trial_number"],
            "mlflow",
            lambda t=t: seen.append((t.config["trial_number"], kept(t))),
            60,
        )
        cleanup.on_trial_complete(0, trials, t)
        t.status = "TERMINATED"
    close_writer("cleanup")
    assert sorted(seen) == [(0, True), (1, True), (2, True), (3, True)]
    # The best full-budget trial keeps its weights (a tie goes to the lower number); a stopped
    # trial never counts, however high its last value.
    assert [kept(t) for t in trials] == [False, True, False, False]
    better = ended(4, 4, 70.0)
    cleanup.on_trial_complete(0, [*trials, better], better)
    close_writer("cleanup")
    # the old best's, once a better one ended
    assert kept(better)
    assert not kept(trials[1])


def test_a_resumed_sweep_counts_the_trials_that_ended_after_tunes_last_snapshot(
    tmp_path, capsys, every_change
):
    """A driver killed after trials ended but before Tune's next snapshot: resume does not run
    them again and Tune never hears of them. The line counts them from the study, so it ends at
    the sweep's size, not short of it; a warm start's trials and an earlier part of the sweep
    (before `first_trial`) are not this run's."""
    from asha_tune.spaces import load_space
    from asha_tune.sweep.study import StudyHandle, TrialState, create_study

    space = load_space("quickstart")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study(url, "s", space)
    handle = StudyHandle(url, "s", space)
    ends = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]
    for i, state in enumerate(ends):
        number, _ = handle.ask(f"ray-{i}", known=set())
        handle.tell(number, state, None if state == TrialState.FAIL else 50.0)
    handle.ask("ray-5", known=set())  # running when the driver died
    # Tune's snapshot knows trials 0 and 1 (ended) and 5 (running again); 2, 3 and 4 ended after it.
    known = [trial(0, "TERMINATED", trial_id="ray-0"), trial(1, "TERMINATED", trial_id="ray-1")]
    known[0].last_result, known[1].last_result = {"epoch": 2, "val_acc": 50.0}, {"epoch": 1, "val_acc": 50.0}
    running = trial(5, "PENDING", trial_id="ray-5")
    progress = ProgressCallback("val_acc", "max", num_trials=8, max_epochs=2, study=handle)
    progress.on_trial_start(0, [*known, running], running)
    assert lines(capsys)[-1] == "trials 6/8 · running 1 · stopped early 2 · finished 2 · failed 1"

    later = ProgressCallback("val_acc", "max", num_trials=4, max_epochs=2, study=handle, first_trial=3)
    later.on_trial_start(0, [running], running)  # an extension from trial 3 on: trials 3 and 4 are its
    assert lines(capsys)[-1] == "trials 3/4 · running 1 · stopped early 0 · finished 1 · failed 1"
    plain = ProgressCallback("val_acc", "max", num_trials=8, max_epochs=2)  # no study: Tune's trials only
    plain.on_trial_start(0, [*known, running], running)
    assert lines(capsys)[-1] == "trials 3/8 · running 1 · stopped early 1 · finished 1 · failed 0"
