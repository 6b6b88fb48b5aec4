"""A selection protocol is one record (registry.ProtocolInfo), and every output that names a protocol
takes its words from it: the dry run, a run's tags, compare's text, tables and CSV, the replicated
report, the figures and `--help`. Checked for every registered protocol and for two made-up ones
registered here only (an honest one and one that selects on the data it reports, like oracle): a
protocol added to the registry shows up everywhere, and an oracle-like one is marked wherever its
figures are shown."""

from __future__ import annotations

import csv
import re
from dataclasses import fields, replace
from pathlib import Path

import matplotlib
import pytest
import yaml

from asha_tune.analysis import matters, plots, render, tables
from asha_tune.analysis.answers import answers, report_text
from asha_tune.analysis.curves import compare
from asha_tune.cli import main
from asha_tune.tracking.records import Sweep, TrialRecord, TrialRun
from asha_tune.tracking.tags import SELECTION_IMAGES_TAG, SELECTION_METRIC_TAG
from asha_tune.tracking.trials import selection_metric_text, trial_tags
from asha_tune.trial import registry, selection
from asha_tune.trial.config import TrialConfig
from asha_tune.trial.registry import ProtocolInfo, selection_label
from asha_tune.trial.score_info import SCORE_INFO

HONEST = ProtocolInfo(
    "made up for the contract test: dummy images select, the targets are only reported",
    selected_on="dummy-picked images",
    note="selected on dummy-picked images; the dummy's own footnote",
    images="dummy images of {source}; none of {targets}",
    val_acc="accuracy on the dummy's held-out images",
    described="dummy images of {sources} ({held}) select; {targets} only reported",
    reads_target_labels=False,
    split="source",
)
ORACLE_LIKE = replace(
    HONEST,
    summary="made up for the contract test: the reported images select",
    selected_on="the dummy's reported images",
    note="selected on the dummy's reported images (like oracle)",
    images="labelled dummy images of {targets}: the reported ones",
    described="the whole of {targets} selects and is reported (dummy)",
    reads_target_labels=True,
    selects_on_reported=True,
    caveat="a dummy's caveat",
    split="",
)
DUMMIES = {"dummy_honest": HONEST, "dummy_oracle": ORACLE_LIKE}
PROTOCOLS = [*registry.SELECTION_PROTOCOLS, *DUMMIES]
SOURCES, TARGET = ["art_painting", "photo"], "cartoon"  # two sources: lodo needs them
TEXTS = ("summary", "selected_on", "note", "images", "val_acc", "described")


