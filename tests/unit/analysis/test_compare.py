"""`asha-tune compare` on hand-made MLflow records with known numbers (a real sqlite store)."""

from __future__ import annotations

import csv
import json
import math

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from asha_tune.analysis.compare import run_compare
from asha_tune.analysis.curves import compare
from asha_tune.cli import main
from asha_tune.tracking import Tracker
from asha_tune.tracking.records import sweep_trials
from asha_tune.tracking.tags import (
    COMPARES_RUNS_TAG,
    COMPARES_TAG,
    CONFIRMS_RUN_TAG,
    CONFIRMS_TAG,
    CONFIRMS_TRIAL_TAG,
    KIND_TAG,
    STATUS_TAG,
    SWEEP_TAG,
)
from asha_tune.trial.selection import binomial_se
from tests.helpers.mlflow import mlflow_store
from tests.helpers.records import read_sweep

GRID_SPACE = {
    "configurations": [
        {"id": "baseline", "values": {"shaping.mode": "baseline"}, "published": {"acc_cartoon": 54.82}},
        {"id": "rand-c1-p0.7", "values": {}, "published": {"acc_cartoon": 61.63}},
        {"id": "da-c4-cartoon", "values": {}, "published": {"acc_cartoon": 63.95}},
    ]
}


def make_sweep(
    client: MlflowClient,
    experiment: str,
    name: str,
    protocol: str,
    algorithm: str,
    trials: list[dict],
    space: dict | None = None,
) -> str:
    """A parent run as launch writes it and one child per trial: per-epoch metrics, end time."""
    parent = client.create_run(
        experiment, run_name=name, tags={SWEEP_TAG: name, STATUS_TAG: "completed"}
    ).info.run_id
    client.log_param(parent, "selection.protocol", protocol)
    client.log_param(parent, "search.algorithm", algorithm)
    client.log_dict(parent, space or {"configurations": []}, "space.json")
    for number, t in enumerate(trials):
        run = client.create_run(
            experiment,
            run_name=f"trial-{number:03d}",
            tags={
                "mlflow.parentRunId": parent,
                "asha_tune.trial_number": str(number),
                STATUS_TAG: t["status"],
                "asha_tune.epochs_run": str(t["epochs"]),
            },
        ).info.run_id
        client.log_param(run, "search", json.dumps(t.get("values", {"shaping.p0": 0.1 * number})))
        client.log_param(run, "n_cartoon", "2344")
        for epoch in range(1, t["epochs"] + 1):
            client.log_metric(run, "time_train", t["train_s"], step=epoch)
            client.log_metric(run, "time_eval", t["eval_s"], step=epoch)
        for key, value in t.get("metrics", {}).items():
            client.log_metric(run, key, value, step=t["epochs"])
        client.set_terminated(run, "FAILED" if t["status"] == "failed" else "FINISHED", end_time=t["ended"])
    client.set_terminated(parent, "FINISHED")
    return parent


