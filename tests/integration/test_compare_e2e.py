"""On the CPU with real PACS at small sizes: a reduced paper grid and a small Optuna+ASHA sweep
under the same protocol run end to end (real local Ray, MLflow and Optuna sqlite stores),
`compare` reports on both, and MLflow's UI shows the sweep in a real browser."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from asha_tune.cli import main
from asha_tune.cluster.processes import free_port
from asha_tune.tracking.tags import COMPARES_RUNS_TAG, KIND_TAG, SWEEP_TAG
from tests.helpers.browser import Browser, needs_chromium
from tests.helpers.mlflow import compare_runs_url
from tests.helpers.processes import wait_for
from tests.helpers.sweeps import quiet_env

pytestmark = pytest.mark.slow

TINY = [
    "data.image_size=32",
    "data.limit_per_domain=35",
    "train.epochs=2",
    "train.batch_size=16",
    "train.weights=none",
    "resources.gpu=0",
    "resources.cpu=1",
    "search.max_concurrent=2",
]
GRID = ["baseline", "rand-c1-p0.7", "da-c4-cartoon"]
RAY_METRICS = {
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "training_iteration",
    "iterations_since_restore",
    "time_since_restore",
    "done",
    "pid",
}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, pacs_root, shared_cache):
    """The two sweeps, launched through the CLI as a user would (2 CPUs)."""
    tmp = tmp_path_factory.mktemp("e2e")
    common = [
        "--data-root",
        str(pacs_root),
        "--cache-dir",
        str(shared_cache),
        "--device",
        "cpu",
        "--tracking-uri",
        f"sqlite:///{tmp / 'mlflow.db'}",
        "--study-url",
        f"sqlite:///{tmp / 'optuna.db'}",
        "--results-dir",
        str(tmp / "results"),
        "--num-cpus",
        "2",
    ]
    sets = [a for s in TINY for a in ("--set", s)]
    only = [a for c in GRID for a in ("--only", c)]
    assert main(["launch", "--space", "paper_grid", *only, *sets, "--name", "grid", *common]) == 0
    # A search under the same protocol as the grid (oracle, selecting on acc_cartoon), ASHA stopping.
    search = [
        "--set",
        "selection.protocol=oracle",
        "--set",
        "scheduler.metric=acc_cartoon",
        "--set",
        "search.num_trials=4",
        "--set",
        "scheduler.grace_period=1",
    ]
    assert main(["launch", "--space", "random_p0", *sets, *search, "--name", "opt", *common]) == 0
    # The search's best, again with two new seeds: compare shows their mean ± sd beside it.
    assert (
        main(
            [
                "confirm",
                "opt",
                "--top",
                "1",
                "--seeds",
                "2",
                "--results-dir",
                str(tmp / "results"),
                "--num-cpus",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    return tmp


def test_compare_reports_on_a_replayed_grid_and_a_search(sweeps, capsys, monkeypatch):
    monkeypatch.chdir(sweeps)
    capsys.readouterr()
    uri = f"sqlite:///{sweeps / 'mlflow.db'}"
    assert main(["compare", "grid", "opt", "--tracking-uri", uri, "--out", str(sweeps / "cmp")]) == 0
    out = capsys.readouterr().out
    assert (
        "grid: replayed grid, selection oracle (oracle: selected on the data it reports (optimistic)), "
        "3 trials ended" in out
    )
    assert "opt: optuna search, selection oracle" in out
    assert re.search(r"opt: trial \d+ .*; confirmed \d+\.\d\d ± \d+\.\d\d \(mean ± sd, 2 runs\)", out), out
    for target in ("cartoon", "sketch", "photo"):  # the baseline and rand-c1-p0.7 report three targets
        assert (
            f"== target {target} · selection oracle: selected on the data it reports (optimistic) ==" in out
        )
    assert "published best: 63.95 % (da-c4-cartoon; paper, selected by oracle)" in out
    with (sweeps / "cmp" / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    grid_rows = [r for r in rows if r["section"] == "grid_vs_published"]
    assert sorted((r["configuration"], r["target"]) for r in grid_rows) == sorted(
        [("baseline", t) for t in ("cartoon", "sketch", "photo")]
        + [("rand-c1-p0.7", t) for t in ("cartoon", "sketch", "photo")]
        + [("da-c4-cartoon", "cartoon")]
    )
    curve = [r for r in rows if r["section"] == "best_so_far" and r["target"] == "cartoon"]
    grid = [r for r in curve if r["sweep"] == "grid"]
    assert [int(r["budget_epochs"]) for r in grid] == [2, 4, 6]  # three full-budget runs, 2 epochs each
    assert all(
        float(b["budget_device_s"]) > float(a["budget_device_s"]) > 0
        for a, b in zip(grid, grid[1:], strict=False)
    )
    opt = [r for r in curve if r["sweep"] == "opt"]
    assert len(opt) == 4
    assert int(opt[-1]["budget_epochs"]) <= 8
    assert {p.name for p in (sweeps / "cmp").glob("*.png")} >= {
        "best_so_far_cartoon_oracle.png",
        "grid_vs_published.png",
    }
    client = MlflowClient(uri)
    run_id = re.search(r"MLflow comparison run (\w+)", out).group(1)
    tags = client.get_run(run_id).data.tags
    parents = {
        n: client.search_runs(
            [e.experiment_id for e in client.search_experiments()], f"tags.`{SWEEP_TAG}` = '{n}'"
        )[0].info.run_id
        for n in ("grid", "opt")
    }
    assert tags[KIND_TAG] == "comparison"
    assert tags[COMPARES_RUNS_TAG] == f"{parents['grid']},{parents['opt']}"


def test_child_runs_log_resolved_values_and_no_ray_bookkeeping(sweeps):
    client = MlflowClient(f"sqlite:///{sweeps / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    children = client.search_runs(experiments, "tags.`asha_tune.trial_number` != ''")
    assert len(children) == 9  # 3 grid runs, 4 search trials, 2 confirmation runs
    for run in children:
        params, metrics = run.data.params, run.data.metrics
        mode = params["shaping.mode"]
        want = {"random": ("binarize_a", "True"), "target": ("raw", "False"), "baseline": ("none", "False")}[
            mode
        ]
        assert (params["shaping.shape_fn"], params["shaping.shape_at_eval"]) == want
        assert not RAY_METRICS & set(metrics)
        assert not [k for k in metrics if k.startswith("at_")]
        assert {"time_train", "time_eval", "acc_cartoon", "val_acc"} <= set(metrics)
    assert {r.data.params.get("configuration") for r in children} >= set(GRID)


@needs_chromium
def test_the_mlflow_ui_shows_the_sweep_in_the_model_training_view(sweeps, process_tag):
    port = free_port()
    env = quiet_env(MLFLOW_ENABLE_TELEMETRY="false")
    log = sweeps / "ui.log"
    with open(log, "w") as out:
        ui = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "asha_tune.cli",
                "ui",
                "opt",
                "--port",
                str(port),
                "--results-dir",
                str(sweeps / "results"),
            ],
            cwd=sweeps,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    shots = Path(os.environ.get("ASHA_TUNE_SCREENSHOTS", sweeps))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        printed = wait_for(
            lambda: re.search(r"sweep opt: (http://\S+)", log.read_text()), 240, "the printed URL"
        )
        url = printed.group(1)
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/")
        assert url.endswith("/runs?workflowType=machine_learning")  # MLflow 3's model-training view
        client = MlflowClient(f"sqlite:///{sweeps / 'mlflow.db'}")
        parent = client.search_runs(
            [e.experiment_id for e in client.search_experiments()], f"tags.`{SWEEP_TAG}` = 'opt'"
        )[0]
        children = [
            r.info.run_id
            for r in client.search_runs(
                [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
            )
        ]
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/health"), 240, "the MLflow server")
        with Browser(width=1600, height=1000) as browser:
            browser.open(url)
            # The runs table of the model-training view (the GenAI view has no run table but
            # Sessions, Judges, Evaluation runs), with the sweep's parent run.
            page = wait_for(
                lambda: _having(browser.text(), "Run Name", "random_p0", "opt"),
                120,
                "the experiment's runs table",
            )
            assert "Evaluation runs" not in page
            wait_for(lambda: _expand(browser), 60, "the sweep's trials under its parent run")
            browser.screenshot(shots / "mlflow-experiment-runs.png")
            browser.open(compare_runs_url(f"http://127.0.0.1:{port}", parent.info.experiment_id, children))
            browser.wait_for_text("Parallel Coordinates Plot", timeout=120)
            page = wait_for(
                lambda: _having(browser.text(), "shaping.p0", "acc_cartoon"),
                60,
                "shaping.p0 and acc_cartoon in the run comparison",
            )
            assert "Scatter Plot" in page
            assert "Evaluation runs" not in page
            wait_for(
                lambda: browser.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length"),
                60,
                "the parallel coordinates plot",
            )
            browser.screenshot(shots / "mlflow-compare-runs.png")
    finally:
        ui.terminate()
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ui.kill()


def _answers(url: str) -> bool:
    import urllib.request

    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def _having(text: str, *wanted: str) -> str | None:
    return text if all(w in text for w in wanted) else None


def _expand(browser: Browser) -> bool:
    """Child runs sit under their parent: expand the parent row once it is there."""
    if "trial-000" not in browser.text():
        browser.evaluate(
            "document.querySelectorAll('.ag-row button[data-component-id*=\"runnamecellrenderer\"]')"
            ".forEach(b => b.click())"
        )
    return "trial-000" in browser.text()
