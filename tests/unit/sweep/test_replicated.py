"""Replicated searches without Ray: the seed scheme, each replicate's seeds and settings, what a replicated space
refuses, and `resume`, `--restart` and `confirm` of a replicated search on hand-made records
(real sqlite MLflow store; the launches that start Ray are in tests/integration)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from asha_tune.api import confirm, resume
from asha_tune.cli import main
from asha_tune.errors import ConfigError
from asha_tune.spaces import load_space
from asha_tune.sweep.records import archive
from asha_tune.sweep.replicated import (
    replicate_seed,
    replicate_seeds,
    replicate_settings,
    replicate_space,
    seeds_of,
    seeds_text,
)
from asha_tune.sweep.settings import SweepSettings
from asha_tune.tracking.tags import (
    KIND_TAG,
    REPLICATE_OF_TAG,
    REPLICATE_SEEDS_TAG,
    REPLICATE_TAG,
    STATUS_TAG,
    SWEEP_TAG,
)
from asha_tune.trial.config import Runtime
from tests.helpers import records
from tests.helpers.records import Trial

# --- seeds ---------------------------------------------------------------------------------------


def test_replicate_zero_is_the_sweep_as_it_always_ran():
    assert replicate_seeds(0, sampler=7, trial=3, split=11) == replicate_seeds(0, 7, 3, 11)
    seeds = replicate_seeds(0, sampler=7, trial=3, split=11)
    assert (seeds.sampler, seeds.trial, seeds.split) == (7, 3, 11)


def test_replicate_seeds_are_a_hash_of_base_replicate_and_purpose():
    # The documented rule, written out: sha256("asha-tune replicate\0<base>\0<r>\0<purpose>") mod 2^31.
    expected = int(hashlib.sha256(b"asha-tune replicate\x000\x002\x00split").hexdigest(), 16) % 2**31
    assert replicate_seed(0, 2, "split") == expected
    ones = [replicate_seeds(r, 0, 0, 0) for r in range(1, 6)]
    every = {s for r in ones for s in (r.sampler, r.trial, r.split)}
    # purposes and replicates differ
    assert len(every) == 15
    assert all(0 <= s < 2**31 for s in every)
    # Adding replicates never changes the earlier ones: five are the first three, and two more.
    assert [replicate_seeds(r, 0, 0, 0) for r in range(3)] == [replicate_seeds(r, 0, 0, 0) for r in range(5)][
        :3
    ]
    assert replicate_seed(1, 1, "trial") != replicate_seed(0, 1, "trial")  # the base seed matters


def test_replicate_seeds_do_not_depend_on_the_process():
    code = "from asha_tune.sweep.replicated import replicate_seed as s; print(s(5, 3, 'sampler'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "4242"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == replicate_seed(5, 3, "sampler")


def test_bad_seed_requests_name_the_problem():
    with pytest.raises(ValueError, match="unknown seed purpose 'data': choose one of sampler, trial, split"):
        replicate_seed(0, 1, "data")
    with pytest.raises(ValueError, match="numbered from 0"):
        replicate_seed(0, -1, "trial")


def space(replicates: int, *more: str, name: str = "quickstart"):
    return load_space(name, [f"search.replicates={replicates}", *more])


def test_each_replicate_has_its_own_seeds_and_adding_one_changes_no_other():
    three, five = space(3), space(5)
    assert three.search.seed == three.train.seed == three.selection.split_seed == 0
    first = replicate_space(three, 0)
    assert (first.search.seed, first.train.seed, first.selection.split_seed) == (0, 0, 0)  # the space's own
    second = replicate_space(three, 1)
    assert (
        second.search.seed
        == replicate_seed(0, 1, "sampler")
        != second.train.seed
        == replicate_seed(0, 1, "trial")
    )
    assert second.selection.split_seed == replicate_seed(0, 1, "split")  # quickstart: source_val holds out
    assert second.search.replicates == 1  # a replicate is a sweep of its own
    for r in range(3):
        assert replicate_space(three, r) == replicate_space(five, r)
    oracle = space(2, "selection.protocol=oracle", "scheduler.metric=target_acc")
    assert replicate_space(oracle, 1).selection.split_seed == 0  # nothing held out: no split to reseed
    assert seeds_text(three, seeds_of(three, 0)) == "sampler 0, trial 0, split 0"


def test_a_list_space_replicates_over_trial_seeds():
    grid = space(2, "search.only=[baseline]", name="paper_grid")
    r1 = replicate_space(grid, 1)
    assert r1.train.seed == replicate_seed(0, 1, "trial")
    assert r1.trial_config({"configuration": "baseline"}).train.seed == r1.train.seed
    assert seeds_text(grid, seeds_of(grid, 1)) == f"trial {r1.train.seed}"  # oracle, enqueued: no others


def test_a_replicates_settings_nest_it_under_its_search(tmp_path):
    search = SweepSettings(
        name="q",
        space=space(2),
        results_dir=tmp_path,
        tracking_uri="sqlite:///x.db",
        study_url="sqlite:///y.db",
        runtime=Runtime(),
        parent_run_id="top",
        warm_start="grid",
    )
    r1 = replicate_settings(search, 1)
    assert (r1.name, r1.nested_under, r1.replicate, r1.replicate_of, r1.parent_run_id) == (
        "q.r1",
        "top",
        1,
        "q",
        None,
    )
    assert r1.warm_start == "grid"
    assert r1.space == replicate_space(search.space, 1)
    assert r1.run_tags[KIND_TAG] == "replicate"
    assert r1.run_tags[REPLICATE_TAG] == "1"
    assert r1.run_tags[REPLICATE_SEEDS_TAG].startswith(f"sampler {replicate_seed(0, 1, 'sampler')}, trial ")
    assert not r1.is_confirmation
    assert r1.resume_name == "q"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["quickstart", "--replicates", "0"],
            "search.replicates: Input should be greater than or equal to 1",
        ),
        # the baseline space searches train.seed: its replicates would rerun the same seeds
        (["baseline", "--replicates", "2"], "search.replicates: this space sets train.seed"),
    ],
)
def test_a_replicated_space_that_cannot_be_is_one_line(args, line, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--space", *args, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert line in err[0], err


def test_replicates_flag_sets_the_space_field(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--space", "quickstart", "--replicates", "3", "--dry-run"]) == 0
    described = yaml.safe_load(capsys.readouterr().out.split("parameters:")[0])
    assert described["search"]["replicates"] == 3


# --- on records ----------------------------------------------------------------------------------


@pytest.fixture
def finished(tmp_path):
    """A finished replicated search q of two replicates, as launch leaves it: saved settings and
    MLflow parent runs (the replicates' nested under q's), trials that report acc_cartoon."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("quickstart", artifact_location=(tmp_path / "art").as_uri())
    base = space(2)
    per = [
        [
            Trial({"shaping.p0": 0.1}, epochs=[{"val_acc": 60.0, "acc_cartoon": 30.0}]),
            Trial({"shaping.p0": 0.2}, epochs=[{"val_acc": 70.0, "acc_cartoon": 28.0}]),
        ],
        [Trial({"shaping.p0": 0.3}, epochs=[{"val_acc": 65.0, "acc_cartoon": 32.0}])],
    ]
    top, reps = records.replicated(
        client, experiment, "q", base.model_dump(mode="json"), per, protocol="source_val"
    )
    settings = SweepSettings(
        name="q",
        space=base,
        results_dir=tmp_path / "results",
        tracking_uri=uri,
        study_url=f"sqlite:///{tmp_path / 'optuna.db'}",
        runtime=Runtime(),
        parent_run_id=top,
    )
    settings.save()
    for r, run in enumerate(reps):
        one = replicate_settings(settings, r)
        one.parent_run_id = run
        one.save()
    return settings, client, top, reps


