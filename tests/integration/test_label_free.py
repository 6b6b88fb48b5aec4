"""Label-free selection on real PACS at CPU scale (32 px, random initialisation, a few images):
the scores a trial logs equal the scores of its kept model's predictions on the target images,
computed again; `selection.epoch: best` keeps the epoch with the lowest entropy; and a real sweep
under `entropy` (local Ray, sqlite MLflow and Optuna) minimises the target entropy, which its
scheduler, its study and its runs say."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from asha_tune.spaces import load_space
from asha_tune.sweep import SweepSettings
from asha_tune.sweep.checkpoints import final_weights
from asha_tune.tracking.tags import SELECTION_IMAGES_TAG, SELECTION_METRIC_TAG
from asha_tune.trial import scores
from asha_tune.trial.augmentation import normalize
from asha_tune.trial.config import Runtime, TrialConfig
from asha_tune.trial.loading import stratified_subset
from asha_tune.trial.model import build_model
from asha_tune.trial.training import run_trial
from tests.helpers.data import load_pacs_domain

SMALL = {"source": "art_painting", "image_size": 32, "limit_per_domain": 49}


def test_best_keeps_the_lowest_entropy_epoch_on_real_target_images(pacs_runtime):
    config = TrialConfig.model_validate(
        {
            "data": {**SMALL, "targets": ["cartoon", "sketch"]},
            "shaping": {"mode": "random", "convs": [1], "p0": 0.5},
            "train": {"epochs": 3, "batch_size": 16, "weights": "none", "lr": 0.01},
            "selection": {"protocol": "entropy", "epoch": "best"},
        }
    )
    kept: list[dict] = []
    models: list[dict] = []

    def report(metrics, state):
        kept.append(final_weights(state))
        models.append({k: v.clone() for k, v in state["model"].items()})

    result = run_trial(config, pacs_runtime, report=report)
    final, history = result.final, result.history
    raw = [m["raw_target_entropy"] for m in history]
    chosen = raw.index(min(raw))
    assert final["selected_epoch"] == chosen + 1 == kept[-1]["selected_epoch"]
    assert all(torch.equal(kept[-1]["model"][k], models[chosen][k]) for k in models[chosen])
    for key in ("acc_cartoon", "acc_sketch", "target_acc", "val_acc", "snd_sketch", "im_cartoon"):
        assert final[key] == history[chosen][f"raw_{key}"], key
    assert final["target_entropy"] == pytest.approx((final["entropy_cartoon"] + final["entropy_sketch"]) / 2)
    for target, n in (("cartoon", 49), ("sketch", 49)):
        assert final[f"n_{target}"] == n
        assert 0.0 <= final[f"entropy_{target}"] <= math.log(7)
        assert 0.0 <= final[f"im_{target}"] <= math.log(7)
        assert 0.0 <= final[f"snd_{target}"] <= math.log(n - 1)
    assert final["n_val"] == 10  # a source hold-out, as source_val: 20 % of 49


def test_scores_of_an_unshaped_trial_equal_its_models_scores_recomputed(pacs_runtime):
    config = TrialConfig.model_validate(
        {
            "data": {**SMALL, "targets": ["photo"]},
            "train": {"epochs": 1, "batch_size": 16, "weights": "none", "eval_batch_size": 16},
            "selection": "snd",
        }
    )
    states: list[dict] = []
    (metrics,) = run_trial(config, pacs_runtime, report=lambda m, s: states.append(s)).history
    model = build_model("none")
    model.load_state_dict(states[-1]["model"])
    model.eval()
    images = load_pacs_domain(pacs_runtime.data_root, "photo", 32, pacs_runtime.cache_dir)
    with torch.no_grad():
        logits = model(normalize(images.test[stratified_subset(images.labels, 49)]))
    assert metrics["entropy_photo"] == pytest.approx(scores.entropy(logits), abs=1e-5)
    assert metrics["im_photo"] == pytest.approx(scores.im(logits), abs=1e-5)
    assert metrics["snd_photo"] == pytest.approx(scores.snd(logits), abs=1e-4)  # evaluated in batches of 16


def test_a_sweep_under_entropy_minimises_the_target_entropy(tmp_path, pacs_root, shared_cache, process_tag):
    path = tmp_path / "lf.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "lf",
                "data": {**SMALL, "targets": ["cartoon"]},
                "train": {"epochs": 2, "batch_size": 16, "weights": "none"},
                "shaping": {"mode": "random"},
                "selection": "entropy",
                "search": {"algorithm": "optuna", "num_trials": 3, "max_concurrent": 1},
                "scheduler": {"kind": "fifo"},
                "resources": {"cpu": 1},
                "parameters": {
                    "shaping.convs": {"type": "conv_subset", "allowed": [1, 2]},
                    "shaping.p0": {"type": "float", "low": 0.0, "high": 0.9},
                },
            }
        )
    )
    space = load_space(path)
    assert (space.scheduler.metric, space.scheduler.mode) == ("target_entropy", "min")
    from asha_tune.api import launch

    settings = SweepSettings(
        name="lf",
        space=space,
        results_dir=tmp_path / "results",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        study_url=f"sqlite:///{tmp_path / 'optuna.db'}",
        runtime=Runtime(data_root=pacs_root, cache_dir=shared_cache, device="cpu"),
        num_cpus=2,
    )
    outcome = launch(settings)
    assert outcome.finished
    assert len(outcome.trials) == 3
    study = optuna.load_study(study_name="lf", storage=settings.study_url)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    client = MlflowClient(settings.tracking_uri)
    for record in outcome.trials:
        run = client.get_run(record.run_id)
        history = {m.step: m.value for m in client.get_metric_history(record.run_id, "target_entropy")}
        assert sorted(history) == [1, 2]
        assert study.trials[record.number].value == history[2]  # the study was told the entropy
        assert run.data.tags[SELECTION_IMAGES_TAG].startswith("unlabelled target images (cartoon)")
        assert run.data.tags[SELECTION_METRIC_TAG].startswith("target_entropy (min: lower is better)")
    best = min(outcome.trials, key=lambda r: (r.metrics["target_entropy"], r.number))
    assert outcome.best.number == best.number  # the lowest entropy wins, not the highest accuracy
    parent = client.get_run(settings.parent_run_id)
    assert parent.data.tags[SELECTION_IMAGES_TAG].startswith("unlabelled target images")
    assert parent.data.metrics["best_target_entropy"] == best.metrics["target_entropy"]
