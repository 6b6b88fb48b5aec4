"""Model selection: splits, validation metrics and their noise, refused spaces, and a real sweep
under source_val (local Ray, sqlite MLflow and Optuna, real PACS) whose scheduler and sampler
only ever see the validation accuracy."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from asha_tune.cli import main
from asha_tune.runner import run_logged_trial
from asha_tune.spaces import load_space
from asha_tune.tracking.tags import ADAPTATION_TAG
from asha_tune.trial import selection
from asha_tune.trial.augmentation import normalize
from asha_tune.trial.config import CLASSES, Runtime
from asha_tune.trial.model import build_model
from asha_tune.trial.training import Trial, run_trial
from tests.helpers.data import load_pacs_domain, pacs_domain, tiny_config
from tests.helpers.mlflow import mlflow_store


def real_domain(root: Path, name: str) -> selection.Domain:
    files = pacs_domain(root, name)
    return selection.Domain(name, tuple(p.relative_to(root).as_posix() for p in files.paths), files.labels)


# --- the split -------------------------------------------------------------------------------


def test_source_val_never_trains_on_held_out_images(tiny_runtime):
    config = tiny_config(selection={"protocol": "source_val", "val_fraction": 0.34})
    trial = Trial(config, tiny_runtime)
    whole = load_pacs_domain(tiny_runtime.data_root, "art_painting", 32, tiny_runtime.cache_dir)
    held = torch.tensor([p for p in range(len(whole)) if p not in trial.data.source_positions.tolist()])
    # one per class (3 each)
    assert len(held) == 7
    assert len(trial.data.source) == len(whole) - 7
    trained = {bytes(x.numpy()) for x in trial.data.source.train}
    assert not any(bytes(x.numpy()) in trained for x in whole.train[held])  # never trained on
    (val,) = trial.data.val.values()
    assert torch.equal(val.test, whole.test[held])
    assert torch.equal(val.labels, whole.labels[held])
    assert trial.data.targets["cartoon"].test.shape[0] == 21  # the target is reported whole


def test_target_val_reports_on_the_rest_and_adapts_on_every_target_image(tiny_runtime):
    config = tiny_config(
        shaping={"mode": "bn_only"}, selection={"protocol": "target_val", "val_fraction": 0.34}
    )
    trial = Trial(config, tiny_runtime)
    whole = load_pacs_domain(tiny_runtime.data_root, "cartoon", 32, tiny_runtime.cache_dir)
    val, reported = trial.data.val["cartoon"], trial.data.targets["cartoon"]
    assert len(val) == 7
    assert len(reported) == 14
    assert len(trial.data.source) == 21
    rows = lambda t: {bytes(x.numpy()) for x in t}  # noqa: E731
    assert not rows(val.test) & rows(reported.test)
    assert rows(val.test) | rows(reported.test) == rows(whole.test)
    assert torch.equal(trial.data.adaptation.train, whole.train)  # transductive: all of them


# --- metrics and their noise -----------------------------------------------------------------


def test_standard_errors_and_chance_levels_by_hand():
    assert selection.binomial_se(50.0, 100) == pytest.approx(5.0)
    assert selection.binomial_se(61.2, 2344) == pytest.approx(1.0064, abs=1e-4)  # "61.2 ± 1.0"
    assert selection.binomial_se(100.0, 7) == 0.0
    mean, se = selection.mean_with_se([(60.0, 100), (40.0, 100)])
    assert mean == 50.0
    assert se == pytest.approx(math.sqrt(24 + 24) / 2)
    assert selection.chance_level([[0, 0, 1]]) == pytest.approx(200 / 3)
    # Two sets: a constant guess of class 1 scores (1/3 + 3/4) / 2, better than class 0.
    assert selection.chance_level([[0, 0, 1], [1, 1, 1, 0]]) == pytest.approx(100 * (1 / 3 + 3 / 4) / 2)
    metrics = selection.epoch_metrics(
        {"cartoon": (25.0, 4), "sketch": (50.0, 2)}, {"art_painting": (80.0, 25)}
    )
    assert metrics == pytest.approx(
        {
            "val_acc": 80.0,
            "val_acc_se": 8.0,
            "acc_cartoon": 25.0,
            "acc_cartoon_se": 100 * math.sqrt(0.25 * 0.75 / 4),
            "acc_sketch": 50.0,
            "acc_sketch_se": 100 * math.sqrt(0.25 / 2),
            "target_acc": 37.5,
            "target_acc_se": math.sqrt(100 * 0.1875 / 4 + 100 * 0.25 / 2) * 10 / 2,
        }
    )


def uneven_pacs(root: Path) -> Path:
    """Random-noise images, 20 dogs and 5 of every other class per domain (chance 40 %)."""
    rng = np.random.default_rng(1)
    for domain in ("art_painting", "cartoon"):
        for c, name in enumerate(CLASSES):
            (root / domain / name).mkdir(parents=True)
            for i in range(20 if c == 0 else 5):
                pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / domain / name / f"{name}_{i}.png")
    return root


def test_val_acc_is_the_accuracy_on_the_held_out_images(tmp_path):
    runtime = Runtime(data_root=uneven_pacs(tmp_path / "pacs"), cache_dir=tmp_path / "cache", device="cpu")
    config = tiny_config(train={"epochs": 1}, selection={"protocol": "source_val", "split_seed": 4})
    states = []
    (metrics,) = run_trial(config, runtime, report=lambda m, s: states.append(s)).history
    # Independently: the held-out images by the split's rule, the trained model in eval mode.
    source = real_domain(runtime.data_root, "art_painting")
    _, held = selection.stratified_split(source, 0.2, seed=4)
    images = load_pacs_domain(runtime.data_root, "art_painting", 32, runtime.cache_dir)
    model = build_model("none")
    model.load_state_dict(states[-1]["model"])
    model.eval()
    with torch.no_grad():
        predicted = model(normalize(images.test[list(held)])).argmax(1)
    labels = images.labels[list(held)]
    n, correct = len(held), int((predicted == labels).sum())
    # 20 % of 20 dogs, 1 of each 5
    assert n == 10
    assert Counter(labels.tolist())[0] == 4
    assert metrics["val_acc"] == pytest.approx(100 * correct / n)
    p = correct / n
    assert metrics["val_acc_se"] == pytest.approx(100 * math.sqrt(p * (1 - p) / n))
    assert metrics["n_val"] == 10
    assert metrics["chance_val"] == pytest.approx(40.0)
    assert metrics["n_cartoon"] == 50
    assert metrics["chance_cartoon"] == pytest.approx(40.0)
    assert metrics["n_target"] == 50
    assert metrics["split_hash"] == selection.split_hash([source.keys[p] for p in held])


def test_oracle_selects_on_the_whole_target(tiny_runtime):
    (metrics,) = run_trial(tiny_config(train={"epochs": 1}), tiny_runtime).history
    assert metrics["val_acc"] == metrics["target_acc"] == metrics["acc_cartoon"]
    assert metrics["n_val"] == metrics["n_cartoon"] == 21


def test_logged_trial_records_the_split_and_what_the_adaptation_saw(tiny_runtime, tmp_path):
    config = tiny_config(shaping={"mode": "bn_only"}, selection={"protocol": "target_val"})
    uri = mlflow_store(tmp_path / "mlflow.db")
    logged = run_logged_trial(config, tiny_runtime, tracking_uri=uri, checkpoint=tmp_path / "ck.pt")
    run = MlflowClient(uri).get_run(logged.run_id)
    final = logged.result.final
    assert run.data.params["selection.protocol"] == "target_val"
    assert run.data.params["split_hash"] == final["split_hash"]
    assert run.data.params["n_val"] == str(final["n_val"])
    assert "n_val" not in run.data.metrics
    assert run.data.params["chance_cartoon"] == str(final["chance_cartoon"])
    assert {"val_acc", "val_acc_se", "acc_cartoon_se", "target_acc_se"} <= run.data.metrics.keys()
    assert run.data.tags[ADAPTATION_TAG] == (
        "transductive: all images of cartoon, unlabelled, validation and reported images alike (as the paper)"
    )


# --- refused and accepted spaces -------------------------------------------------------------

SPACE = {
    "name": "sel",
    "data": {"targets": ["cartoon"], "image_size": 32},
    "train": {"epochs": 2, "weights": "none"},
    "shaping": {"mode": "random"},
    "selection": {"protocol": "source_val"},
    "search": {"algorithm": "optuna", "num_trials": 2},
    "parameters": {
        "shaping.convs": {"type": "conv_subset", "allowed": [1, 2]},
        "shaping.p0": {"type": "float", "low": 0.1, "high": 0.5},
    },
}
REFUSAL = (
    "scheduler.metric: {metric} is a reported target accuracy, which selection {protocol} keeps "
    "from the scheduler and the search; use val_acc (or selection: oracle to select on the "
    "target domain, as the paper)"
)


@pytest.mark.parametrize(
    ("change", "overrides", "line"),
    [
        (
            {"scheduler": {"metric": "target_acc"}},
            [],
            REFUSAL.format(metric="target_acc", protocol="source_val"),
        ),
        (
            {"selection": {"protocol": "target_val"}, "scheduler": {"metric": "acc_cartoon"}},
            [],
            REFUSAL.format(metric="acc_cartoon", protocol="target_val"),
        ),
        (
            {"selection": {"protocol": "oracle"}, "scheduler": {"metric": "target_acc", "kind": "fifo"}},
            ["selection.protocol=target_val"],
            REFUSAL.format(metric="target_acc", protocol="target_val"),
        ),
        ({}, ["scheduler.metric=acc_cartoon"], REFUSAL.format(metric="acc_cartoon", protocol="source_val")),
        (
            {
                "parameters": {
                    **SPACE["parameters"],
                    "selection.split_seed": {"type": "int", "low": 0, "high": 3},
                }
            },
            [],
            "parameters.selection.split_seed: selection is fixed for a whole sweep (every trial selects "
            "on the same split); set it in the selection section",
        ),
        (
            {"selection": {"protocol": "holdout"}},
            [],
            "selection.protocol: Input should be 'oracle', 'source_val', 'target_val', 'lodo', 'entropy', 'im' or 'snd' (got 'holdout')",
        ),
        (
            {"selection": {"protocol": "source_val", "val_fraction": 1.5}},
            [],
            "selection.val_fraction: Input should be less than 1 (got 1.5)",
        ),
    ],
)
def test_a_space_that_selects_on_a_reported_target_is_refused(
    change, overrides, line, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sel.yaml"
    path.write_text(yaml.safe_dump({**SPACE, **change}))
    args = ["launch", "--space", str(path), "--dry-run"]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [f"asha-tune launch: error: {line}"]
    assert not captured.out  # refused before anything, even the dry run's description


@pytest.mark.parametrize(
    ("protocol", "metric"),
    [
        ("oracle", "target_acc"),
        ("oracle", "acc_cartoon"),
        ("source_val", "val_acc"),
        ("target_val", "source_acc"),
    ],
)
def test_selection_metrics_that_are_allowed(tmp_path, protocol, metric):
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "selection": protocol, "scheduler": {"metric": metric}}))
    space = load_space(path)
    assert space.selection.protocol == protocol
    assert space.trial_config({"shaping.convs": [1], "shaping.p0": 0.2}).selection.protocol == protocol


def test_the_default_scheduler_metric_is_val_acc_and_shipped_searches_use_source_val():
    from asha_tune.spaces import SchedulerSettings, list_spaces

    assert SchedulerSettings().metric == "val_acc"
    shipped = {name: load_space(name) for name in list_spaces()}
    for name, space in shipped.items():
        # the paper's protocol: its runs (baseline), its grid replayed, and the search that is
        # compared with that grid under the same protocol (README, "Does Optuna beat...")
        expected = "oracle" if name in ("baseline", "paper_grid", "paper_search") else "source_val"
        assert space.selection.protocol == expected, name
        if expected != "oracle":
            assert space.scheduler.metric == "val_acc", name


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--selection", "holdout"],
            "--selection: Input should be 'oracle', 'source_val', 'target_val', 'lodo', 'entropy', 'im' or 'snd'",
        ),
        (
            ["--selection", "source_val", "--val-fraction", "0"],
            "--val-fraction: Input should be greater than 0",
        ),
        (
            ["--mode", "random", "--convs", "1", "--p0", "0.5", "--target-pairing", "shuffled"],
            "target_pairing applies to the modes that use target batches (target, bn_only), not to mode random",
        ),
        (
            ["--mode", "target", "--convs", "4", "--target-pairing", "cyclic"],
            "--target-pairing: Input should be 'index' or 'shuffled' (got 'cyclic')",
        ),
    ],
)
def test_bad_selection_flags_exit_2(args, line, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["trial", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert line in err[0], err


# --- a real sweep under source_val -----------------------------------------------------------
