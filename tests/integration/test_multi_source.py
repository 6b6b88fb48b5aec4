"""Several source domains of a synthetic `folder` dataset, end to end: `asha-tune trial` as a
process, and short sweeps on a real local Ray with real MLflow and Optuna stores, under
source_val and lodo (tests/helpers/data.make_domains: odd names, odd image modes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from asha_tune.api import launch
from asha_tune.trial.config import Runtime
from tests.helpers.data import ODD_CLASSES, make_domains
from tests.helpers.sweeps import mlflow_children, settings_for, space_file, study_trials

SOURCES = ["Real World", "clipart"]  # 15 and 16 images; réel 17 and sketch 18 are the targets
SPACE = {
    "data": {"dataset": "folder", "source": SOURCES, "image_size": 32, "source_sampling": "balanced"},
    "train": {"epochs": 2, "batch_size": 8, "weights": "none"},
    "shaping": {"mode": "random"},
    "search": {"algorithm": "grid", "max_concurrent": 2},
    "scheduler": {"kind": "fifo"},
    "resources": {"cpu": 1},
    "parameters": {"shaping.convs": {"type": "fixed", "value": [1]}, "shaping.p0": {"type": "grid", "values": [0.2, 0.6]}},
}  # fmt: skip


@pytest.fixture
def odd_runtime(tmp_path: Path) -> Runtime:
    return Runtime(data_root=make_domains(tmp_path / "odd"), cache_dir=tmp_path / "cache", device="cpu")


def test_a_trial_on_two_source_domains_as_a_process(tmp_path, odd_runtime):
    args = ["trial", "--dataset", "folder", "--source", ",".join(SOURCES), "--selection", "source_val"]
    args += ["--mode", "target", "--convs", "4", "--target", "sketch", "--image-size", "32", "--epochs", "2"]
    args += ["--batch-size", "8", "--weights", "none", "--device", "cpu"]
    args += ["--data-root", str(odd_runtime.data_root), "--cache-dir", str(odd_runtime.cache_dir)]
    out = subprocess.run(
        [sys.executable, "-m", "asha_tune.cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "decoding Real World at 32 px" in out.stderr  # the decode's progress bar, per domain
    assert "asha-tune trial: data path: images in memory on the device" in out.stderr
    assert "(selection source_val)" in out.stdout
    run_id = out.stdout.split("MLflow run ")[1].split(";")[0]
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id)
    params = run.data.params
    assert json.loads(params["data.source"]) == SOURCES
    assert json.loads(params["classes"]) == list(ODD_CLASSES)
    assert int(params["n_val"]) == 3 + 3  # round(20%) of each source (15 and 16), one of each class
    assert {"acc_sketch", "final_acc_sketch", "val_acc"} <= set(run.data.metrics)


@pytest.mark.parametrize("protocol", ["source_val", "lodo"])
def test_a_sweep_on_several_source_domains(tmp_path, odd_runtime, protocol, capsys):
    path = space_file(tmp_path, f"multi-{protocol}", SPACE, selection={"protocol": protocol})
    outcome = launch(settings_for(tmp_path, path, f"multi-{protocol}", odd_runtime))
    assert outcome.finished
    out = capsys.readouterr().out
    # the best trial's line
    assert f"selection: {protocol}: " in out
    assert f"selection {protocol}); " in out
    children = mlflow_children(tmp_path, f"multi-{protocol}", outcome.settings.parent_run_id)
    assert len(children) == 2
    assert {r.data.tags["asha_tune.status"] for r in children} == {"completed"}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for run in children:
        params, metrics = run.data.params, run.data.metrics
        assert params["data.dataset"] == "folder"
        assert params["selection.protocol"] == protocol
        assert json.loads(params["classes"]) == list(ODD_CLASSES)
        assert params["data_path"] == "memory"
        # The targets default to every other domain of the data root, each reported every epoch.
        assert (params["n_réel"], params["n_sketch"]) == ("17", "18")
        for metric in ("acc_réel", "acc_sketch", "val_acc"):
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, metric)) == [1, 2]
        # lodo selects on every image of each left-out source; source_val on a fifth of each.
        assert int(params["n_val"]) == (15 + 16 if protocol == "lodo" else 3 + 3)
        assert 0 <= metrics["val_acc"] <= 100
    trials = study_trials(tmp_path, f"multi-{protocol}")
    assert sorted(t.params["shaping.p0"] for t in trials) == [0.2, 0.6]
    decoded = sorted(
        p.name.split("-")[1] for p in odd_runtime.cache_dir.glob("folder-*-32px-v2-*") if p.is_dir()
    )
    assert decoded == sorted(["Real World", "clipart", "réel", "sketch"])  # inside Ray, once per domain
