"""`asha-tune status` and `list` as lines and JSON, from a sweep's state built here (no store)."""

from __future__ import annotations

import dataclasses

from asha_tune.analysis.status import (
    Driver,
    commands,
    counts,
    duration_text,
    eta_s,
    last_error,
    list_lines,
    status_lines,
    status_record,
)
from asha_tune.tracking.sweep_state import SweepState, TrialRow

NOW = 1_800_000_000.0  # seconds
START_MS = int((NOW - 3600) * 1000)  # the sweep started an hour ago


def trial(number, status, duration=None, started=None, val=None, se=None, failure=None, ended_ms=None):
    metrics = {} if val is None else {"val_acc": val, **({"val_acc_se": se} if se is not None else {})}
    return TrialRow(number, f"run{number}", status, started, ended_ms, duration, failure, metrics)


def state(status="running", trials=(), num_trials=10, tags=None, replicates=(), params=None, ended_ms=None):
    return SweepState(
        name="rl",
        run_id="parent",
        experiment_id="1",
        started_ms=START_MS,
        ended_ms=ended_ms,
        tags={"asha_tune.status": status, "asha_tune.space": "random_layers", **(tags or {})},
        params={
            "scheduler.metric": "val_acc",
            "scheduler.mode": "max",
            "selection.protocol": "source_val",
            "search.algorithm": "optuna",
            "scheduler.kind": "asha",
            "search.max_concurrent": "2",
            **(params or {}),
        },
        num_trials=num_trials,
        trials=list(trials),
        replicates=list(replicates),
    )


RUNNING_TRIALS = [
    trial(0, "completed", duration=600, val=60.0, se=2.0),
    trial(1, "pruned", duration=200, val=70.0, se=1.0),  # higher, but stopped early: not the best
    trial(2, "failed", duration=100, failure="CUDA out of memory", ended_ms=5),
    trial(3, "running", started=NOW - 100),
    trial(4, "running", started=NOW - 500),
]
ALIVE = Driver(True, "alive (pid 42 on node-3; heard from 4 s ago)")


def test_trials_are_counted_by_state_with_the_space_saying_how_many_are_to_go():
    c = counts(state(trials=RUNNING_TRIALS))
    assert (c.finished, c.stopped_early, c.failed, c.running, c.interrupted, c.to_go) == (1, 1, 1, 2, 0, 5)


def test_the_eta_is_the_ended_trials_mean_time_over_the_trials_that_run_at_once():
    # mean of 600, 200, 100 = 300 s; 5 to go: 1500 s; running: 300-100 = 200 left and 0 (over its mean)
    # two run at once: (1500 + 200 + 0) / 2
    assert eta_s(state(trials=RUNNING_TRIALS), NOW) == 850.0
    assert eta_s(state(trials=RUNNING_TRIALS[3:]), NOW) is None  # no trial has ended yet
    assert eta_s(state("completed", trials=RUNNING_TRIALS[:3]), NOW) is None


def test_status_lines_say_state_driver_trials_best_with_se_eta_error_and_what_next():
    lines = status_lines(state(trials=RUNNING_TRIALS), ALIVE, now=NOW)
    assert lines[0] == "sweep rl: running"
    assert lines[1] == "  driver: alive (pid 42 on node-3; heard from 4 s ago)"
    assert lines[2] == (
        "  space random_layers: optuna search, asha scheduler; selection source_val (val_acc, higher is better)"
    )
    assert lines[3] == (
        "  trials: 3 of 10 trials ended (1 finished, 1 stopped early, 1 failed); 2 running, 5 to go"
    )
    assert lines[4].startswith("  best so far: val_acc 60.00 ± 2.00%, trial 0 (ran every epoch;")
    assert "; ETA 14 min" in lines[5]
    assert "1 h 00 min ago" in lines[5]
    assert "  last error: trial 2 failed: CUDA out of memory" in lines
    assert lines[-1] == "  next: asha-tune status rl · asha-tune stop rl"


def test_a_running_sweep_whose_driver_is_gone_says_so_and_offers_resume():
    gone = Driver(False, "silent for 10 min (pid 42 on node-3): taken to be gone")
    lines = status_lines(state(trials=RUNNING_TRIALS), gone, now=NOW)
    assert lines[0] == "sweep rl: recorded as running, but its driver is gone"
    assert lines[-1] == "  next: asha-tune resume rl"