def test_resume_of_a_finished_replicated_search_only_reports(finished, capsys):
    settings, client, top, _ = finished
    outcome = resume(SweepSettings.load("q", settings.results_dir))
    out = capsys.readouterr().out
    assert outcome.finished
    assert len(outcome.trials) == 3
    assert "replicated search q has finished: nothing to resume" in out
    # each replicate's winner by val_acc (source_val): r0 trial 1 (28.0), r1 trial 0 (32.0): 30 ± 2
    assert "acc_cartoon 30.00 ± 2.00 (mean ± SE over 2 replicates; sd 2.83)" in out
    run = client.get_run(top)
    assert run.data.metrics["replicated_acc_cartoon"] == 30.0
    assert run.data.metrics["replicated_acc_cartoon_se"] == 2.0
    assert run.data.tags[STATUS_TAG] == "completed"
    artifacts = {a.path for a in client.list_artifacts(top)}
    assert {"replicates.json", "replicates.txt", "space.json"} <= artifacts
    logged = json.loads(open(client.download_artifacts(top, "replicates.json")).read())
    assert [w["accuracy"] for w in logged["results"][0]["winners"]] == [28.0, 32.0]


def test_restart_keeps_the_search_and_its_replicates_under_another_name(finished):
    settings, client, top, reps = finished
    assert archive(settings) == "q.attempt-1"
    results = settings.results_dir
    assert sorted(p.name for p in results.iterdir()) == ["q.attempt-1", "q.attempt-1.r0", "q.attempt-1.r1"]
    moved = SweepSettings.load("q.attempt-1.r1", results)
    assert moved.replicate_of == "q.attempt-1"
    tags = client.get_run(reps[1]).data.tags
    assert (tags[SWEEP_TAG], tags[REPLICATE_OF_TAG]) == ("q.attempt-1.r1", "q.attempt-1")
    assert client.get_run(top).data.tags[SWEEP_TAG] == "q.attempt-1"


def test_confirm_asks_for_one_replicate(finished):
    settings, *_ = finished
    with pytest.raises(
        ConfigError, match=r"q is a replicated search: confirm one of its replicates \(q.r0 .. q.r1\)"
    ):
        confirm(settings, 1, 2)
