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
        assert there.logged_steps(run_id, "val_acc") == {1}
        there.write(run_id, end="completed")
        with pytest.raises(AttributeError, match="not written from the records process"):
            there.end(run_id, "completed")  # only what the writer calls is exposed
        assert process._manager._process.pid != os.getpid()  # type: ignore[union-attr]
    finally:
        process.close()
    assert process.cpu_s > 0  # the child's own CPU, read before it stopped
    assert here.params(run_id) == {"p0": "0.5"}
    assert here.metric_history(run_id, "val_acc") == {1: 0.5}
    assert here.tags(run_id)["k"] == "v"


def test_an_error_in_the_records_process_is_raised_in_the_driver_as_itself(tmp_path):
    process = RecordsProcess()
    try:
        handle = process.make(
            StudyHandle, f"sqlite:///{tmp_path / 'optuna.db'}", "none", load_space("quickstart")
        )
        with pytest.raises(AshaTuneError, match="no study named none"):
            handle.write(0, values={1: 0.5})
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
            there.write("run", end="completed")
    finally:
        process.close()


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
