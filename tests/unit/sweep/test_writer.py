"""The sweep's record writer: one background thread, writes batched by trial, flushed on demand."""

from __future__ import annotations

import threading
import time

import pytest

from asha_tune.sweep.writer import RecordWriter, close_writer, writer_for


def test_a_running_trials_reports_wait_and_go_in_one_write():
    writer = RecordWriter("t")
    buffer: list[int] = []
    written: list[list[int]] = []

    def write() -> None:
        written.append(list(buffer))
        buffer.clear()

    for epoch in (1, 2, 3):
        buffer.append(epoch)
        writer.touch(0, "mlflow", write, wait_s=60)
    time.sleep(0.2)
    assert written == []  # within its wait: not written yet
    writer.flush()
    assert written == [[1, 2, 3]]  # one write for three reports
    writer.close()


def test_trials_are_written_in_the_order_first_touched_and_an_end_at_once():
    writer = RecordWriter("t")
    order: list[tuple[int, str]] = []
    writer.touch(1, "mlflow", lambda: order.append((1, "mlflow")), wait_s=60)
    writer.touch(2, "mlflow", lambda: order.append((2, "mlflow")), wait_s=60)
    writer.touch(1, "optuna", lambda: order.append((1, "optuna")), wait_s=60)
    writer.touch(2, "optuna", lambda: order.append((2, "optuna")), wait_s=0)  # trial 2 ended
    deadline = time.monotonic() + 5
    while len(order) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert order == [(2, "mlflow"), (2, "optuna")]  # due now; trial 1 still waits
    writer.flush()
    assert order[2:] == [(1, "mlflow"), (1, "optuna")]
    writer.close()


def test_an_action_after_a_trials_records_runs_once_they_are_written():
    writer = RecordWriter("t")
    events: list[str] = []
    writer.touch(7, "mlflow", lambda: events.append("records of 7"), wait_s=60)
    writer.touch(8, "mlflow", lambda: events.append("records of 8"), wait_s=60)
    writer.after(7, lambda: events.append("checkpoints of 7 emptied"))
    deadline = time.monotonic() + 5
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert events == ["records of 7", "checkpoints of 7 emptied"]  # trial 8 need not be written
    writer.after(9, lambda: events.append("nothing of 9 pending: at once"))
    writer.flush()
    assert events[2:] == ["nothing of 9 pending: at once", "records of 8"] or events[2:] == [
        "records of 8",
        "nothing of 9 pending: at once",
    ]
    writer.close()


def test_a_failed_write_is_raised_on_the_callers_thread_once_and_stops_the_writer():
    writer = RecordWriter("t")

    def fail() -> None:
        raise RuntimeError("the tracking server is gone")

    later: list[int] = []
    writer.touch(0, "mlflow", fail)
    with pytest.raises(RuntimeError, match="gone"):
        writer.flush()
    writer.flush()  # raised once: the sweep is stopping already
    writer.touch(1, "mlflow", lambda: later.append(1))
    time.sleep(0.2)
    assert later == []  # nothing is written past a failure: resume writes it again


def test_a_full_queue_holds_the_caller_until_the_writer_catches_up():
    writer = RecordWriter("t", max_pending=1)
    release = threading.Event()
    writer.touch(0, "mlflow", lambda: release.wait(5), wait_s=0)
    time.sleep(0.1)  # trial 0 is being written, and blocks
    writer.touch(1, "mlflow", lambda: None, wait_s=60)  # one pending: the queue is full
    held = threading.Event()

    def third() -> None:
        writer.touch(2, "mlflow", lambda: None)
        held.set()

    caller = threading.Thread(target=third)
    caller.start()
    time.sleep(0.3)
    assert not held.is_set()  # backpressure
    release.set()
    writer.flush()  # writes trial 1, which frees a place
    caller.join(5)
    assert held.is_set()
    writer.close()


def test_a_sweeps_writer_is_shared_and_closing_it_writes_what_it_holds():
    written: list[int] = []
    writer = writer_for("sweep-x")
    assert writer_for("sweep-x") is writer
    writer.touch(3, "optuna", lambda: written.append(3), wait_s=60)
    close_writer("sweep-x")
    assert written == [3]
    assert writer_for("sweep-x") is not writer  # a new one for a sweep run again
    close_writer("sweep-x")


def test_a_held_write_follows_the_trials_end_never_precedes_it():
    writer = RecordWriter("t")
    order: list[str] = []
    writer.touch(5, "optuna", lambda: order.append("values"), wait_s=0)
    writer.touch(5, "tell", lambda: order.append("told"), wait_s=0, hold=True)
    time.sleep(0.3)
    assert order == ["values"]  # Optuna's end waits for MLflow's
    writer.touch(5, "mlflow", lambda: order.append("run ended"), wait_s=0, end=True)
    writer.flush()
    assert order == ["values", "run ended", "told"]
    writer.touch(6, "tell", lambda: order.append("6 told"), wait_s=0, hold=True)
    writer.flush()  # a flush writes everything, held or not
    assert order[-1] == "6 told"
    writer.close()
