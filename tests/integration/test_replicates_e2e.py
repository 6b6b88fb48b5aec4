"""On the CPU with real PACS at small sizes (32 px, random initialisation, 35 images a domain):
two replicates of a three-configuration paper grid and of a small search, a search warm-started
from the replayed grid, and `compare` with importances and the DomainBed-style table, all
through the CLI as a user would run them (real local Ray, sqlite MLflow and Optuna stores).
It demonstrates the tool, not the paper's effect."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from asha_tune.cli import main
from asha_tune.sweep.replicated import replicate_seed
from asha_tune.sweep.study import WARM_START_ATTR
from asha_tune.tracking.tags import (
    COMPARED_IN_TAG,
    KIND_TAG,
    REPLICATE_OF_TAG,
    REPLICATE_SEEDS_TAG,
    REPLICATE_TAG,
    REPLICATES_TAG,
    STATUS_TAG,
    SWEEP_TAG,
    WARM_START_ADDED_TAG,
    WARM_START_TAG,
)
from tests.helpers.browser import needs_chromium, open_offline

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
SEARCH = ["search.num_trials=4", "scheduler.grace_period=1"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, pacs_root, shared_cache):
    tmp = tmp_path_factory.mktemp("replicates")
    common = [
        "--data-root", str(pacs_root), "--cache-dir", str(shared_cache), "--device", "cpu",
        "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--study-url", f"sqlite:///{tmp / 'optuna.db'}",
        "--results-dir", str(tmp / "results"), "--num-cpus", "2",
    ]  # fmt: skip
    sets = [a for s in TINY for a in ("--set", s)]
    only = [a for c in GRID for a in ("--only", c)]
    assert (
        main(
            ["launch", "--space", "paper_grid", *only, *sets, "--replicates", "2", "--name", "grid", *common]
        )
        == 0
    )
    # The cold search runs every trial to the end (fifo), so its pooled study has the full-budget
    # trials importances need; the warm-started one stops trials early (asha), its rungs holding the grid's.
    cold = [a for s in [*SEARCH, "scheduler.kind=fifo"] for a in ("--set", s)]
    assert (
        main(
            [
                "launch",
                "--space",
                "paper_search",
                *sets,
                *cold,
                "--replicates",
                "2",
                "--name",
                "search",
                *common,
            ]
        )
        == 0
    )
    warm = [a for s in SEARCH for a in ("--set", s)]
    assert (
        main(
            [
                "launch",
                "--space",
                "paper_search",
                *sets,
                *warm,
                "--warm-start",
                "grid",
                "--name",
                "warm",
                *common,
            ]
        )
        == 0
    )
    return tmp


def runs(tmp, filter_string: str) -> list:
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()], filter_string)


def test_a_replicated_grid_reruns_its_configurations_with_each_replicates_trial_seed(demo):
    (top,) = runs(demo, f"tags.`{SWEEP_TAG}` = 'grid'")
    assert top.data.tags[REPLICATES_TAG] == "2"
    assert top.data.tags[STATUS_TAG] == "completed"
    replicates = sorted(
        runs(demo, f"tags.mlflow.parentRunId = '{top.info.run_id}'"), key=lambda r: r.data.tags[REPLICATE_TAG]
    )
    assert [
        (r.data.tags[SWEEP_TAG], r.data.tags[KIND_TAG], r.data.tags[REPLICATE_OF_TAG]) for r in replicates
    ] == [
        ("grid.r0", "replicate", "grid"),
        ("grid.r1", "replicate", "grid"),
    ]
    seeds = [0, replicate_seed(0, 1, "trial")]
    assert [r.data.tags[REPLICATE_SEEDS_TAG] for r in replicates] == [f"trial {s}" for s in seeds]
    winners = []
    for replicate, seed in zip(replicates, seeds, strict=True):
        trials = runs(demo, f"tags.mlflow.parentRunId = '{replicate.info.run_id}'")
        assert sorted(t.data.params["configuration"] for t in trials) == sorted(GRID)
        assert {t.data.params["train.seed"] for t in trials} == {str(seed)}
        best = max(
            trials, key=lambda t: (t.data.metrics["acc_cartoon"], -int(t.data.tags["asha_tune.trial_number"]))
        )
        winners.append(best.data.metrics["acc_cartoon"])
    # The report the replicated search logged: each replicate's winner under oracle, mean ± SE.
    assert top.data.metrics["replicated_acc_cartoon"] == pytest.approx(sum(winners) / 2)
    assert top.data.metrics["replicated_acc_cartoon_se"] == pytest.approx(abs(winners[0] - winners[1]) / 2)
    client = MlflowClient(f"sqlite:///{demo / 'mlflow.db'}")
    report = json.loads(open(client.download_artifacts(top.info.run_id, "replicates.json")).read())
    cartoon = next(r for r in report["results"] if r["target"] == "cartoon")
    assert [w["accuracy"] for w in cartoon["winners"]] == winners
    assert {r["target"] for r in report["results"]} == {"cartoon", "sketch", "photo"}


def test_a_replicated_search_samples_with_each_replicates_seeds(demo):
    storage = f"sqlite:///{demo / 'optuna.db'}"
    studies = [optuna.load_study(study_name=f"search.r{r}", storage=storage) for r in (0, 1)]
    assert [len(s.trials) for s in studies] == [4, 4]
    assert [s.user_attrs["space"]["search"]["seed"] for s in studies] == [0, replicate_seed(0, 1, "sampler")]
    assert [t.params for t in studies[0].trials] != [t.params for t in studies[1].trials]


def test_resume_continues_an_unfinished_replicate_and_reports(demo, capsys):
    (replicate,) = runs(demo, f"tags.`{SWEEP_TAG}` = 'grid.r1'")
    client = MlflowClient(f"sqlite:///{demo / 'mlflow.db'}")
    client.set_tag(replicate.info.run_id, STATUS_TAG, "interrupted")  # as a killed driver leaves it
    capsys.readouterr()
    assert main(["resume", "grid", "--results-dir", str(demo / "results"), "--num-cpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "replicate 1 of grid: continuing grid.r1" in out
    assert "sweep grid.r1 has finished (3 trials): nothing to resume" in out
    assert "replicated search grid: 2 replicates (grid.r0, grid.r1), list search, selection oracle" in out
    assert client.get_run(replicate.info.run_id).data.tags[STATUS_TAG] == "completed"
    assert main(["resume", "grid", "--results-dir", str(demo / "results")]) == 0
    assert "replicated search grid has finished: nothing to resume" in capsys.readouterr().out


def test_the_warm_started_search_begins_with_the_grids_trials(demo):
    (top,) = runs(demo, f"tags.`{SWEEP_TAG}` = 'warm'")
    # rand-c1-p0.7 and da-c4-cartoon of both grid replicates; the baseline is no mode paper_search has
    assert top.data.tags[WARM_START_TAG] == "grid"
    assert top.data.tags[WARM_START_ADDED_TAG] == "4"
    study = optuna.load_study(study_name="warm", storage=f"sqlite:///{demo / 'optuna.db'}")
    added = [t for t in study.trials if WARM_START_ATTR in t.user_attrs]
    assert [t.number for t in added] == [0, 1, 2, 3]
    assert {t.user_attrs[WARM_START_ATTR] for t in added} == {
        f"grid.r{r} trial {n}" for r in (0, 1) for n in (1, 2)
    }
    assert all(t.value == t.intermediate_values[2] for t in added)  # the grid's acc_cartoon after 2 epochs
    own = runs(demo, f"tags.mlflow.parentRunId = '{top.info.run_id}'")
    assert sorted(int(r.data.tags["asha_tune.trial_number"]) for r in own) == [4, 5, 6, 7]
    client = MlflowClient(f"sqlite:///{demo / 'mlflow.db'}")
    text = open(client.download_artifacts(top.info.run_id, "warm_start.txt")).read()
    assert text.startswith("warm start: 4 trials added, 2 skipped")
    assert (
        "skipped grid.r0 trial 0: shaping.mode 'baseline' is not one of its choices (random, target)" in text
    )


def test_compare_answers_at_replicate_level_with_importances_and_the_table(demo, capsys, monkeypatch):
    monkeypatch.chdir(demo)
    capsys.readouterr()
    uri = f"sqlite:///{demo / 'mlflow.db'}"
    out_dir = demo / "cmp"
    assert main(["compare", "grid", "search", "warm", "--tracking-uri", uri, "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "grid.r1: replayed grid, replicate 1 of grid" in out
    assert "warm: optuna search, warm-started from grid (4 trials added)" in out
    line = re.search(
        r"target cartoon · selection oracle .*: search (beats|is beaten by|against) grid: .*", out
    )
    assert line, out
    if "against grid" in line.group(0):
        assert "not separable at 2 replicates" in line.group(0)
    assert "warm against grid: " in out
    assert "not separable at 1 and 2 replicates" in out
    assert "== a warm-started search against a cold one (same rule) ==" in out
    for target in ("cartoon", "sketch", "photo"):
        assert re.search(rf"grid · target {target} · entropy \(by entropy_{target}\): -?\d+\.\d\d", out)
    assert "parameter importances of search.r0, search.r1 (ped_anova; 8 trials" in out
    assert "objective acc_cartoon (max; selection oracle), the study's own" in out
    table = (out_dir / "table_oracle.md").read_text()
    assert table.splitlines()[0] == "| configuration | selection | cartoon | photo | sketch | mean |"
    assert "| grid's winner (grid) | oracle† |" in table
    assert "| baseline (no shaping) | none |" in table
    assert "(n=2)" in table
    assert "†oracle: selected on the data it reports" in table
    files = {p.name for p in out_dir.iterdir()}
    assert {
        "table_oracle.tex",
        "slice_cartoon_oracle.png",
        "heat_cartoon_oracle.png",
        "importances_search.json",
    } <= files
    run_id = re.search(r"MLflow comparison run (\w+)", out).group(1)
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert "replicated.grid.oracle.acc_cartoon_se" in run.data.metrics
    assert any(k.startswith("selection_gap.grid.cartoon.") for k in run.data.metrics)
    logged = {a.path for a in client.list_artifacts(run_id)}
    assert {
        "table_oracle.md",
        "table_oracle.tex",
        "importances_search.txt",
        "slice_cartoon_oracle.png",
        "report.html",  # the page, written beside the other outputs
    } <= logged
    (top,) = runs(demo, f"tags.`{SWEEP_TAG}` = 'search'")
    assert top.data.tags[COMPARED_IN_TAG] == run_id


# Once the page's charts are drawn (or could not be): what each figure's holder shows.
DRAWN = """(() => {
  const state = document.body && document.body.getAttribute("data-plots");
  if (!state) return null;
  const plots = [...document.querySelectorAll("[data-figure]")].map(p => ({
    title: p.getAttribute("aria-label"), drawn: p.classList.contains("js-plotly-plot"),
    paths: p.querySelectorAll("svg path").length,
    // what the figure draws: a trace (lines, markers, bars), a heat map, a parallel coordinates' axis
    traces: p.querySelectorAll(".trace, .hm, .parcoords .y-axis").length}));
  return JSON.stringify({state, plots});
})()"""


@needs_chromium
def test_the_report_page_opens_offline_with_the_verdict_tables_and_plots(demo, capsys, monkeypatch):
    monkeypatch.chdir(demo)
    capsys.readouterr()
    page = demo / "report.html"
    uri = f"sqlite:///{demo / 'mlflow.db'}"
    assert main(["report", "grid", "search", "warm", "--tracking-uri", uri, "--out", str(page)]) == 0
    out = capsys.readouterr().out
    verdict = re.search(
        r"^target cartoon · selection oracle .*: search (beats|is beaten by|against) grid: .*$", out, re.M
    )
    assert verdict, out
    assert page.stat().st_size < 5_000_000
    shots = Path(os.environ.get("ASHA_TUNE_SCREENSHOTS", demo))
    shots.mkdir(parents=True, exist_ok=True)
    seen = open_offline(page, DRAWN, shots / "report-page.png")
    assert seen["value"], f"the page never finished drawing: {seen['errors']}"
    drawn = json.loads(seen["value"])
    assert drawn["state"] == "drawn", drawn
    titles = [p["title"] for p in drawn["plots"]]
    assert any(t.startswith("best so far: target cartoon") for t in titles), titles
    assert any(t.startswith("search: parallel coordinates") for t in titles), titles
    assert any(t.startswith("conv × p0") for t in titles), titles
    for plot in drawn["plots"]:  # every chart is drawn, with axes and its traces
        assert plot["drawn"], plot
        assert plot["paths"] > 3, plot
        assert plot["traces"] > 0, plot
    text = seen["text"]
    assert verdict.group(0) in text
    # the DomainBed-style table
    assert "grid's winner (grid)" in text
    assert "(n=2)" in text
    assert "search warm-started from grid" in text
    assert "Provenance" in text
    assert not seen["errors"], seen["errors"]
    assert seen["requests"], seen["requests"]
    assert all(u.startswith(("file://", "data:")) for u in seen["requests"]), seen["requests"]
