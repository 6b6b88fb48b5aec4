"""`asha-tune compare` on replicated searches (hand-made MLflow records, real sqlite stores, real
Optuna studies for the importances): replicate-level figures, a search against the grid and a
warm start against a cold search, the selection gap, the table as Markdown and LaTeX, the slice
plot and heat map, importances of the study's objective; all logged on the comparison run."""

from __future__ import annotations

import json
import re

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from PIL import Image

from asha_tune.cli import main
from asha_tune.spaces import load_space
from asha_tune.sweep.study import StudyHandle, create_study
from asha_tune.tracking.tags import COMPARED_IN_TAG, STUDY_URL_TAG, WARM_START_ADDED_TAG, WARM_START_TAG
from tests.helpers import records
from tests.helpers.records import Trial

SEARCH = [
    "selection.protocol=oracle",
    "scheduler.metric=acc_cartoon",
    "search.algorithm=random",
    "search.num_trials=6",
]


def fixed(
    configuration: str, mode: str, acc: float, p0: float | None = None, convs: list[int] | None = None
) -> Trial:
    params = {"shaping.mode": mode}
    if p0 is not None:
        params.update({"shaping.p0": str(p0), "shaping.convs": json.dumps(convs)})
    return Trial(
        {"configuration": configuration},
        epochs=[{"acc_cartoon": acc - 5}, {"acc_cartoon": acc}],
        params=params,
    )


