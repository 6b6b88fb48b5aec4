"""The shipped OfficeHome space (search_spaces/office_home.yaml): OfficeHome itself is not on this
machine, so its dry run, every configuration it can sample, the preflight of a data root and a
shrunk trial of each of its modes run on a synthetic tree of OfficeHome's shape."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from asha_tune.cli import main
from asha_tune.errors import ConfigError
from asha_tune.spaces import list_spaces, load_space
from asha_tune.sweep.preflight import check_data
from asha_tune.trial.config import Runtime
from asha_tune.trial.training import run_trial

DOMAINS = ("Art", "Clipart", "Product", "Real World")
SHRUNK = [
    "data.image_size=32",
    "train.epochs=1",
    "scheduler.grace_period=1",
    "train.weights=none",
    "train.batch_size=32",
]


@pytest.fixture(scope="module")
def office_home(tmp_path_factory) -> Path:
    """OfficeHome's shape: its four domains, 65 classes, two tiny images of each."""
    root = tmp_path_factory.mktemp("office_home")
    rng = np.random.default_rng(0)
    for domain in DOMAINS:
        for c in range(65):
            folder = root / domain / f"class_{c:02d}"
            folder.mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
    return root


def test_it_is_shipped_and_its_dry_run_says_what_it_reads(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "office_home" in list_spaces()
    assert main(["launch", "--space", "office_home", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dataset office_home (Venkateswara et al. 2017; DomainBed download_office_home)" in out
    assert "source Art, Product, Real World, balanced batches; targets Clipart" in out
    assert (
        "selection: source_val: held-out Art, Product, Real World images (20% per class of each source domain"
        in out
    )
    assert "shaping.p0: float [0.0, 0.9]  (when {'shaping.mode': 'random'})" in out
    assert main(["launch", "--space", "office_home", "--dry-run", "--set", "selection.protocol=lodo"]) == 0
    out = capsys.readouterr().out
    assert "60 trials x 30 epochs x 4 models (lodo)" in out
    assert "cost: lodo trains 4 models per trial" in out
    assert "3x the training images per epoch" in out
    assert list(tmp_path.iterdir()) == []


def test_every_configuration_it_samples_is_a_valid_trial_of_either_mode():
    space = load_space("office_home")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    modes = set()
    for _ in range(40):
        trial = study.ask()
        values = space.suggest(trial)
        config = space.trial_config(values)
        d = config.data
        assert (d.dataset, d.sources, d.target_domains) == (
            "office_home",
            ("Art", "Product", "Real World"),
            ("Clipart",),
        )
        assert ("shaping.p0" in values) == (config.shaping.mode == "random")
        assert config.train.batch_size == {"random": 128, "target": 256}[config.shaping.mode]
        modes.add(config.shaping.mode)
        study.tell(trial, 1.0)
    assert modes == {"random", "target"}


def test_preflight_passes_an_office_home_root_and_names_a_missing_domain(office_home, tmp_path):
    space = load_space("office_home")
    check_data(space, Runtime(data_root=office_home))
    partial = tmp_path / "partial"
    shutil.copytree(office_home, partial)
    shutil.rmtree(partial / "Product")
    with pytest.raises(ConfigError) as err:
        check_data(space, Runtime(data_root=partial))
    assert err.value.problems == [
        f"data root {partial} does not hold the office_home domain(s) Product "
        "(expected Art/, Clipart/, Product/, Real World/ in it)"
    ]


@pytest.mark.parametrize("values", [{"shaping.mode": "random", "shaping.convs": [1], "shaping.p0": 0.5},
                                    {"shaping.mode": "target", "shaping.convs": [4]}], ids=["random", "target"])  # fmt: skip
def test_a_shrunk_trial_of_each_mode_runs_on_office_homes_shape(office_home, tmp_path, values):
    space = load_space("office_home", SHRUNK)
    config = space.trial_config(values)
    runtime = Runtime(data_root=office_home, cache_dir=tmp_path / "cache", device="cpu")
    final = run_trial(config, runtime).final
    # one of each class's two, per source
    assert final["n_Clipart"] == 130
    assert final["n_val"] == 3 * 65
    assert 0 <= final["acc_Clipart"] <= 100
    assert final["chance_Clipart"] == pytest.approx(100 / 65)


def test_a_target_of_another_dataset_is_kept_from_the_scheduler_as_pacs_ones_are():
    with pytest.raises(ConfigError, match="scheduler.metric: acc_Clipart is a reported target accuracy"):
        load_space("office_home", ["scheduler.metric=acc_Clipart"])
    oracle = load_space("office_home", ["selection.protocol=oracle", "scheduler.metric=acc_Clipart"])
    assert oracle.scheduler.metric == "acc_Clipart"
    with pytest.raises(ConfigError, match="scheduler.metric 'acc_Product' is not reported"):
        load_space("office_home", ["selection.protocol=oracle", "scheduler.metric=acc_Product"])
