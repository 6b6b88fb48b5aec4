"""The progress line: its ETA from the trials' own timings, what it says, how often it prints
without a terminal. Known numbers throughout; the clock is the test's."""

from __future__ import annotations

import io
import sys
import time
from types import SimpleNamespace

import pytest

from asha_tune.display import duration_text, eta_s
from asha_tune.sweep import callbacks, progress
from asha_tune.sweep.callbacks import ProgressCallback
from asha_tune.sweep.progress import Best, Lines, Picture
from tests.helpers.terminal import run_on_terminal, screen


def trial(number: int, status: str = "RUNNING", **attrs) -> SimpleNamespace:
    fields = {"last_result": {}, "error_file": None, "num_failures": 0, **attrs}
    return SimpleNamespace(config={"trial_number": number}, status=status, **fields)


def test_the_eta_shares_the_work_left_over_the_slots_by_the_trials_own_timings():
    # Ended trials took 100 s on average (the longest 120 s); 4 to start; two running, 30 s and
    # 90 s in (70 s and 10 s left); 2 at once: (4 * 100 + 70 + 10) / 2 = 240 s.
    assert eta_s(100.0, 4, [30.0, 90.0], 2, 120.0) == 240.0
    # A running trial past the mean is taken to last as long as the longest ended one.
    assert eta_s(100.0, 0, [110.0], 2, 300.0) == 190.0
    assert eta_s(100.0, 0, [400.0], 2, 300.0) == 0.0  # past both: nothing known left
    assert eta_s(None, 4, [30.0], 2) is None  # no trial has ended: no estimate
    assert [duration_text(s) for s in (0, 44, 185, 7620, 277200)] == [
        "0s",
        "44s",
        "3m 05s",
        "2h 07m",
        "3d 05h",
    ]


def test_the_line_says_counts_eta_gpu_use_and_the_best_epoch_with_its_se():
    counts = {"running": 2, "pruned": 3, "completed": 1, "failed": 1, "pending": 1}
    best = Best("val_acc", 55.5, 1.2, trial=3, epoch=4)
    picture = Picture(8, 20, counts, best, gpu_percent=71.4, eta_s=750.0)
    assert progress.line(3725.0, picture) == (
        "[ 1h 02m] trials 8/20 · running 2 · stopped early 3 · finished 1 · failed 1 · ETA 12m 30s · "
        "GPU 71% · best epoch so far: val_acc 55.50 ± 1.20% (trial 3, epoch 4)"
    )
    # A CPU sweep, no trial ended yet, a metric without a standard error: none of the three.
    plain = Picture(2, 20, {"running": 2}, Best("target_entropy", 0.8123, None, 0, 1))
    assert plain.text() == (
        "trials 2/20 · running 2 · stopped early 0 · finished 0 · failed 0 · "
        "best epoch so far: target_entropy 0.8123 (trial 0, epoch 1)"
    )


def test_lines_without_a_terminal_come_at_most_every_few_seconds_but_the_last_always():
    out = io.StringIO()
    lines = Lines(out)
    every = progress.LINE_EVERY_S
    one = Picture(1, 4, {"running": 1})
    two = Picture(2, 4, {"running": 2})
    three = Picture(2, 4, {"running": 1, "completed": 1})
    lines.show(0.0, one, now=100.0)  # the first at once
    lines.show(1.0, two, now=101.0)  # a change within the interval: held back
    assert not lines.due(101.0)
    assert lines.due(100.0 + every)
    lines.say("trial 3 failed: DivergedError: loss is nan at epoch 1")  # failure lines at once
    lines.show(every, two, now=100.0 + every)  # the held-back change, once due
    lines.show(every + 1, Picture(2, 4, {"running": 2}, eta_s=5.0), now=200.0)  # only the ETA moved
    lines.show(every + 2, three, now=201.0)  # held back ...
    lines.end(every + 3, three, now=202.0)  # ... but the last picture always
    lines.end(every + 4, three, now=203.0)  # once
    assert [line.split("] ", 1)[-1] for line in out.getvalue().splitlines()] == [
        "trials 1/4 · running 1 · stopped early 0 · finished 0 · failed 0",
        "trial 3 failed: DivergedError: loss is nan at epoch 1",
        "trials 2/4 · running 2 · stopped early 0 · finished 0 · failed 0",
        "trials 2/4 · running 1 · stopped early 0 · finished 1 · failed 0",
    ]


