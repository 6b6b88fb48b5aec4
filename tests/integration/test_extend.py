"""`asha-tune extend NAME --trials N` on a sweep that really ran: real local Ray, real PACS
(small), real MLflow and Optuna sqlite stores. The extension's trials join the same study and
the same parent run, are tagged as the extension's, and `status` counts them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from asha_tune.api import extend, launch
from asha_tune.sweep.settings import SWEEP_FILE, SweepSettings
from asha_tune.tracking.tags import EXTENSION_TAG, EXTENSIONS_TAG, STATUS_TAG, TRIAL_NUMBER_TAG
from tests.helpers.processes import driver_process, kill_tagged, wait_for
from tests.helpers.sweeps import mid_trial, mlflow_children, quiet_env, settings_for, space_file, study_trials

CLI = [sys.executable, "-m", "asha_tune.cli"]


def small_space(tmp_path, epochs: int):
    return space_file(
        tmp_path,
        "ext",
        data={"source": "art_painting", "targets": ["cartoon"], "image_size": 32, "limit_per_domain": 20},
        train={"epochs": epochs, "batch_size": 16, "weights": "none", "seed": 0},
        shaping={"mode": "random", "convs": [1]},
        search={"algorithm": "optuna", "num_trials": 2, "max_concurrent": 1, "seed": 0},
        scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 2},
        resources={"cpu": 1},
        parameters={"shaping.p0": {"type": "float", "low": 0.1, "high": 0.8}},
    )


def test_extend_a_finished_sweep_by_two_trials_in_the_same_study_and_parent_run(
    tmp_path, pacs_runtime, capsys
):
    path = small_space(tmp_path, epochs=2)
    first = launch(settings_for(tmp_path, path, "ext", pacs_runtime))
    assert first.finished
    parent = first.settings.run_id
    assert len(mlflow_children(tmp_path, "ext", parent)) == 2
    capsys.readouterr()

    # The space file changes after launch: extend keeps the space saved in sweep.json.
    path.write_text(path.read_text().replace("high: 0.8", "high: 0.2"))

    saved = SweepSettings.load("ext", tmp_path / "results").model_copy(update={"num_cpus": 2})
    outcome = extend(saved, 2)
    assert outcome.finished
    out = capsys.readouterr().out
    assert "extending sweep ext by 2 trials (to 4; trial 2 on)" in out
    assert "ASHA: rungs rebuilt from the results of 2 earlier trials" in out

    # One study of 4 trials, each ended once; the sampler's space was the saved one.
    trials = study_trials(tmp_path, "ext")
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert all(0.1 <= t.params["shaping.p0"] <= 0.8 for t in trials)

    # One parent run, 4 child runs, the 2 new ones tagged as extension 1.
    settings = SweepSettings.load("ext", tmp_path / "results")
    assert settings.run_id == parent
    assert settings.space.num_trials == 4
    assert [(e.trials, e.first_trial) for e in settings.extensions] == [(2, 2)]
    children = mlflow_children(tmp_path, "ext", parent)
    by_number = {int(r.data.tags[TRIAL_NUMBER_TAG]): r for r in children}
    assert sorted(by_number) == [0, 1, 2, 3]
    assert {n: r.data.tags.get(EXTENSION_TAG) for n, r in by_number.items()} == {
        0: None,
        1: None,
        2: "1",
        3: "1",
    }
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(parent)
    assert run.data.tags[STATUS_TAG] == "completed"
    assert run.data.tags[EXTENSIONS_TAG] == "1"
    assert run.data.tags["asha_tune.trials"] == "4"
    assert [p.name for p in (tmp_path / "results" / "ext" / "tune-before-extension-1").iterdir()]
    assert (tmp_path / "results" / "ext" / SWEEP_FILE).is_file()

    # status, from another process: 4 trials, all ended.
    status = subprocess.run(
        [*CLI, "status", "ext", "--json", "--results-dir", str(tmp_path / "results")],
        cwd=tmp_path,
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    record = json.loads(status.stdout)
    assert record["state"] == "finished"
    assert record["trials"]["total"] == 4
    assert record["trials"]["to_go"] == 0


def test_an_extension_whose_driver_was_killed_is_continued_by_resume_each_trial_once(
    tmp_path, pacs_runtime, shared_cache, process_tag
):
    first = launch(settings_for(tmp_path, small_space(tmp_path, epochs=3), "ext", pacs_runtime))
    assert first.finished
    results = str(tmp_path / "results")
    env = quiet_env(ASHA_TUNE_CACHE_DIR=str(shared_cache), RAY_AUTH_TOKEN_PATH=str(tmp_path / "token"))
    cli = [*CLI, "--results-dir", results, "--num-cpus", "2"]
    log = tmp_path / "extend.log"
    with open(log, "w") as out:
        driver = subprocess.Popen(
            [*CLI, "extend", "ext", "--trials", "2", "--results-dir", results, "--num-cpus", "2"],
            cwd=tmp_path,
            env={**env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:  # killed once the extension's first trial has been asked
        wait_for(lambda: len(study_trials(tmp_path, "ext")) >= 3, 300, "an extension trial")
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    kill_tagged(process_tag)  # Ray's orphans, as a reboot would
    assert "extending sweep ext by 2 trials" in log.read_text()

    done = subprocess.run(
        [*cli[:3], "resume", "ext", *cli[3:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = study_trials(tmp_path, "ext")
    assert [t.number for t in trials] == [0, 1, 2, 3]  # each trial once, none past the grown count
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    children = mlflow_children(tmp_path, "ext", first.settings.run_id)
    numbers = sorted(int(r.data.tags[TRIAL_NUMBER_TAG]) for r in children)
    assert numbers == [0, 1, 2, 3]
    assert {r.data.tags[TRIAL_NUMBER_TAG]: r.data.tags.get(EXTENSION_TAG) for r in children} == {
        "0": None,
        "1": None,
        "2": "1",
        "3": "1",
    }
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(first.settings.run_id)
    assert run.data.tags[STATUS_TAG] == "completed"


def test_extending_a_replicated_search_extends_every_replicate(tmp_path, pacs_runtime):
    path = small_space(tmp_path, epochs=1)
    tree = path.read_text().replace("num_trials: 2", "num_trials: 2\n  replicates: 2")
    path.write_text(tree)
    first = launch(settings_for(tmp_path, path, "rep", pacs_runtime))
    assert first.finished
    saved = SweepSettings.load("rep", tmp_path / "results").model_copy(update={"num_cpus": 2})
    outcome = extend(saved, 1)
    assert outcome.finished
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for r in (0, 1):
        name = f"rep.r{r}"
        assert [t.number for t in study_trials(tmp_path, name)] == [0, 1, 2]
        replicate = SweepSettings.load(name, tmp_path / "results")
        assert replicate.space.num_trials == 3
        children = mlflow_children(tmp_path, "ext", replicate.run_id)
        tags = {r.data.tags[TRIAL_NUMBER_TAG]: r.data.tags.get(EXTENSION_TAG) for r in children}
        assert tags == {"0": None, "1": None, "2": "1"}
        assert client.get_run(replicate.run_id).data.tags[STATUS_TAG] == "completed"
    search = client.get_run(saved.run_id).data.tags
    assert search[EXTENSIONS_TAG] == "1"
    assert search[STATUS_TAG] == "completed"


def test_extending_an_interrupted_sweep_finishes_its_own_trials_once_then_the_new_ones(
    tmp_path, pacs_root, shared_cache, capsys
):
    """Interrupted in its first trial (of 2, one at a time): extend by 1 resumes the sweep first
    (that trial goes on in its own Tune trial), runs the second as the sweep's own, and only
    then its own trial 2; each epoch once."""
    path = small_space(tmp_path, epochs=16)  # trial 0 runs on for seconds after its first epoch
    env = quiet_env(ASHA_TUNE_CACHE_DIR=str(shared_cache), RAY_AUTH_TOKEN_PATH=str(tmp_path / "token"))
    log = tmp_path / "launch.log"
    launch_cmd = [*CLI, "launch", "--space", str(path), "--name", "int", "--num-cpus", "2"]
    with driver_process(
        [*launch_cmd, "--results-dir", str(tmp_path / "results"), "--data-root", str(pacs_root)],
        tmp_path,
        env,
        log,
    ) as driver:
        wait_for(lambda: mid_trial(tmp_path, "int", 0), 300, "trial 0's first epoch", poll=0.1)
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=180) == 130
    assert [t.state for t in study_trials(tmp_path, "int")] == [TrialState.WAITING]  # parked

    saved = SweepSettings.load("int", tmp_path / "results").model_copy(update={"num_cpus": 2})
    capsys.readouterr()
    assert extend(saved, 1).finished
    out = capsys.readouterr().out
    assert "int is unfinished: resuming it first, then extending it by 1 trial" in out
    assert "extending sweep int by 1 trial (to 3; trial 2 on)" in out
    # Trial 0 went on in its own Tune trial (from its checkpoint, if it had one), not in a new one.
    assert len(list((tmp_path / "results" / "int").glob("train_trial_*trial_number=0,*"))) == 1
    trials = study_trials(tmp_path, "int")
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    children = mlflow_children(tmp_path, "ext", saved.run_id)
    assert {r.data.tags[TRIAL_NUMBER_TAG]: r.data.tags.get(EXTENSION_TAG) for r in children} == {
        "0": None,
        "1": None,
        "2": "1",
    }
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run in children:  # the interrupted trial's epochs too: each logged once
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == sorted(set(steps)), (run.data.tags[TRIAL_NUMBER_TAG], steps)
        assert steps == list(range(1, len(steps) + 1))