def searched(handle: StudyHandle, i: int) -> Trial:
    """A trial asked from a real study and told its value: 40 + 20·p0, entropy falling with p0."""
    number, values = handle.ask(f"ray-{i}", known=set())
    value = 40.0 + 20.0 * values["shaping.p0"]
    handle.report(number, 1, value - 1)
    handle.report(number, 2, value)
    handle.tell(number, TrialState.COMPLETE, value)
    params = {
        "shaping.mode": "random",
        "shaping.p0": str(values["shaping.p0"]),
        "shaping.convs": json.dumps(values["shaping.convs"]),
    }
    ent = 1.5 - values["shaping.p0"]
    return Trial(
        values,
        epochs=[
            {"acc_cartoon": value - 1, "entropy_cartoon": ent},
            {"acc_cartoon": value, "entropy_cartoon": ent},
        ],
        params=params,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replicated")
    uri, study_url = f"sqlite:///{tmp / 'mlflow.db'}", f"sqlite:///{tmp / 'optuna.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(tmp / "art").as_uri())
    grid_space = load_space("paper_grid", ["search.only=[baseline,rand-c1-p0.7,da-c4-cartoon]"]).model_dump(
        mode="json"
    )
    grid = [
        [
            fixed("baseline", "baseline", 50.0),
            fixed("rand-c1-p0.7", "random", 55.0, 0.7, [1]),
            fixed("da-c4-cartoon", "target", 60.0),
        ],
        [
            fixed("baseline", "baseline", 52.0),
            fixed("rand-c1-p0.7", "random", 58.0, 0.7, [1]),
            fixed("da-c4-cartoon", "target", 56.0),
        ],
    ]
    records.replicated(client, experiment, "G", grid_space, grid, algorithm="list")
    space = load_space("quickstart", SEARCH)
    per = []
    for r in range(2):
        create_study(study_url, f"S.r{r}", space)
        handle = StudyHandle(study_url, f"S.r{r}", space)
        per.append([searched(handle, i) for i in range(6)])
    records.replicated(
        client, experiment, "S", space.model_dump(mode="json"), per, study_url=study_url, metric="acc_cartoon"
    )
    warm = [
        Trial(
            {"shaping.p0": 0.5, "shaping.convs": [1]}, epochs=[{"acc_cartoon": 57.0}, {"acc_cartoon": 58.0}]
        )
    ]
    records.trials(
        client,
        experiment,
        records.parent(
            client,
            experiment,
            "W",
            space.model_dump(mode="json"),
            metric="acc_cartoon",
            tags={WARM_START_TAG: "G", WARM_START_ADDED_TAG: "2", STUDY_URL_TAG: study_url},
        ),
        warm,
    )
    return tmp, uri


def test_compare_gives_replicate_level_answers_tables_plots_and_importances(store, capsys, monkeypatch):
    tmp, uri = store
    monkeypatch.chdir(tmp)
    out = tmp / "cmp"
    assert main(["compare", "G", "S", "W", "--tracking-uri", uri, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # the grid's winners: r0 da-c4-cartoon 60, r1 rand-c1-p0.7 58: 59 ± 1
    assert "acc_cartoon 59.00 ± 1.00 (mean ± SE over 2 replicates; sd 1.41)" in text
    assert "configurations that won: da-c4-cartoon (1 of 2), rand-c1-p0.7 (1 of 2)" in text
    assert re.search(r"target cartoon · selection oracle .*: S (beats|against) G: [+-]\d+\.\d\d points", text)
    assert (
        "W against G: -1.00 points, not separable at 1 and 2 replicates: one replicate measures no spread"
        in text
    )
    assert "== a warm-started search against a cold one (same rule) ==" in text
    assert "W against S:" in text
    # entropy falls with p0 as the accuracy rises: selecting on it picks the oracle's winner, gap 0
    assert (
        "S · target cartoon · entropy (by entropy_cartoon): 0.00 ± 0.00 points (mean ± SE over 2 replicates"
        in text
    )
    assert "| baseline (no shaping) | none | 51.0 ± 1.0 (n=2) | 51.0 ± 1.0 (n=2) |" in text
    assert (
        "parameter importances of S.r0, S.r1 (ped_anova; 12 trials, final values of full-budget trials; "
        in text
    )
    assert "objective acc_cartoon (max; selection oracle), the study's own" in text
    files = {p.name for p in out.iterdir()}
    assert {
        "table_oracle.md",
        "table_oracle.tex",
        "slice_cartoon_oracle.png",
        "heat_cartoon_oracle.png",
        "importances_S.txt",
        "importances_S.json",
    } <= files
    assert "importances_G.txt" not in files  # a grid's study enqueues its configurations: nothing to rank
    importances = json.loads((out / "importances_S.json").read_text())
    assert list(importances["importances"])[0] == "shaping.p0"  # the value is 40 + 20·p0
    for png in ("slice_cartoon_oracle.png", "heat_cartoon_oracle.png"):
        with Image.open(out / png) as image:
            image.load()
            assert image.size[0] > 300
    assert r"\begin{tabular}" in (out / "table_oracle.tex").read_text()
    run_id = re.search(r"MLflow comparison run (\w+)", text).group(1)
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.metrics["replicated.G.oracle.acc_cartoon"] == 59.0
    assert run.data.metrics["replicated.G.oracle.acc_cartoon_se"] == pytest.approx(1.0)
    assert run.data.metrics["selection_gap.S.cartoon.entropy"] == 0.0
    logged = {a.path for a in client.list_artifacts(run_id)}
    assert {"table_oracle.md", "table_oracle.tex", "importances_S.txt", "slice_cartoon_oracle.png"} <= logged
    families = client.search_runs([run.info.experiment_id], "tags.`asha_tune.sweep` = 'S'")
    assert families[0].data.tags[COMPARED_IN_TAG] == run_id  # the replicated search links to it too


def test_importances_can_be_left_out_and_a_search_with_too_few_trials_says_why(store, capsys, monkeypatch):
    tmp, uri = store
    monkeypatch.chdir(tmp)
    assert (
        main(["compare", "W", "--tracking-uri", uri, "--out", str(tmp / "w"), "--importances", "none"]) == 0
    )
    assert "parameter importances" not in capsys.readouterr().out
    assert (
        main(["compare", "S", "--tracking-uri", uri, "--out", str(tmp / "s"), "--importances", "fanova"]) == 0
    )
    assert "(fanova; 12 trials" in capsys.readouterr().out