def acc(cartoon: float, se: float = 1.0, **more: float) -> dict:
    return {"acc_cartoon": cartoon, "acc_cartoon_se": se, **more}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """One store for the module (creating one takes seconds); compare only adds runs beside them."""
    tmp_path = tmp_path_factory.mktemp("store")
    uri = mlflow_store(tmp_path / "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("hand-made", artifact_location=(tmp_path / "artifacts").as_uri())
    parents = {}
    # The grid (oracle): 2 epochs of 10 + 2 s per trial.
    grid = [
        dict(
            status="completed",
            epochs=2,
            train_s=10,
            eval_s=2,
            ended=1000,
            values={"configuration": c},
            metrics=acc(v),
        )
        for c, v in (("baseline", 55.0), ("rand-c1-p0.7", 57.0), ("da-c4-cartoon", 62.5))
    ]
    grid[2]["ended"], grid[0]["ended"] = 3000, 2000  # completion order: rand-c1 (1000), baseline, da-c4
    grid[1]["ended"] = 1000
    parents["grid"] = make_sweep(client, exp, "grid", "oracle", "list", grid, GRID_SPACE)
    # A search (oracle), ASHA: epochs of 5 + 1 s; a pruned trial with a high early value, a failure.
    opt = [
        dict(status="completed", epochs=2, ended=1500, metrics=acc(58.0)),
        dict(status="pruned", epochs=1, ended=2500, metrics=acc(64.5)),
        dict(status="completed", epochs=2, ended=3500, metrics=acc(63.0)),
        dict(status="completed", epochs=2, ended=4500, metrics=acc(64.2, 0.99)),
        dict(status="failed", epochs=1, ended=5000),
    ]
    for t in opt:
        t.update(train_s=5, eval_s=1)
    parents["opt"] = make_sweep(client, exp, "opt", "oracle", "optuna", opt)
    # Confirmation of the search's best (trial 3), nested under its parent, as `confirm` records it.
    conf = client.create_run(
        exp,
        run_name="confirm-opt",
        tags={
            "mlflow.parentRunId": parents["opt"],
            KIND_TAG: "confirmation",
            CONFIRMS_TAG: "opt",
            STATUS_TAG: "completed",
            "asha_tune.trial_number": "99",
        },
    ).info.run_id
    for seed, value in enumerate((63.0, 64.0, 65.0)):
        run = client.create_run(
            exp,
            run_name=f"confirm-3-seed{seed}",
            tags={
                "mlflow.parentRunId": conf,
                CONFIRMS_TRIAL_TAG: "3",
                CONFIRMS_RUN_TAG: "x",
                STATUS_TAG: "completed",
            },
        ).info.run_id
        client.log_metric(run, "acc_cartoon", value, step=2)
    # A search under source_val: selects on val_acc, so its best is trial 1 (reported 55.0).
    honest = [
        dict(status="completed", epochs=2, train_s=5, eval_s=1, ended=1000, metrics=acc(60.0, val_acc=80.0)),
        dict(status="completed", epochs=2, train_s=5, eval_s=1, ended=2000, metrics=acc(55.0, val_acc=85.0)),
    ]
    parents["honest"] = make_sweep(client, exp, "honest", "source_val", "optuna", honest)
    return uri, parents


def test_curves_budgets_and_matches(store):
    uri, _ = store
    tracker = Tracker(uri)
    comparison = compare([read_sweep(tracker, n) for n in ("grid", "opt", "honest")])
    assert [(g.protocol, g.target) for g in comparison.groups] == [
        ("oracle", "cartoon"),
        ("source_val", "cartoon"),
    ]
    oracle, honest = comparison.groups
    assert oracle.published_best == ("da-c4-cartoon", 63.95)  # the paper's best, from paper_grid
    # no grid under source_val: never mixed
    assert oracle.grid_best == 62.5
    assert honest.grid_best is None
    grid = [
        (p.trial, p.budget_epochs, p.budget_device_s, p.best_trial, p.best_acc) for p in oracle.curves["grid"]
    ]
    assert grid == [(1, 2, 24.0, 1, 57.0), (0, 4, 48.0, 1, 57.0), (2, 6, 72.0, 2, 62.5)]
    opt = [
        (p.trial, p.budget_epochs, p.budget_device_s, p.best_trial, p.best_acc) for p in oracle.curves["opt"]
    ]
    # the pruned trial's 64.5 after one epoch never wins while a full-budget trial exists
    assert opt == [
        (0, 2, 12.0, 0, 58.0),
        (1, 3, 18.0, 0, 58.0),
        (2, 5, 30.0, 2, 63.0),
        (3, 7, 42.0, 3, 64.2),
        (4, 8, 48.0, 3, 64.2),
    ]
    assert "confirm-opt" not in {p.trial for p in oracle.curves["opt"]}
    assert len(oracle.curves["opt"]) == 5
    assert oracle.curves["opt"][0].selection_metric == "acc_cartoon"  # oracle selects on what it reports
    rows = {r["sweep"]: r for r in oracle.best_rows}
    assert (rows["opt"]["matched_grid_best_epochs"], rows["opt"]["matched_grid_best_device_s"]) == (5, 30.0)
    assert (rows["opt"]["matched_published_best_epochs"], rows["opt"]["matched_published_best_device_s"]) == (
        7,
        42.0,
    )
    assert rows["grid"]["matched_grid_best_epochs"] == 6
    assert rows["grid"]["matched_published_best_epochs"] is None
    assert (rows["opt"]["best_trial"], rows["opt"]["acc"], rows["opt"]["acc_se"]) == (3, 64.2, 0.99)
    assert (rows["opt"]["confirmed_mean"], rows["opt"]["confirmed_sd"], rows["opt"]["confirmed_n"]) == (
        64.0,
        1.0,
        3,
    )
    assert rows["grid"]["configuration"] == "da-c4-cartoon"
    assert rows["grid"]["confirmed_n"] == 0
    (h,) = honest.best_rows
    assert (h["best_trial"], h["selection_metric"], h["selection"], h["acc"]) == (1, "val_acc", 85.0, 55.0)


def test_grid_differences_and_noise_flags(store):
    uri, _ = store
    rows = {r.configuration: r for r in compare([read_sweep(Tracker(uri), "grid")]).grid}
    assert set(rows) == {"baseline", "rand-c1-p0.7", "da-c4-cartoon"}
    r = rows["rand-c1-p0.7"]
    assert r.difference == pytest.approx(57.0 - 61.63)
    assert r.se_difference == pytest.approx(math.hypot(1.0, 100 * math.sqrt(0.6163 * 0.3837 / 2344)))
    assert r.seed_spread == 0.8
    assert not r.within_2se
    assert r.within_seed_spread is False
    assert not r.within_noise
    d = rows["da-c4-cartoon"]  # -1.45 points: inside 2 binomial SE (2.8), outside the 0.8 seed spread
    assert d.difference == pytest.approx(-1.45)
    assert d.within_2se
    assert d.within_seed_spread is False
    assert d.within_noise
    b = rows["baseline"]
    assert b.difference == pytest.approx(0.18)
    assert b.within_seed_spread
    assert b.within_noise
    assert b.se_difference == pytest.approx(math.hypot(1.0, binomial_se(54.82, 2344)))


def test_a_confirmation_run_is_not_a_trial(store):
    uri, parents = store
    tracker = Tracker(uri)
    experiment = tracker.client.get_run(parents["opt"]).info.experiment_id
    assert [t.number for t in sweep_trials(tracker, experiment, parents["opt"])] == [0, 1, 2, 3, 4]


def test_outputs_are_written_and_logged_as_a_run_linked_to_the_sweeps(store, tmp_path):
    uri, parents = store
    out = tmp_path / "out"
    _, text, run_id = run_compare(["grid", "opt", "honest"], uri, out)
    assert (
        "grid: replayed grid, selection oracle (oracle: selected on the data it reports (optimistic))" in text
    )
    assert "honest: optuna search, selection source_val, 2 trials ended" in text
    assert "published best: 63.95 % (da-c4-cartoon; paper, selected by oracle)" in text
    assert "confirmed 64.00 ± 1.00 (mean ± sd, 3 runs)" in text
    assert (
        "grid best (62.50) reached at 5 epochs, 30 device-s; published best (63.95) reached at 7 epochs, "
        "42 device-s"
    ) in text
    assert (
        "honest: trial 1 shaping.p0=0.1: acc_cartoon 55.00 ± 1.00 (val_acc 85.00); not confirmed; no grid best"
        in text
    )
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "best_so_far_cartoon_oracle.png",
        "best_so_far_cartoon_source_val.png",
        "grid_vs_published.png",
    ]
    for name in pngs:
        with Image.open(out / name) as image:
            image.load()  # decodes
            assert image.size[0] > 300
            assert image.size[1] > 300
    with (out / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    sections = {r["section"] for r in rows}
    assert sections == {
        "best_so_far",
        "best",
        "grid_vs_published",
        "replicated",
        "versus_grid",
        "selection_gap",
    }
    assert any(r["sweep"] == "paper (published)" and r["acc"] == "63.95" for r in rows)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.tags[KIND_TAG] == "comparison"
    assert run.data.tags[COMPARES_TAG] == "grid,opt,honest"
    assert run.data.tags[COMPARES_RUNS_TAG] == ",".join(parents[n] for n in ("grid", "opt", "honest"))
    assert run.data.tags[f"{COMPARES_TAG}.opt"] == parents["opt"]
    assert (
        f"#/experiments/{run.info.experiment_id}/runs/{parents['grid']}"
        in run.data.tags["mlflow.note.content"]
    )
    assert run.info.experiment_id == client.get_run(parents["grid"]).info.experiment_id  # beside the sweeps
    logged = {a.path for a in client.list_artifacts(run_id)}
    assert {"comparison.csv", "comparison.txt", *pngs} <= logged
    assert all(client.get_run(p).data.tags["asha_tune.compared_in"] == run_id for p in parents.values())
    assert read_sweep(Tracker(uri), "opt").trials[-1].record.number == 4  # the comparison run is no trial


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["compare"], "name at least one sweep"),
        (["compare", "nope"], "no sweep named nope in sqlite:///"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, line, store, tmp_path, capsys, monkeypatch):
    uri, _ = store
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert line in err[0], err
    if len(argv) > 1:
        assert "(sweeps there: grid, honest, opt)" in err[0]


def test_a_missing_store_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "grid"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no MLflow store at" in err[0]
    assert not (tmp_path / "mlflow.db").exists()  # nothing created on the way
