"""Label-free selection in a trial: the scores come from the logits of the evaluation that measures
the reported accuracy (one pass), every trial logs them, the label-free protocols split the
source as source_val, `selection.epoch: best` reports and keeps its selected epoch, and spaces
whose scheduler contradicts a protocol are refused in one line."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from asha_tune.cli import main
from asha_tune.runner import run_logged_trial
from asha_tune.spaces import load_space
from asha_tune.tracking.tags import SELECTION_IMAGES_TAG, SELECTION_METRIC_TAG, is_epoch_metric
from asha_tune.trial import scores
from asha_tune.trial.augmentation import normalize
from asha_tune.trial.model import build_model
from asha_tune.trial.training import Trial, run_trial
from tests.helpers.data import load_pacs_domain, tiny_config

SCORE_KEYS = ("entropy", "im", "snd")


def logits_on(state: dict, images: torch.Tensor) -> torch.Tensor:
    """The logits of a trained model on evaluation images, computed again, independently."""
    model = build_model("none")
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        return model(normalize(images))


@pytest.mark.parametrize("protocol", ["entropy", "oracle"])
def test_every_trial_logs_the_scores_of_its_reported_targets(tiny_runtime, protocol):
    config = tiny_config(selection={"protocol": protocol}, train={"epochs": 1})
    states = []
    (metrics,) = run_trial(config, tiny_runtime, report=lambda m, s: states.append(s)).history
    cartoon = load_pacs_domain(tiny_runtime.data_root, "cartoon", 32, tiny_runtime.cache_dir)
    logits = logits_on(states[-1]["model"], cartoon.test)
    assert metrics["entropy_cartoon"] == pytest.approx(scores.entropy(logits), abs=1e-5)
    assert metrics["im_cartoon"] == pytest.approx(scores.im(logits), abs=1e-5)
    assert metrics["snd_cartoon"] == pytest.approx(scores.snd(logits), abs=1e-4)
    for name in SCORE_KEYS:  # one target: the mean over targets is its score
        assert metrics[f"target_{name}"] == metrics[f"{name}_cartoon"]
        assert is_epoch_metric(f"target_{name}")
        assert is_epoch_metric(f"{name}_cartoon")


def test_the_scores_over_several_targets_are_the_mean_of_theirs(tiny_runtime):
    config = tiny_config(
        data={"targets": ["cartoon", "sketch", "photo"]},
        shaping={"mode": "random", "convs": [1], "p0": 0.5},
        train={"epochs": 1},
    )
    (metrics,) = run_trial(config, tiny_runtime).history
    for name in SCORE_KEYS:
        per_target = [metrics[f"{name}_{t}"] for t in ("cartoon", "sketch", "photo")]
        assert metrics[f"target_{name}"] == pytest.approx(sum(per_target) / 3)
        assert len(set(per_target)) == 3  # each target scored on its own images


def test_a_label_free_protocol_holds_out_source_images_as_source_val(tiny_runtime):
    entropy = Trial(tiny_config(selection={"protocol": "entropy", "val_fraction": 0.34}), tiny_runtime)
    source_val = Trial(tiny_config(selection={"protocol": "source_val", "val_fraction": 0.34}), tiny_runtime)
    assert torch.equal(entropy.data.source_positions, source_val.data.source_positions)
    assert len(entropy.data.source) == 14
    assert entropy.data.targets["cartoon"].test.shape[0] == 21
    assert entropy.data.constants == source_val.data.constants  # same split, same sizes, same hash


def test_the_scores_cost_no_second_pass(tiny_runtime):
    """One forward per evaluation batch: the reported target once (the scores ride on it) and the
    held-out source once."""
    config = tiny_config(selection={"protocol": "snd"}, train={"epochs": 1, "eval_batch_size": 8})
    trial = Trial(config, tiny_runtime)
    forwards = []
    original = trial.mode.eval_logits

    def counted(model, shaper, x):
        forwards.append(len(x))
        return original(model, shaper, x)

    trial.mode.eval_logits = counted  # type: ignore[method-assign]
    metrics = trial.run_epoch()
    n_val, n_target = int(metrics["n_val"]), int(metrics["n_cartoon"])
    assert sum(forwards) == n_val + n_target == 7 + 21
    assert len(forwards) == math.ceil(n_val / 8) + math.ceil(n_target / 8)
    assert math.isfinite(metrics["target_snd"])


# --- selection.epoch (its multi-epoch tests: tests/integration/trial/test_selection_epoch.py) ---


def test_last_is_the_default_and_reports_the_last_epoch(tiny_runtime):
    result = run_trial(tiny_config(train={"epochs": 1}), tiny_runtime)
    assert tiny_config().selection.epoch == "last"
    assert "selected_epoch" not in result.final
    assert not any(k.startswith("raw_") for k in result.final)


# --- tags on a logged trial -------------------------------------------------------------------


def test_a_logged_label_free_trial_says_what_selection_saw(tiny_runtime, tmp_path):
    config = tiny_config(selection={"protocol": "entropy"}, train={"epochs": 1})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logged = run_logged_trial(config, tiny_runtime, tracking_uri=uri, checkpoint=tmp_path / "ck.pt")
    run = MlflowClient(uri).get_run(logged.run_id)
    assert run.data.tags[SELECTION_IMAGES_TAG] == (
        "unlabelled target images (cartoon): predictions only, no target label"
    )
    assert run.data.tags[SELECTION_METRIC_TAG].startswith(
        "target_entropy (min: lower is better): mean entropy of the softmax predictions"
    )
    assert {"target_entropy", "entropy_cartoon", "target_im", "target_snd"} <= run.data.metrics.keys()
    oracle = run_logged_trial(
        tiny_config(train={"epochs": 1}), tiny_runtime, tracking_uri=uri, checkpoint=tmp_path / "o.pt"
    )
    tags = MlflowClient(uri).get_run(oracle.run_id).data.tags
    assert tags[SELECTION_IMAGES_TAG] == "labelled target images (cartoon): the reported ones themselves"


# --- spaces ------------------------------------------------------------------------------------

SPACE = {
    "name": "lf",
    "data": {"targets": ["cartoon"], "image_size": 32},
    "train": {"epochs": 2, "weights": "none"},
    "shaping": {"mode": "random"},
    "search": {"algorithm": "optuna", "num_trials": 2},
    "parameters": {
        "shaping.convs": {"type": "conv_subset", "allowed": [1, 2]},
        "shaping.p0": {"type": "float", "low": 0.1, "high": 0.5},
    },
}


@pytest.mark.parametrize(
    ("protocol", "metric", "mode"),
    [("entropy", "target_entropy", "min"), ("im", "target_im", "max"), ("snd", "target_snd", "max")],
)
def test_a_label_free_space_selects_on_its_score_in_its_direction_by_default(
    tmp_path, protocol, metric, mode
):
    path = tmp_path / "lf.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "selection": protocol}))
    space = load_space(path)
    assert (space.scheduler.metric, space.scheduler.mode) == (metric, mode)
    per_target = load_space(path, [f"scheduler.metric={protocol}_cartoon"])
    assert per_target.scheduler.metric == f"{protocol}_cartoon"
    assert per_target.scheduler.mode == mode


@pytest.mark.parametrize(
    ("change", "overrides", "line"),
    [
        (
            {"selection": "entropy"},
            ["scheduler.mode=max"],
            "scheduler.mode max contradicts selection entropy: lower target_entropy is better (mean entropy "
            "of the softmax predictions on the target images (nats; confident is low)); use scheduler.mode: min",
        ),
        (
            {"selection": "snd", "scheduler": {"metric": "target_snd", "mode": "min"}},
            [],
            "scheduler.mode min contradicts selection snd: higher target_snd is better",
        ),
        (
            {"selection": "im", "scheduler": {"metric": "val_acc"}},
            [],
            "scheduler.metric val_acc: selection im selects on target_im (information maximisation: entropy "
            "of the mean target prediction minus the mean entropy; higher is better): set scheduler.metric: "
            "target_im and scheduler.mode: max",
        ),
        (
            {"selection": "im", "scheduler": {"metric": "target_entropy", "mode": "min"}},
            [],
            "scheduler.metric target_entropy: selection im selects on target_im",
        ),
        (
            {"selection": "source_val", "scheduler": {"metric": "target_entropy", "mode": "min"}},
            [],
            "scheduler.metric target_entropy is the entropy protocol's score of unlabelled target images, not "
            "what selection source_val selects on: use selection: entropy",
        ),
    ],
)
def test_a_scheduler_that_contradicts_the_protocol_is_one_line(
    change, overrides, line, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "lf.yaml"
    path.write_text(yaml.safe_dump({**SPACE, **change}))
    args = ["launch", "--space", str(path), "--dry-run"]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("asha-tune launch: error: "), err
    assert line in err[0], err


def test_the_dry_run_says_what_a_label_free_protocol_selects_on(tmp_path, capsys):
    path = tmp_path / "lf.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "selection": {"protocol": "entropy", "epoch": "best"}}))
    from asha_tune.spaces import describe_selection

    line = describe_selection(load_space(path))
    assert line.startswith("entropy: the unlabelled images of cartoon select by mean entropy")
    assert "no target label is read" in line
    assert "val_acc reports on them" in line
    assert "optimise target_entropy (lower is better)" in line
    assert "each trial reports its best epoch by target_entropy and keeps its weights" in line
