"""Spaces that list explicit configurations (the paper's hand-made grid, confirmation runs)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest

from asha_tune.cli import main
from asha_tune.spaces import domain_choices, load_space
from asha_tune.sweep.study import StudyHandle, create_study

LISTED = """
name: listed
data: {targets: [cartoon], image_size: 32}
train: {epochs: 3, weights: none}
selection: oracle
configurations:
  - id: base
    values: {shaping.mode: baseline}
    published: {acc_cartoon: 54.82}
    source: paper, Table 2
  - id: rand-c1
    values: {shaping.mode: random, shaping.convs: [1], shaping.p0: 0.7}
    published: {acc_cartoon: 61.63, acc_sketch: 52.3}
  - id: da-c4-sketch
    values: {shaping.mode: target, shaping.convs: [4], data.targets: [sketch]}
  - id: bn
    values: {shaping.mode: bn_only}
    note: not in the paper
"""


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_list_runs_each_configuration_once_to_full_budget(tmp_path):
    space = load_space(write(tmp_path, LISTED))
    # implied by the list
    assert space.search.algorithm == "list"
    assert space.scheduler.kind == "fifo"
    assert space.num_trials == 4
    assert space.grid() == [{"configuration": i} for i in ("base", "rand-c1", "da-c4-sketch", "bn")]
    da = space.trial_config({"configuration": "da-c4-sketch"})
    assert (da.shaping.mode, da.shaping.convs, da.data.targets) == ("target", [4], ["sketch"])
    assert da.train.batch_size == 256  # the mode's own default still applies
    rand = space.trial_config({"configuration": "rand-c1"})
    # the fixed section's target
    assert rand.shaping.p0 == 0.7
    assert rand.data.targets == ["cartoon"]
    assert domain_choices(space) == {"art_painting", "cartoon", "sketch"}  # what preflight checks


def test_configurations_cross_with_grid_parameters_and_only_filters_them(tmp_path):
    text = LISTED + "parameters:\n  train.seed: {type: grid, values: [1, 2]}\n"
    space = load_space(write(tmp_path, text), ["search.only=[rand-*, bn]"])
    assert space.grid() == [
        {"configuration": "rand-c1", "train.seed": 1},
        {"configuration": "rand-c1", "train.seed": 2},
        {"configuration": "bn", "train.seed": 1},
        {"configuration": "bn", "train.seed": 2},
    ]
    assert space.num_trials == 4
    seeds = [space.trial_config(v).train.seed for v in space.grid()]
    assert seeds == [1, 2, 1, 2]


def test_the_dry_run_prints_each_configuration_with_its_published_figures(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, LISTED)
    assert main(["launch", "--space", str(path), "--only", "rand-*", "--only", "bn", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "configurations: 2 listed, each to full budget: 2 trials x 3 epochs = 6 epochs" in out
    assert "rand-c1: shaping.mode=random, shaping.convs=[1], shaping.p0=0.7" in out
    assert "published: acc_cartoon 61.63, acc_sketch 52.3" in out
    assert "bn: shaping.mode=bn_only  [not in the paper]" in out
    # filtered out
    assert "base:" not in out
    assert "da-c4-sketch" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


BAD = [
    (
        "early stopping on a list",
        LISTED + "scheduler: {kind: asha}\n",
        "scheduler.kind: listed configurations all run to full budget; use fifo",
    ),
    ("an id twice", edit(LISTED, "id: bn\n", "id: base\n"), "configurations: id base is listed twice"),
    (
        "an unknown setting",
        edit(LISTED, "{shaping.mode: bn_only}", "{shaping.mode: bn_only, shaping.pzero: 1}"),
        "configurations: bn: shaping.pzero is not a trial setting",
    ),
    (
        "the same trial twice",
        edit(LISTED, "{shaping.mode: bn_only}", "{shaping.mode: baseline}"),
        "configurations: base and bn are the same trial; list it once",
    ),
    (
        "a configuration that is not a trial",
        edit(LISTED, "shaping.p0: 0.7}", "shaping.p0: 1.5}"),
        "configurations.rand-c1: shaping.p0: p0 1.5 is outside [0, 1)",
    ),
    (
        "a filter matching nothing",
        LISTED + "search: {only: [nothing*]}\n",
        "search.only: 'nothing*' matches no configuration (ids: base, rand-c1, da-c4-sketch, bn)",
    ),
    (
        "a list without configurations",
        "name: x\nsearch: {algorithm: list}\nscheduler: {kind: fifo}\n",
        "configurations: search.algorithm list runs the configurations listed here, and only it does",
    ),
    (
        "configurations under another algorithm",
        LISTED + "search: {algorithm: grid}\n",
        "configurations: search.algorithm list runs the configurations listed here, and only it does",
    ),
    (
        "a setting both listed and searched",
        LISTED + "parameters:\n  shaping.mode: {type: grid, values: [baseline]}\n",
        "configurations: base: shaping.mode is also a parameter",
    ),
]


@pytest.mark.parametrize(("what", "text", "line"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_list_exits_2_with_one_line(what, text, line, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--space", str(write(tmp_path, text)), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert line in err[0], err


def test_the_study_hands_out_the_configurations_in_order(tmp_path):
    space = load_space(write(tmp_path, LISTED))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study(url, "s", space)
    handle = StudyHandle(url, "s", space)
    asked = [handle.ask(f"ray-{i}", known=set(range(i)))[1] for i in range(4)]
    assert asked == space.grid()
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t.params["configuration"] for t in trials] == ["base", "rand-c1", "da-c4-sketch", "bn"]
