"""Model selection: splits, validation metrics and their noise, refused spaces, and a real sweep
under source_val (local Ray, sqlite MLflow and Optuna, real PACS) whose scheduler and sampler
only ever see the validation accuracy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from asha_tune.spaces import load_space
from asha_tune.sweep import SweepSettings
from asha_tune.sweep.searcher import ResumableASHA, StudySearcher
from asha_tune.trial import selection
from asha_tune.trial.config import CLASSES, Runtime, SelectionConfig, TrialConfig
from tests.helpers.data import pacs_domain


def real_domain(root: Path, name: str) -> selection.Domain:
    files = pacs_domain(root, name)
    return selection.Domain(name, tuple(p.relative_to(root).as_posix() for p in files.paths), files.labels)


# --- the split -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["art_painting", "sketch"])
def test_split_is_stratified_and_disjoint_on_real_pacs(pacs_root, name):
    domain = real_domain(pacs_root, name)
    kept, held = selection.stratified_split(domain, 0.2, seed=0)
    assert not set(kept) & set(held)
    assert sorted(kept + held) == list(range(len(domain.labels)))
    assert len(held) == round(0.2 * len(domain.labels))
    counts, held_counts = Counter(domain.labels), Counter(domain.labels[p] for p in held)
    for c, n in counts.items():
        assert abs(held_counts[c] - 0.2 * n) <= 1, (CLASSES[c], held_counts[c], n)


def test_split_follows_its_own_seed_not_the_trial(pacs_root):
    source, target = real_domain(pacs_root, "art_painting"), real_domain(pacs_root, "cartoon")
    plans = [
        selection.plan_selection(c.selection, source, [target])
        for c in (
            TrialConfig.model_validate({"selection": "source_val", "train": {"seed": 0}}),
            TrialConfig.model_validate(
                {
                    "selection": "source_val",
                    "train": {"seed": 7},
                    "shaping": {"mode": "random", "convs": [1], "p0": 0.5},
                }
            ),
        )
    ]
    assert plans[0] == plans[1]
    other = selection.plan_selection(SelectionConfig(protocol="source_val", split_seed=1), source, [target])
    assert set(other.val["art_painting"]) != set(plans[0].val["art_painting"])
    assert other.split_hash != plans[0].split_hash
    # The hash names the held-out images themselves.
    keys = [source.keys[p] for p in plans[0].val["art_painting"]]
    assert plans[0].split_hash == selection.split_hash(list(reversed(keys)))


SPLIT_IN_ANOTHER_PROCESS = """
import json, sys
from pathlib import Path
from asha_tune.trial import selection
from asha_tune.trial.datasets import list_dataset
root = Path(sys.argv[1])
files = list_dataset("pacs", root, ["sketch"])["sketch"]
domain = selection.Domain("sketch", tuple(p.relative_to(root).as_posix() for p in files.paths), files.labels)
print(json.dumps(selection.stratified_split(domain, 0.2, 3)[1]))
"""


def test_split_is_identical_in_another_process(pacs_root):
    out = subprocess.run(
        [sys.executable, "-c", SPLIT_IN_ANOTHER_PROCESS, str(pacs_root)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    here = selection.stratified_split(real_domain(pacs_root, "sketch"), 0.2, 3)[1]
    assert json.loads(out.stdout) == list(here)


# --- metrics and their noise -----------------------------------------------------------------


# --- refused and accepted spaces -------------------------------------------------------------


# --- a real sweep under source_val -----------------------------------------------------------


def test_source_val_sweep_never_shows_a_target_accuracy_to_the_scheduler_or_the_sampler(
    tmp_path, pacs_root, shared_cache, monkeypatch, process_tag
):
    received: dict[str, list] = {"asha": [], "searcher": []}
    asha_result, searcher_result = ResumableASHA.on_trial_result, StudySearcher.on_trial_result

    def asha_spy(self, controller, trial, result):  # records what ASHA decides on, then decides
        received["asha"].append(
            (trial.config["trial_number"], result["epoch"], self.metric, result[self.metric])
        )
        return asha_result(self, controller, trial, result)

    def searcher_spy(self, trial_id, result):
        received["searcher"].append((self.numbers.get(trial_id), self.metric))
        return searcher_result(self, trial_id, result)

    monkeypatch.setattr(ResumableASHA, "on_trial_result", asha_spy, raising=False)
    monkeypatch.setattr(StudySearcher, "on_trial_result", searcher_spy)
    # 49 images per domain: 10 held-out source images against 49 target ones, so val_acc and
    # target_acc can only coincide at 0 or 100 %.
    path = tmp_path / "honest.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "honest",
                "data": {
                    "source": "art_painting",
                    "targets": ["cartoon"],
                    "image_size": 32,
                    "limit_per_domain": 49,
                },
                "train": {"epochs": 3, "batch_size": 16, "weights": "none", "seed": 0},
                "shaping": {"mode": "random"},
                "selection": {"protocol": "source_val", "val_fraction": 0.2, "split_seed": 0},
                "search": {"algorithm": "optuna", "num_trials": 4, "max_concurrent": 1, "seed": 0},
                "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
                "resources": {"cpu": 1},
                "parameters": {
                    "shaping.convs": {"type": "conv_subset", "allowed": [1, 2, 3, 4, 5, 6, 7]},
                    "shaping.p0": {"type": "float", "low": 0.0, "high": 0.9},
                },
            }
        )
    )
    from asha_tune.api import launch

    settings = SweepSettings(
        name="honest",
        space=load_space(path),
        results_dir=tmp_path / "results",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        study_url=f"sqlite:///{tmp_path / 'optuna.db'}",
        runtime=Runtime(data_root=pacs_root, cache_dir=shared_cache, device="cpu"),
        num_cpus=2,
    )
    outcome = launch(settings)
    assert outcome.finished
    assert len(outcome.trials) == 4

    client = MlflowClient(settings.tracking_uri)
    study = optuna.load_study(study_name="honest", storage=settings.study_url)
    val_history, target_history = {}, {}
    for record in outcome.trials:
        run = client.get_run(record.run_id)
        assert run.data.params["selection.protocol"] == "source_val"
        val_history[record.number] = {
            m.step: m.value for m in client.get_metric_history(record.run_id, "val_acc")
        }
        target_history[record.number] = {
            m.step: m.value for m in client.get_metric_history(record.run_id, "target_acc")
        }
        assert sorted(val_history[record.number]) == list(range(1, record.epochs + 1))
    # Every trial held out the same images (one split, across Ray worker processes).
    params = [client.get_run(r.run_id).data.params for r in outcome.trials]
    assert len({p["split_hash"] for p in params}) == 1
    assert {p["n_val"] for p in params} == {"10"}
    assert {p["n_cartoon"] for p in params} == {"49"}

    # What the sampler received: Optuna's intermediate values are the validation accuracies.
    for trial in study.trials:
        assert trial.intermediate_values == val_history[trial.number]
        if trial.state == TrialState.COMPLETE:
            assert trial.value == val_history[trial.number][3]
    assert {metric for _, metric in received["searcher"]} == {"val_acc"}
    # What ASHA decided on: the validation accuracy of each epoch, never a target accuracy.
    assert received["asha"]
    assert all(metric == "val_acc" for _, _, metric, _ in received["asha"])
    for number, epoch, _, value in received["asha"]:
        assert value == val_history[number][epoch]
    assert val_history != target_history  # the two differ, so the checks above tell them apart

    # The best trial is the best full-budget trial by val_acc.
    completed = {t.number: val_history[t.number][3] for t in outcome.trials if t.status == "completed"}
    assert outcome.best.metrics["val_acc"] == max(completed.values())
    assert outcome.best.number in {n for n, v in completed.items() if v == max(completed.values())}
    parent = client.get_run(settings.parent_run_id)
    assert parent.data.metrics["best_val_acc"] == max(completed.values())
    assert parent.data.params["selection.protocol"] == "source_val"
