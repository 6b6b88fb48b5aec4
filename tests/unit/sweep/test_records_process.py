"""A sweep's records written from a process of their own (sweep/records_process.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from asha_tune.errors import AshaTuneError
from asha_tune.spaces import load_space
from asha_tune.sweep.records_process import RecordsProcess, RecordsProcessLostError
from asha_tune.sweep.study import StudyHandle
from asha_tune.sweep.writer import RecordWriter, in_process, writer_for
from asha_tune.tracking import Tracker


def test_a_trackers_writes_run_in_the_records_process_and_land_in_the_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    here = Tracker(uri)
    experiment = here.experiment("records")
    process = RecordsProcess()
    try:
        # Started from a thread that then ends, as the records writer's thread does.
        made: list[object] = []
        thread = threading.Thread(target=lambda: made.append(process.make(Tracker, uri)))
        thread.start()
        thread.join()
        time.sleep(0.5)
        there = process.make(Tracker, uri)
        run_id = there.start_run(experiment, name="trial-000", tags={"k": "v"})
        there.write(run_id, params={"p0": "0.5"}, tags={}, metrics=[("val_acc", 0.5, 1, 0)])
        assert here.params(run_id) == {}  # a write waits in the driver for the next message,
        assert there.logged_steps(run_id, "val_acc") == {1}  # which carries it first
        there.write(run_id, tags={"k": "w"})
        there.write(run_id, end="completed")
        assert here.tags(run_id)["k"] == "v"
        process.sync()  # both, in their order
        assert here.tags(run_id)["k"] == "w"
        assert here.client.get_run(run_id).info.status == "FINISHED"
        with pytest.raises(AttributeError, match="not written from the records process"):
            there.end(run_id, "completed")  # only what the writer calls is exposed
        assert process._manager._process.pid != os.getpid()  # type: ignore[union-attr]
    finally:
        process.close()
    assert process.cpu_s > 0  # the child's own CPU, read before it stopped
    assert here.params(run_id) == {"p0": "0.5"}
    assert here.metric_history(run_id, "val_acc") == {1: 0.5}


def test_an_error_in_the_records_process_is_raised_in_the_driver_as_itself(tmp_path):
    process = RecordsProcess()
    try:
        handle = process.make(
            StudyHandle, f"sqlite:///{tmp_path / 'optuna.db'}", "none", load_space("quickstart")
        )
        handle.write(0, values={1: 0.5})  # it returns nothing: it waits for the next message
        with pytest.raises(AshaTuneError, match="no study named none"):
            process.sync()
    finally:
        process.close()


def test_a_records_process_that_died_is_one_line_that_says_to_resume(tmp_path):
    process = RecordsProcess()
    try:
        there = process.make(Tracker, f"sqlite:///{tmp_path / 'mlflow.db'}")
        child = process._manager._process  # type: ignore[union-attr]
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        with pytest.raises(
            RecordsProcessLostError, match=r"ended before the sweep \(exit status -9\).*resume"
        ):
            there.logged_steps("run", "val_acc")
    finally:
        process.close()


def test_the_writer_sends_trials_due_together_as_one_batch_and_acts_after_they_landed(tmp_path):
    """Twenty trials due at once are written in a handful of messages, not one or more per trial
    (each a round trip that, on a busy machine, waits for the scheduler); each trial's tags land
    in its order, and an action queued behind a trial sees that trial's records in the store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    here = Tracker(uri)
    experiment = here.experiment("batched")
    runs = [here.start_run(experiment, name=f"trial-{n:03d}") for n in range(20)]
    writer = RecordWriter("batched", process=True)
    seen: dict[int, str] = {}
    try:
        process = writer._process
        messages = []
        send = process._call
        process._call = lambda call: (messages.append(1), send(call))[1]
        there = writer.made(here, Tracker, uri)
        messages.clear()  # the make, once
        writer.touch("hold", "x", lambda: time.sleep(1))  # the next twenty queue up behind it
        for n, run_id in enumerate(runs):
            writer.touch(n, "mlflow", lambda r=run_id: there.write(r, tags={"k": "a"}))
            writer.touch(n, "again", lambda r=run_id, n=n: there.write(r, tags={"k": f"b{n}"}))
        writer.after(7, lambda: seen.setdefault(7, here.tags(runs[7])["k"]))
        writer.flush()
        assert len(messages) <= 3, len(messages)
        assert [here.tags(r)["k"] for r in runs] == [f"b{n}" for n in range(20)]
        assert seen == {7: "b7"}
    finally:
        writer.close()


def test_a_sweep_takes_a_records_process_from_its_size_or_as_the_environment_says(monkeypatch):
    monkeypatch.delenv("ASHA_TUNE_RECORDS_PROCESS", raising=False)
    assert not in_process(49)
    assert in_process(50)
    monkeypatch.setenv("ASHA_TUNE_RECORDS_PROCESS", "0")
    assert not in_process(10_000)
    monkeypatch.setenv("ASHA_TUNE_RECORDS_PROCESS", "1")
    assert in_process(1)
    writer = writer_for("sized", 1)
    assert writer._process is not None
    writer.close()
    assert RecordWriter("plain").made("local", Tracker, "unused") == "local"  # no process: its own


CHILD = textwrap.dedent(
    """
    import sys, time
    from asha_tune.sweep.records_process import RecordsProcess, RecordsProcessLostError
    from asha_tune.tracking import Tracker
    process = RecordsProcess()
    process.make(Tracker, sys.argv[1])
    print(process._manager._process.pid, flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited
        return f.read().split(")")[-1].split()[0] != "Z"


def test_the_records_process_ignores_ctrl_c_and_dies_with_a_sigkilled_driver(tmp_path):
    driver = subprocess.Popen(
        [sys.executable, "-c", CHILD, f"sqlite:///{tmp_path / 'mlflow.db'}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert driver.stdout is not None
        child = int(driver.stdout.readline())
        os.kill(child, signal.SIGINT)  # the terminal's Ctrl-C reaches the whole process group
        os.kill(child, signal.SIGTERM)  # so does a job scheduler's SIGTERM: the driver answers both
        time.sleep(1)
        assert _alive(child)
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        driver.kill()
