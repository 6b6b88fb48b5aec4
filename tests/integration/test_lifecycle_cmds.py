"""`asha-tune status`, `list` and `stop` on a sweep that really runs: a driver on a real local Ray
with real MLflow and Optuna sqlite stores and real PACS (small), looked at and stopped from
another process, as from another terminal."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.helpers.processes import driver_process, wait_for
from tests.helpers.sweeps import mid_trial, quiet_env, space_file, study_trials

CLI = [sys.executable, "-m", "asha_tune.cli"]


def test_status_list_and_stop_a_running_sweep_from_another_terminal(tmp_path, pacs_root, shared_cache):
    path = space_file(
        tmp_path,
        "life",
        train={"epochs": 40, "batch_size": 16, "weights": "none"},  # long enough to stop
        shaping={"mode": "random", "convs": [1]},
        search={"algorithm": "random", "num_trials": 3, "max_concurrent": 2, "seed": 0},
        scheduler={"kind": "fifo"},
        resources={"cpu": 1},
        parameters={"shaping.p0": {"type": "float", "low": 0.1, "high": 0.8}},
    )
    env = quiet_env(ASHA_TUNE_CACHE_DIR=str(shared_cache), RAY_AUTH_TOKEN_PATH=str(tmp_path / "token"))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            CLI + list(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    log = tmp_path / "launch.log"
    with driver_process(
        CLI
        + [
            "launch",
            "--space",
            str(path),
            "--name",
            "lc",
            "--num-cpus",
            "2",
            "--data-root",
            str(pacs_root),
        ],
        tmp_path,
        env,
        log,
    ) as driver:
        wait_for(lambda: mid_trial(tmp_path, "lc"), 300, "a trial's first epoch", poll=0.1)

        # status, while it runs: found through sweep.json (no --tracking-uri), its driver by pid
        running = cli("status", "lc")
        assert running.returncode == 0, running.stderr
        lines = running.stdout.splitlines()
        assert lines[0] == "sweep lc: running"
        assert lines[1] == f"  driver: alive (pid {driver.pid} on {socket.gethostname()})"
        assert "of 3 trials ended" in running.stdout
        assert "running" in lines[3]
        assert "next: asha-tune status lc · asha-tune stop lc" in running.stdout
        record = json.loads(cli("status", "lc", "--json").stdout)
        assert record["state"] == "running"
        assert record["driver"]["alive"] is True
        trials = record["trials"]
        assert trials["running"] >= 1
        assert trials["finished"] + trials["running"] + trials["to_go"] + trials["interrupted"] == 3

        listed = cli("list", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines()[0].split() == ["sweep", "state", "trials", "best", "started"]
        assert listed.stdout.splitlines()[1].split()[:2] == ["lc", "running"]

        # stop, from here: the driver stops as on Ctrl-C, and stop waits for the records
        stopped = cli("stop", "lc")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == (
            "sweep lc stopped: its records are closed as interrupted; continue it with asha-tune resume lc"
        )
        assert driver.wait(timeout=180) == 130
    text = log.read_text()
    assert "asha-tune stop (from " in text
    assert "stopping the sweep as Ctrl-C does" in text
    assert "the sweep did not finish; continue it with: asha-tune resume lc" in text
    assert "Traceback" not in text

    # records closed as interrupted, resumable; the request is gone from them
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("life").experiment_id])
    assert runs
    assert all(r.info.status != "RUNNING" for r in runs)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.tags["asha_tune.status"] == "interrupted"
    assert "asha_tune.stop_requested" not in parent.data.tags
    assert all(t.state != TrialState.RUNNING for t in study_trials(tmp_path, "lc"))

    after = cli("status", "lc")
    assert after.stdout.splitlines()[0] == "sweep lc: interrupted"
    assert "next: asha-tune resume lc" in after.stdout
    again = cli("stop", "lc")
    assert again.returncode == 1
    assert (
        again.stderr.strip()
        == "asha-tune stop: error: sweep lc is not running (it is interrupted): nothing to stop"
    )
    unknown = cli("status", "nope")
    assert unknown.returncode == 2
    assert "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().startswith("asha-tune status: error: no sweep named nope in ")


def test_stop_a_replicated_search_by_its_name_stops_the_running_replicate(tmp_path, pacs_root, shared_cache):
    """`stop SEARCH` reaches the driver through the search's parent run: the running replicate
    stops as on Ctrl-C, the next one is never launched, and both records say interrupted."""
    path = space_file(
        tmp_path,
        "reps",
        train={"epochs": 40, "batch_size": 16, "weights": "none"},  # long enough to stop
        shaping={"mode": "random", "convs": [1]},
        search={"algorithm": "random", "num_trials": 2, "max_concurrent": 1, "seed": 0, "replicates": 2},
        scheduler={"kind": "fifo"},
        resources={"cpu": 1},
        parameters={"shaping.p0": {"type": "float", "low": 0.1, "high": 0.8}},
    )
    env = quiet_env(ASHA_TUNE_CACHE_DIR=str(shared_cache), RAY_AUTH_TOKEN_PATH=str(tmp_path / "token"))
    log = tmp_path / "launch.log"
    with driver_process(
        [*CLI, "launch", "--space", str(path), "--name", "rs", "--num-cpus", "2"]
        + ["--data-root", str(pacs_root)],
        tmp_path,
        env,
        log,
    ) as driver:
        wait_for(lambda: mid_trial(tmp_path, "rs.r0"), 300, "a trial's first epoch", poll=0.1)
        stopped = subprocess.run(
            [*CLI, "stop", "rs"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == (
            "sweep rs stopped: its records are closed as interrupted; continue it with asha-tune resume rs"
        )
        assert driver.wait(timeout=180) == 130
    assert "Traceback" not in log.read_text()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("reps").experiment_id])
    assert all(r.info.status != "RUNNING" for r in runs)
    by_name = {r.info.run_name: r.data.tags for r in runs if "mlflow.parentRunId" not in r.data.tags}
    search = next(t for name, t in by_name.items() if name == "rs")
    assert search["asha_tune.status"] == "interrupted"
    assert "asha_tune.stop_requested" not in search
    replicate_runs = [r for r in runs if r.data.tags.get("asha_tune.sweep") == "rs.r0"]
    assert replicate_runs, sorted(by_name)
    assert all(t.state != TrialState.RUNNING for t in study_trials(tmp_path, "rs.r0"))
    assert not (tmp_path / "asha-tune-results" / "rs.r1").exists()  # never launched
    status = subprocess.run(
        [*CLI, "status", "rs"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    lines = status.stdout.splitlines()
    assert lines[0] == "replicated search (2 replicates, 1 launched) rs: interrupted", status.stdout
    assert "rs.r0: interrupted" in status.stdout
    assert lines[-1] == "  next: asha-tune resume rs"


# The driver, with one callback put first: at the sweep's first trial checkpoint it writes a
# marker, then holds the driver inside Tune's checkpoint handling (before the cleanup of older
# checkpoints) until the stop's SIGINT has arrived there (Tune's handler, once run, puts back the
# one it replaced), at most 120 s.
MID_CHECKPOINT_DRIVER = """
import signal, sys, time
from pathlib import Path
from ray.tune import Callback
from asha_tune.sweep import tuner