@pytest.fixture
def clock(monkeypatch):
    """The callbacks' monotonic clock, set by the test."""
    now = SimpleNamespace(t=0.0)
    fake = SimpleNamespace(monotonic=lambda: now.t, time=time.time)
    monkeypatch.setattr(callbacks, "time", fake)
    monkeypatch.setattr(progress, "time", fake)
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)  # every change a line
    return now


def test_the_callbacks_line_takes_the_eta_from_ended_and_running_trials_and_the_mean_gpu_use(clock, capsys):
    cb = ProgressCallback("val_acc", "max", num_trials=6, max_epochs=2)
    t0, t1, t2, t3 = trial(0), trial(1), trial(2, status="PENDING"), trial(3, status="PENDING")
    trials = [t0, t1, t2, t3]
    cb.on_trial_start(0, trials, t0)
    cb.on_trial_start(0, trials, t1)
    clock.t = 40.0
    cb.on_trial_result(0, trials, t0, {"epoch": 1, "val_acc": 50.0, "gpu_utilization_percent": 60.0})
    cb.on_trial_result(0, trials, t1, {"epoch": 1, "val_acc": 45.0, "gpu_utilization_percent": 80.0})
    clock.t = 80.0
    t0.last_result = {"epoch": 2, "val_acc": 55.5, "val_acc_se": 1.2, "time_total_s": 80.0}
    cb.on_trial_result(0, trials, t0, t0.last_result)
    cb.on_trial_complete(0, trials, t0)
    clock.t = 120.0
    t1.last_result = {"epoch": 1, "val_acc": 45.0, "time_total_s": 120.0}
    cb.on_trial_complete(0, trials, t1)  # stopped early, after 120 s of its own
    cb.on_trial_start(0, trials, t2)
    cb.on_trial_start(0, trials, t3)
    clock.t = 150.0
    cb.on_trial_result(0, trials, t2, {"epoch": 1, "val_acc": 40.0, "time_total_s": 30.0})
    cb.on_trial_result(0, trials, t3, {"epoch": 1, "val_acc": 60.0, "val_acc_se": 1.0, "time_total_s": 90.0})
    last = capsys.readouterr().out.splitlines()[-1]
    # Mean 100 s (80, 120), 2 to start, 70 s + 10 s left for the running ones, 2 at once: 140 s.
    assert last == (
        "[ 2m 30s] trials 4/6 · running 2 · stopped early 1 · finished 1 · failed 0 · ETA 2m 20s · "
        "GPU 70% · best epoch so far: val_acc 60.00 ± 1.00% (trial 3, epoch 1)"
    )
    clock.t = 400.0
    for t in (t2, t3):
        t.last_result = {"epoch": 2, "val_acc": 58.0, "time_total_s": 300.0}
        cb.on_trial_complete(0, trials, t)
    cb.on_experiment_end(trials)
    # The last picture, always: 2 trials still to start, at the mean of 80, 120, 300 and 300 s.
    assert capsys.readouterr().out.splitlines()[-1] == (
        "[ 6m 40s] trials 4/6 · running 0 · stopped early 1 · finished 3 · failed 0 · ETA 3m 20s · "
        "GPU 70% · best epoch so far: val_acc 60.00 ± 1.00% (trial 3, epoch 1)"
    )


TERMINAL_SCRIPT = """
from asha_tune.sweep import progress
from asha_tune.sweep.progress import Picture
out = progress.output()
print(type(out).__name__)
out.show(1.0, Picture(1, 3, {"running": 1}), now=10.0)
out.show(2.0, Picture(2, 3, {"running": 2}), now=11.0)
out.say("trial 1 failed: boom")
print("a line the driver printed")
out.show(3.0, Picture(2, 3, {"running": 1, "completed": 1}), now=12.0)
out.end(4.0, Picture(3, 3, {"completed": 3}), now=13.0)
"""


def test_on_a_terminal_the_line_updates_in_place_and_other_output_lands_above_it():
    # A pseudo-terminal: what a user's terminal receives, byte for byte.
    status, text = run_on_terminal([sys.executable, "-c", TERMINAL_SCRIPT], timeout=60)
    assert status == 0, text
    assert "[     1s] trials 1/3 · running 1" in text  # each picture was drawn ...
    assert screen(text) == [  # ... over the one before: the screen keeps the output and the last
        "LiveLine",
        "trial 1 failed: boom",
        "a line the driver printed",
        "[     4s] trials 3/3 · running 0 · stopped early 0 · finished 3 · failed 0",
    ]
    assert progress.output(io.StringIO()).__class__ is Lines  # no terminal: plain lines
