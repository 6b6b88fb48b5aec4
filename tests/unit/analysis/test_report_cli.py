"""`asha-tune report` through the CLI's main, on hand-made MLflow records (real sqlite stores, no
Ray): the page it writes says what compare says, compare writes the same page beside its outputs
and logs it, and what one page cannot answer is one line and exit 2."""

from __future__ import annotations

import html as markup
import re

import pytest
from mlflow.tracking import MlflowClient

from asha_tune.cli import main
from asha_tune.spaces import load_space
from asha_tune.sweep import SweepSettings
from asha_tune.trial.config import Runtime
from tests.helpers import records
from tests.helpers.mlflow import mlflow_store
from tests.helpers.records import Trial


def fixed(configuration: str, mode: str, acc: float, status: str = "completed") -> Trial:
    return Trial(
        {"configuration": configuration},
        status=status,
        epochs=[{"acc_cartoon": acc - 5, "acc_cartoon_se": 1.0}, {"acc_cartoon": acc, "acc_cartoon_se": 1.0}],
        params={"shaping.mode": mode, "device": "cpu"},
    )


def searched(p0: float, acc: float, status: str = "completed") -> Trial:
    return Trial(
        {"shaping.p0": p0, "shaping.convs": [1]},
        status=status,
        epochs=[]
        if status == "failed"
        else [{"acc_cartoon": acc - 2, "val_acc": acc - 12}, {"acc_cartoon": acc, "val_acc": acc - 10}],
        params={"shaping.mode": "random", "shaping.p0": str(p0), "shaping.convs": "[1]"},
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    uri = mlflow_store(tmp / "mlflow.db")
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(tmp / "art").as_uri())
    grid_space = load_space("paper_grid", ["search.only=[baseline,da-c4-cartoon]"]).model_dump(mode="json")
    grid = [
        [fixed("baseline", "baseline", 50.0), fixed("da-c4-cartoon", "target", 52.0)],
        [fixed("baseline", "baseline", 51.0), fixed("da-c4-cartoon", "target", 54.0)],
        [fixed("baseline", "baseline", 49.0), fixed("da-c4-cartoon", "target", 56.0)],
    ]
    records.replicated(client, experiment, "grid", grid_space, grid, algorithm="list", metric="acc_cartoon")
    space = load_space(
        "quickstart", ["selection.protocol=oracle", "scheduler.metric=acc_cartoon"]
    ).model_dump(mode="json")
    search = [
        [searched(0.3, 60.0), searched(0.7, 64.0), searched(0.5, 0.0, status="failed")],
        [searched(0.4, 62.0), searched(0.8, 66.0)],
        [searched(0.2, 61.0), searched(0.6, 68.0)],
    ]
    records.replicated(client, experiment, "search", space, search, metric="acc_cartoon")
    honest = records.parent(client, experiment, "honest", space, protocol="source_val")
    records.trials(client, experiment, honest, [searched(0.5, 60.0)])
    records.parent(client, experiment, "empty", space)
    failed = records.parent(client, experiment, "broken", space)
    records.trials(client, experiment, failed, [searched(0.5, 0.0, status="failed")])
    return tmp, uri


def test_report_writes_one_page_with_compares_verdict(store, tmp_path, capsys, monkeypatch):
    _, uri = store
    monkeypatch.chdir(tmp_path)
    assert main(["report", "grid", "search", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    # search 64, 66, 68 against grid 52, 54, 56: +12.00, SE of the difference 1.63
    verdict = (
        "target cartoon · selection oracle (oracle: selected on the data it reports (optimistic)): "
        "search beats grid: +12.00 points, beyond two standard errors of the difference (2·SE = 3.27) "
        "at 3 replicates"
    )
    assert out.splitlines()[0] == verdict
    page = tmp_path / "report-grid+search.html"
    assert re.search(r"written to .*report-grid\+search\.html \(\d+\.\d MB; opens offline", out)
    html = page.read_text()
    assert verdict in html
    assert 'data-tone="beats"' in html
    # the DomainBed-style table
    assert "grid&#39;s winner (grid)" in html
    assert "54.0 ± 1.2 (n=3)" in html
    # the failed trial, marked
    assert "<td>failed</td>" not in html
    assert 'data-tone="bad">failed</td>' in html
    assert "published best: 63.95 % (da-c4-cartoon; paper, selected by oracle)" in html

    # compare says the same sentence, and writes the same page beside its outputs, logged on its run
    assert (
        main(["compare", "grid", "search", "--tracking-uri", uri, "--out", "cmp", "--importances", "none"])
        == 0
    )
    text = capsys.readouterr().out
    assert f"  {verdict}" in text
    assert verdict in (tmp_path / "cmp" / "report.html").read_text()
    run_id = re.search(r"MLflow comparison run (\w+)", text).group(1)
    assert "report.html" in {a.path for a in MlflowClient(uri).list_artifacts(run_id)}


def test_a_single_sweep_and_a_chosen_out_file(store, tmp_path, capsys):
    _, uri = store
    out = tmp_path / "pages" / "honest.html"
    assert main(["report", "honest", "--tracking-uri", uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()[0]
    assert printed.startswith(
        "honest: target cartoon · selection source_val, each replicate's winner by val_acc"
    )
    assert out.is_file()
    assert printed in markup.unescape(out.read_text())


@pytest.mark.parametrize(
    ("names", "line"),
    [
        ([], "name at least one sweep: asha-tune report SWEEP"),
        (["nope"], "no sweep named nope in sqlite:///"),
        (
            ["grid", "honest"],
            "these sweeps select under different protocols (grid by oracle, honest by source_val)",
        ),
        (["empty"], "sweep empty has no ended trial: nothing to report"),
        (["broken"], "every trial of sweep broken failed (1): nothing to report"),
    ],
    ids=["none", "unknown", "protocols", "empty", "all-failed"],
)
def test_what_one_page_cannot_answer_is_one_line_and_exit_2(
    names, line, store, tmp_path, capsys, monkeypatch
):
    _, uri = store
    monkeypatch.chdir(tmp_path)
    assert main(["report", *names, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert line in err[0], err
    assert not list(tmp_path.glob("*.html"))  # no page written


def test_sweeps_from_two_stores_are_one_line_and_exit_2(store, tmp_path, capsys):
    tmp, uri = store
    results = tmp_path / "results"
    for name, where in (("grid", uri), ("other", f"sqlite:///{tmp_path / 'other.db'}")):
        SweepSettings(
            name=name,
            space=load_space("quickstart"),
            results_dir=results,
            tracking_uri=where,
            study_url=f"sqlite:///{tmp_path / 'optuna.db'}",
            runtime=Runtime(),
        ).save()
    assert main(["report", "grid", "other", "--results-dir", str(results)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "the sweeps were recorded in different stores (grid in sqlite:///" in err[0], err
    assert "a report reads one store" in err[0]


def test_a_ui_url_must_be_a_web_address(store, tmp_path, capsys):
    _, uri = store
    assert (
        main(
            [
                "report",
                "grid",
                "--tracking-uri",
                uri,
                "--ui-url",
                "javascript:alert(1)",
                "--out",
                str(tmp_path / "r.html"),
            ]
        )
        == 2
    )
    assert (
        "--ui-url javascript:alert(1): give the MLflow UI's http:// or https:// address"
        in capsys.readouterr().err
    )
