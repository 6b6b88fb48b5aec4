"""`asha-tune confirm` on a tiny real-PACS sweep: local Ray, MLflow and Optuna sqlite stores."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from asha_tune.api import launch
from asha_tune.cli import main
from asha_tune.spaces import load_space
from asha_tune.sweep import SweepSettings
from asha_tune.tracking import Tracker
from asha_tune.tracking.best import best_trial, ranked_trials
from asha_tune.tracking.records import sweep_trials
from asha_tune.trial.config import Runtime
from tests.helpers.processes import kill_tagged, wait_for
from tests.helpers.sweeps import quiet_env, space_file

TINY_PACS = {
    "data": {"source": "art_painting", "targets": ["cartoon"], "image_size": 32, "limit_per_domain": 35},
    "train": {"epochs": 2, "batch_size": 16, "weights": "none", "seed": 0},
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, pacs_root, shared_cache) -> SweepSettings:
    """A finished 3-trial sweep (FIFO: every trial runs the full budget), selecting on source_val."""
    tmp = tmp_path_factory.mktemp("confirm")
    path = space_file(
        tmp,
        "conf",
        TINY_PACS,
        shaping={"mode": "random", "convs": [1]},
        search={"algorithm": "random", "num_trials": 3, "max_concurrent": 2, "seed": 0},
        scheduler={"kind": "fifo"},
        resources={"cpu": 1},
        parameters={"shaping.p0": {"type": "float", "low": 0.1, "high": 0.9}},
    )
    settings = SweepSettings(
        name="cs",
        space=load_space(path),
        results_dir=tmp / "results",
        tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        study_url=f"sqlite:///{tmp / 'optuna.db'}",
        runtime=Runtime(data_root=pacs_root, cache_dir=shared_cache, device="cpu"),
        num_cpus=2,
    )
    assert launch(settings).finished
    return settings


def children(settings: SweepSettings, parent: str) -> list:
    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.space.name).experiment_id
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)


def confirmation_parent(settings: SweepSettings, name: str):
    runs = [
        r for r in children(settings, settings.parent_run_id) if r.data.tags.get("asha_tune.sweep") == name
    ]
    assert len(runs) == 1, f"{len(runs)} parent runs named {name}"
    return runs[0]


def cli(settings: SweepSettings, *args: str) -> list[str]:
    return ["confirm", settings.name, *args, "--results-dir", str(settings.results_dir)]


def test_confirm_reruns_the_top_configurations_with_new_seeds_nested_under_the_sweep(sweep, capsys):
    tracker = Tracker(sweep.tracking_uri)
    experiment = tracker.experiment("conf")
    trials = sweep_trials(tracker, experiment, sweep.parent_run_id)
    top = ranked_trials(trials, "val_acc", "max")[:2]
    used = {
        json.loads(MlflowClient(sweep.tracking_uri).get_run(t.run_id).data.params["train.seed"])
        for t in trials
    }
    capsys.readouterr()

    assert main(cli(sweep, "--top", "2", "--seeds", "2")) == 0
    out = capsys.readouterr().out

    parent = confirmation_parent(sweep, "cs.confirm-top2-seeds2")
    tags = parent.data.tags
    assert tags["asha_tune.kind"] == "confirmation"
    assert tags["asha_tune.confirms"] == "cs"
    assert tags["mlflow.parentRunId"] == sweep.parent_run_id
    assert tags["asha_tune.status"] == "completed"
    runs = children(sweep, parent.info.run_id)
    assert len(runs) == 4  # S x K
    by_trial: dict[str, list] = {}
    for run in runs:
        by_trial.setdefault(run.data.tags["asha_tune.confirms_trial"], []).append(run)
        assert run.data.tags["asha_tune.status"] == "completed"
        for metric in (
            "val_acc",
            "val_acc_se",
            "acc_cartoon",
            "acc_cartoon_se",
            "target_acc",
            "target_acc_se",
        ):
            assert metric in run.data.metrics
    assert sorted(by_trial) == sorted(str(t.number) for t in top)
    seeds = {int(run.data.params["train.seed"]) for run in runs}
    assert seeds == {max(used) + 1, max(used) + 2}  # new, and the same two for each configuration
    for t in top:
        confirming = by_trial[str(t.number)]
        assert {r.data.tags["asha_tune.confirms_run"] for r in confirming} == {t.run_id}
        assert {int(r.data.params["train.seed"]) for r in confirming} == seeds
        original = MlflowClient(sweep.tracking_uri).get_run(t.run_id).data.params
        for r in confirming:  # the configuration itself is the confirmed trial's
            assert r.data.params["shaping.p0"] == original["shaping.p0"]

    # The report: mean and sd equal those of the child runs' metrics, beside the single run.
    local = MlflowClient(sweep.tracking_uri).download_artifacts(parent.info.run_id, "confirmation.json")
    report = json.loads(Path(local).read_text())
    assert [row["trial"] for row in report["configurations"]] == [t.number for t in top]
    for row, t in zip(report["configurations"], top, strict=True):
        for metric in ("val_acc", "acc_cartoon", "target_acc"):
            values = [r.data.metrics[metric] for r in by_trial[str(t.number)]]
            stats = row["metrics"][metric]
            assert stats["n"] == 2
            assert stats["mean"] == pytest.approx(statistics.fmean(values))
            assert stats["sd"] == pytest.approx(statistics.stdev(values))
            half = 12.706204736174698 * stats["sd"] / 2**0.5  # t(0.975, 1)
            # An accuracy's interval is clipped to [0, 100]: with two seeds it can reach past them.
            expected = [max(stats["mean"] - half, 0.0), min(stats["mean"] + half, 100.0)]
            assert stats["ci95"] == pytest.approx(expected)
            assert stats["sweep"] == t.metrics[metric]
    means = [row["metrics"]["val_acc"]["mean"] for row in report["configurations"]]
    assert report["ranking_holds"] == (means[0] >= means[1])
    assert (
        "ranking holds"
        if report["ranking_holds"]
        else f"trial {top[1].number} now above trial {top[0].number}"
    ) in out
    assert f"#1 trial {top[0].number}" in out
    assert "val_acc" in out

    # The sweep's parent run summarises its best with its noise: sweeps compare as MLflow rows.
    summary = MlflowClient(sweep.tracking_uri).get_run(sweep.parent_run_id).data
    best = top[0]
    for metric in ("val_acc", "val_acc_se", "acc_cartoon", "acc_cartoon_se", "target_acc", "target_acc_se"):
        assert summary.metrics[f"best_{metric}"] == best.metrics[metric]
    assert summary.tags["asha_tune.best_trial"] == str(best.number)
    assert summary.tags["asha_tune.best_run_id"] == best.run_id
    assert summary.tags["asha_tune.selection"] == "source_val"
    separable = (
        abs(top[0].metrics["val_acc"] - top[1].metrics["val_acc"])
        > 2 * (top[0].metrics["val_acc_se"] ** 2 + top[1].metrics["val_acc_se"] ** 2) ** 0.5
    )
    assert summary.tags["asha_tune.top_separable"].startswith("yes" if separable else "no: runner-up")
    assert summary.tags["asha_tune.near_chance"].startswith(("yes: ", "no"))

    # The sweep's own records are unchanged: the nested confirmation is not a trial of it.
    after = sweep_trials(tracker, experiment, sweep.parent_run_id)
    assert [t.run_id for t in after] == [t.run_id for t in trials]
    assert best_trial(after, "val_acc", "max").run_id == top[0].run_id

    # The same command again reports, and runs nothing more.
    assert main(cli(sweep, "--top", "2", "--seeds", "2")) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert len(children(sweep, parent.info.run_id)) == 4


@pytest.mark.parametrize(
    "args, line",
    [
        (["--top", "0", "--seeds", "2"], "--top 0: confirm at least 1 configuration"),
        (["--top", "1", "--seeds", "0"], "--seeds 0: run at least 1 new seed per configuration"),
        (
            ["--top", "4", "--seeds", "1"],
            "--top 4: sweep cs has only 3 finished full-budget trials to confirm",
        ),
    ],
)
def test_impossible_confirmations_are_refused_with_one_line(sweep, capsys, args, line):
    assert main(cli(sweep, *args)) == 2
    assert capsys.readouterr().err == f"asha-tune confirm: error: {line}\n"


def test_an_unknown_or_unfinished_sweep_is_refused(sweep, capsys):
    assert (
        main(["confirm", "nosuch", "--top", "1", "--seeds", "1", "--results-dir", str(sweep.results_dir)])
        == 2
    )
    assert capsys.readouterr().err.startswith("asha-tune confirm: error: no sweep nosuch in ")
    # A sweep recorded as running (its driver gone): real records, nothing started.
    tracker = Tracker(sweep.tracking_uri)
    running = sweep.model_copy(
        update={
            "name": "unfinished",
            "parent_run_id": tracker.start_run(tracker.experiment("conf"), "unfinished"),
        }
    )
    running.save()
    assert (
        main(["confirm", "unfinished", "--top", "1", "--seeds", "1", "--results-dir", str(sweep.results_dir)])
        == 2
    )
    assert capsys.readouterr().err == (
        "asha-tune confirm: error: sweep unfinished has not finished (it is running): only a finished "
        "sweep's best can be confirmed; continue it with asha-tune resume unfinished\n"
    )


@pytest.mark.slow  # about 2 minutes on 2 shared cores: two drivers, two Ray starts
def test_a_killed_confirmation_continues_without_duplicates(sweep, process_tag):
    env = quiet_env(ASHA_TUNE_TEST_PROCESS_TAG=process_tag)
    command = [sys.executable, "-m", "asha_tune.cli", *cli(sweep, "--top", "1", "--seeds", "3")]
    log = sweep.results_dir.parent / "confirm.log"
    client = MlflowClient(sweep.tracking_uri)
    experiment = client.get_experiment_by_name("conf").experiment_id

    def a_recorded_metric() -> bool:
        runs = client.search_runs([experiment], "tags.`asha_tune.confirms_trial` != ''", max_results=1000)
        mine = [r for r in runs if r.data.tags["mlflow.parentRunId"] not in confirmations_before]
        return any("val_acc" in r.data.metrics for r in mine)

    confirmations_before = {r.info.run_id for r in children(sweep, sweep.parent_run_id)}
    with open(log, "w") as out:
        driver = subprocess.Popen(
            command,
            cwd=sweep.results_dir.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(a_recorded_metric, 300, "a confirmation run's first metric")
    finally:
        os.kill(driver.pid, signal.SIGKILL)  # the driver only; Ray's processes are orphaned
        driver.wait()
    kill_tagged(process_tag)  # then the orphans, as a reboot would
    parent = confirmation_parent(sweep, "cs.confirm-top1-seeds3")
    assert parent.data.tags["asha_tune.status"] == "running"  # a SIGKILL closes nothing

    done = subprocess.run(
        command, cwd=sweep.results_dir.parent, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, log.read_text()[-2000:] + done.stdout[-3000:] + done.stderr[-3000:]
    assert "continuing it" in done.stdout

    parent = confirmation_parent(sweep, "cs.confirm-top1-seeds3")  # still exactly one
    assert parent.data.tags["asha_tune.status"] == "completed"
    runs = children(sweep, parent.info.run_id)
    assert len(runs) == 3  # S x K, none twice
    assert len({r.data.params["train.seed"] for r in runs}) == 3
    for run in runs:
        assert run.data.tags["asha_tune.status"] == "completed"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert sorted(steps) == [1, 2]  # every epoch once, even the one cut short by the kill
    assert "ranking holds: by confirmed mean val_acc, the top 1 keep the sweep's order" in done.stdout