def test_the_commands_that_go_on_follow_the_state():
    tail, store = " --results-dir /r", " --tracking-uri http://m:5000"
    assert commands(state("interrupted"), None, tail, store) == ["asha-tune resume rl --results-dir /r"]
    assert commands(state("failed"), None, tail, store) == [
        "asha-tune launch --space random_layers --name rl --restart --results-dir /r"
    ]
    assert commands(state("completed"), None, tail, store) == [
        "asha-tune ui rl --results-dir /r",
        "asha-tune report rl --tracking-uri http://m:5000",
    ]
    rehearsal = state("completed", tags={"asha_tune.rehearsal": "true"})
    assert commands(rehearsal, None, tail, store) == ["asha-tune ui rl --results-dir /r"]


def test_the_sweeps_own_failure_is_the_last_error_before_any_trials():
    failed = state("failed", trials=RUNNING_TRIALS, tags={"asha_tune.failure": "the Ray head was lost"})
    assert last_error(failed) == "the Ray head was lost"
    assert last_error(state(trials=RUNNING_TRIALS[:2])) is None


def test_a_rehearsal_has_no_best_so_far():
    rehearsal = state(trials=RUNNING_TRIALS, tags={"asha_tune.rehearsal": "true"})
    assert status_record(rehearsal, ALIVE, now=NOW)["best"] is None
    assert any(
        "a rehearsal's scores are simulated" in line for line in status_lines(rehearsal, ALIVE, now=NOW)
    )


def test_the_json_record_has_the_numbers_the_lines_say():
    record = status_record(state(trials=RUNNING_TRIALS), ALIVE, now=NOW)
    assert record["state"] == "running"
    assert record["driver"] == {"alive": True, "text": ALIVE.text}
    assert record["trials"] == {
        "total": 10,
        "finished": 1,
        "stopped_early": 1,
        "failed": 1,
        "running": 2,
        "interrupted": 0,
        "to_go": 5,
    }
    assert record["best"] == {"trial": 0, "status": "completed", "value": 60.0, "se": 2.0, "run_id": "run0"}
    assert record["elapsed_s"] == 3600.0
    assert record["eta_s"] == 850.0
    assert record["ended"] is None
    assert record["selection"] == {"protocol": "source_val", "metric": "val_acc", "mode": "max"}


def test_a_finished_sweeps_elapsed_time_ends_when_it_ended():
    done = state("completed", trials=RUNNING_TRIALS[:3], ended_ms=START_MS + 1_800_000)
    record = status_record(done, None, now=NOW)
    assert record["state"] == "finished"
    assert record["elapsed_s"] == 1800.0
    assert record["eta_s"] is None


def test_a_replicated_search_sums_its_replicates_and_counts_those_not_launched():
    replicates = [
        state("completed", trials=RUNNING_TRIALS[:3], num_trials=3),
        state("running", trials=RUNNING_TRIALS[3:], num_trials=3),
    ]
    search = state(
        replicates=replicates,
        tags={"asha_tune.replicates": "3"},
        params={"search.replicates": "3", "search.num_trials": "3"},
        num_trials=None,
    )
    c = counts(search)
    assert (c.finished, c.stopped_early, c.failed, c.running, c.to_go) == (1, 1, 1, 2, 1 + 3)
    lines = status_lines(search, ALIVE, now=NOW)
    assert lines[0] == "replicated search (3 replicates, 2 launched) rl: running"

    # Extended (asha-tune extend): its recorded space asks 5 per replicate, over the param's 3.
    extended = dataclasses.replace(search, num_trials=5)
    assert counts(extended).to_go == 1 + 5


def test_list_has_one_row_per_sweep_under_a_header():
    rows = list_lines(
        [(state(trials=RUNNING_TRIALS), ALIVE), (state("completed", num_trials=None), None)], "sqlite:///m.db"
    )
    assert rows[0].split() == ["sweep", "state", "trials", "best", "started"]
    assert rows[1].split()[:5] == ["rl", "running", "3/10", "val_acc", "60.00%"]
    assert rows[2].split()[:2] == ["rl", "finished"]
    assert list_lines([], "sqlite:///m.db") == ["no sweep in sqlite:///m.db"]


def test_durations_read_as_a_person_says_them():
    assert [duration_text(s) for s in (45, 720, 3 * 3600 + 300, 2 * 86400 + 4 * 3600)] == [
        "45 s",
        "12 min",
        "3 h 05 min",
        "2 d 4 h",
    ]