class HoldAtCheckpoint(Callback):
    held = False
    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if self.held:
            return
        self.held = True
        handler = signal.getsignal(signal.SIGINT)
        Path(sys.argv[1]).write_text(str(trial.config["trial_number"]))
        deadline = time.monotonic() + 120
        while signal.getsignal(signal.SIGINT) is handler and time.monotonic() < deadline:
            time.sleep(0.1)
        Path(sys.argv[1] + ".signalled").write_text(str(signal.getsignal(signal.SIGINT) is not handler))

original = tuner._callbacks
tuner._callbacks = lambda *args, **kwargs: [HoldAtCheckpoint(), *original(*args, **kwargs)]
from asha_tune.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_stop_while_the_driver_handles_a_checkpoint_loses_nothing_and_resumes(
    tmp_path, pacs_root, shared_cache
):
    path = space_file(
        tmp_path,
        "held",
        train={"epochs": 6, "batch_size": 16, "weights": "none"},  # checkpoints at epochs 2, 4, 6
        shaping={"mode": "random", "convs": [1]},
        search={"algorithm": "random", "num_trials": 2, "max_concurrent": 1, "seed": 0},
        scheduler={"kind": "fifo"},
        resources={"cpu": 1},
        parameters={"shaping.p0": {"type": "float", "low": 0.1, "high": 0.8}},
    )
    env = quiet_env(ASHA_TUNE_CACHE_DIR=str(shared_cache), RAY_AUTH_TOKEN_PATH=str(tmp_path / "token"))
    script, marker = tmp_path / "driver.py", tmp_path / "at-checkpoint"
    script.write_text(MID_CHECKPOINT_DRIVER)
    log = tmp_path / "launch.log"
    with driver_process(
        [sys.executable, str(script), str(marker), "launch", "--space", str(path), "--name", "held"]
        + ["--num-cpus", "2", "--data-root", str(pacs_root)],
        tmp_path,
        env,
        log,
    ) as driver:
        wait_for(marker.is_file, 300, "the driver at its first checkpoint")
        stopped = subprocess.run(
            [*CLI, "stop", "held"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert stopped.returncode == 0, stopped.stderr
        assert driver.wait(timeout=180) == 130
    assert (tmp_path / "at-checkpoint.signalled").read_text() == "True"  # it came mid-checkpoint
    assert "Traceback" not in log.read_text()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("held").experiment_id
    assert all(r.info.status != "RUNNING" for r in client.search_runs([experiment]))

    done = subprocess.run(
        [*CLI, "resume", "held"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(t.state.name for t in study_trials(tmp_path, "held")) == ["COMPLETE"] * 2
    children = [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.tags["asha_tune.trial_number"] for r in children) == ["0", "1"]
    for run in children:  # every epoch once, the held trial's too
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == [1, 2, 3, 4, 5, 6], (run.data.tags["asha_tune.trial_number"], steps)
    # The held trial went on from its checkpoint in its own Tune trial.
    assert len(list((tmp_path / "asha-tune-results" / "held").glob("train_trial_*trial_number=0,*"))) == 1