@pytest.fixture(autouse=True)
def _dummies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The made-up protocols, registered for one test: a record and the split behind it."""
    for name, info in DUMMIES.items():
        monkeypatch.setitem(registry.SELECTION_PROTOCOLS, name, info)
        monkeypatch.setitem(selection.PROTOCOLS, name, selection.PROTOCOLS["source_val"])


def described(protocol: str) -> str:
    info = registry.SELECTION_PROTOCOLS[protocol]
    return info.described.format(
        sources=", ".join(SOURCES),
        targets=TARGET,
        held="20% per class of each source domain, split seed 0",
        score=SCORE_INFO[info.score].summary if info.score else "",
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_protocol_has_every_field_and_they_agree(protocol):
    info = registry.SELECTION_PROTOCOLS[protocol]
    assert {f.name for f in fields(info)} >= set(TEXTS)
    for name in TEXTS:
        assert isinstance(getattr(info, name), str), name
        assert getattr(info, name).strip(), name
    # The templates take only the names their callers give.
    assert set(re.findall(r"{(\w*)}", info.images)) <= {"source", "targets"}
    assert set(re.findall(r"{(\w*)}", info.described)) <= {"sources", "targets", "held", "score"}
    if info.selects_on_reported:  # it holds nothing out and reads the labels it reports
        assert not info.holds_out
        assert info.reads_target_labels
        assert info.caveat
    if info.score is not None:  # label-free: its score exists, and no target label is read
        assert info.score in SCORE_INFO
        assert not info.reads_target_labels
        assert registry.scored_by(info.score) == protocol
    if info.folds:
        assert info.holds_out
    assert selection.label_free(protocol) == (SCORE_INFO[info.score] if info.score else None)


def test_the_paper_protocol_selects_on_the_data_it_reports_and_is_a_trials_default():
    assert registry.selects_on_reported(registry.PAPER_PROTOCOL)
    assert TrialConfig().selection.protocol == registry.PAPER_PROTOCOL


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_dry_run_says_what_selects(protocol, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = {
        "name": "contract",
        "data": {"source": SOURCES, "targets": [TARGET], "image_size": 32},
        "train": {"epochs": 2},
        "shaping": {"mode": "random", "convs": [1]},
        "selection": protocol,
        "search": {"algorithm": "random", "num_trials": 2},
        "parameters": {"shaping.p0": {"type": "float", "low": 0.0, "high": 0.9}},
    }
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(space))
    assert main(["launch", "--space", str(path), "--dry-run"]) == 0
    assert f"selection: {protocol}: {described(protocol)}; the scheduler" in capsys.readouterr().out


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_runs_tags_say_which_images_selected_and_what_val_acc_is(protocol):
    info = registry.SELECTION_PROTOCOLS[protocol]
    config = TrialConfig.model_validate(
        {"data": {"source": SOURCES, "targets": [TARGET]}, "selection": protocol}
    )
    tags = trial_tags(config)
    assert tags[SELECTION_IMAGES_TAG] == info.images.format(source=", ".join(SOURCES), targets=TARGET)
    assert tags[SELECTION_METRIC_TAG]
    assert (
        selection_metric_text(protocol, "val_acc", "max")
        == f"val_acc (max: higher is better): {info.val_acc}"
    )


def trial_run(number: int, acc: float, p0: float) -> TrialRun:
    values = {"shaping.p0": p0, "shaping.convs": [1]}
    metrics = {
        "val_acc": 50.0 + number,
        "acc_cartoon": acc,
        "acc_cartoon_se": 1.0,
        **{f"{score}_cartoon": 0.5 + 0.1 * number for score in SCORE_INFO},
    }
    record = TrialRecord(number, f"run{number}", "completed", 2, values, metrics)
    return TrialRun(record, 1000 + number, 3.0, None, {"cartoon": 2344}, "random", values)


def replicates(protocol: str) -> list[Sweep]:
    """Two replicates of one search, each of two trials."""
    return [
        Sweep(
            f"s.r{r}",
            f"p{r}",
            "1",
            protocol,
            "optuna",
            [trial_run(0, 60.0 + r, 0.1), trial_run(1, 62.0 + r, 0.5)],
            {},
            family="s",
            replicate=r,
        )
        for r in (0, 1)
    ]


def svg_text(draw, path: Path) -> str:
    """The text a figure writes (SVG, its text kept as text)."""
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        draw(path)
    return path.read_text()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_compares_text_tables_csv_and_figures_name_it_and_mark_an_oracle_like_one(protocol, tmp_path):
    info = registry.SELECTION_PROTOCOLS[protocol]
    oracle_like = info.selects_on_reported
    label, noted = selection_label(protocol), selection_label(protocol, caveat=True)
    assert label == f"{protocol}: selected on {info.selected_on}"
    assert noted == label + (f" ({info.caveat})" if oracle_like else "")
    sweeps = replicates(protocol)
    comparison = compare(sweeps)
    found = answers(sweeps)

    text = render.report_text(comparison)
    mark = f" ({noted})" if oracle_like else ""
    assert f"  s.r0: optuna search, replicate 0 of s, selection {protocol}{mark}, 2 trials ended" in text
    assert f"== target cartoon · selection {noted} ==" in text

    text = render.answers_text(found)
    mark = f" ({label})" if oracle_like else ""
    assert f"target cartoon · selection {protocol}{mark}, each replicate's winner by" in text
    assert f"selection {protocol}{mark}, each" in report_text("s", sweeps)

    md, tex = tables.markdown(found.tables[protocol]), tables.latex(found.tables[protocol])
    dagger = "†" if oracle_like else ""
    assert f"| s's winner (search) | {protocol}{dagger} |" in md
    assert f"- {dagger}{protocol}: {info.note}." in md
    name, dagger = tables.latex_escape(protocol), r"$^\dagger$" if oracle_like else ""
    assert f" & {name}{dagger} & " in tex
    assert f"{dagger}{name}: {tables.latex_escape(info.note)}." in tex

    path = tmp_path / "compare.csv"
    render.write_csv(render.csv_rows(comparison) + render.answers_rows(found), path)
    with path.open() as f:
        assert {row["protocol"] for row in csv.DictReader(f)} >= {protocol}

    (group,) = comparison.groups
    figure = svg_text(lambda p: plots.best_so_far(group, p), tmp_path / "best.svg")
    assert f"target cartoon · {label}" in figure
    assert f"s.r0 (selection {protocol})" in figure
    points = [matters.Point(t.settings, t.record.metrics["val_acc"]) for t in sweeps[0].trials]
    figure = svg_text(lambda p: matters.slice_plot(points, "val_acc", protocol, p), tmp_path / "slice.svg")
    assert f"val_acc ({label}; higher is better)" in figure
    figure = svg_text(lambda p: matters.heat_map(points, "val_acc", protocol, p), tmp_path / "heat.svg")
    assert f"val_acc ({label}; higher is better)" in figure


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_trial_help_lists_it_with_what_selects(protocol, monkeypatch, capsys):
    info = registry.SELECTION_PROTOCOLS[protocol]
    monkeypatch.setenv("COLUMNS", "2000")  # no help text wrapped
    with pytest.raises(SystemExit):
        main(["trial", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    flag = text.split("--selection SELECTION ", 1)[1].split(" --selection-epoch", 1)[0]
    assert f"{protocol} ({info.selected_on}" in flag
    fraction = text.split("--val-fraction VAL_FRACTION held-out fraction per class for ", 1)[1].split(" (")[0]
    assert (protocol in fraction.split(", ")) == bool(info.split)


def test_a_protocol_no_longer_registered_is_read_as_its_sweep_recorded_it():
    """A past sweep's records may name a protocol since removed: its figures still print."""
    assert selection_label("gone") == "gone: selected as its sweep records"
    assert not registry.selects_on_reported("gone")
    assert selection.label_free("gone") is None
    assert tables.protocol_note("gone") == "selected as its sweep records"
    assert selection.target_selection("gone", TARGET, "val_acc", "max") == ("val_acc", "max")
