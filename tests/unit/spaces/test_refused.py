"""What a space, a `--set` value or a launch flag may not be, a test per class of bad input: each
is refused in one line that names the file and line, or the field, the value and what is
allowed, with exit status 2, before anything starts (issue 24)."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import pytest
import yaml

from asha_tune.cli import main
from asha_tune.errors import ConfigError
from asha_tune.spaces import PACKAGE_SPACES, load_space
from asha_tune.spaces.loading import MAX_DEPTH, MAX_SPACE_BYTES
from asha_tune.spaces.params import MAX_TRIALS
from asha_tune.trial.config import SEED_LIMIT

VALID = """\
name: t
description: a small valid space
data: {targets: [cartoon], image_size: 32}
train: {epochs: 4, weights: none}
shaping: {mode: random}
search: {algorithm: optuna, num_trials: 4}
scheduler: {kind: asha, grace_period: 1}
parameters:
  shaping.convs: {type: conv_subset, allowed: [1, 2, 3, 4], min_size: 1, max_size: 2}
  shaping.p0: {type: float, low: 0.0, high: 0.9}
"""


def edited(change: dict) -> str:
    """VALID with `section/field` paths set (a parameter's name is one segment)."""
    tree = yaml.safe_load(VALID)
    for path, value in change.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = copy.deepcopy(value)
    return yaml.safe_dump(tree, sort_keys=False)


def refused(args: list[str], capsys: pytest.CaptureFixture[str], command: str = "launch") -> str:
    """Run the CLI in-process; it must exit 2 with one line, which is returned."""
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code  # type: ignore[assignment]
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    assert err[0].startswith(f"asha-tune {command}: error: "), err
    return err[0]


def launch_refuses(tmp_path: Path, data: bytes | str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    line = refused(["launch", "--space", str(path), *extra, "--dry-run"], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # nothing written
    return line


# --- 1. files that are not UTF-8 or not plain YAML -------------------------------------------------

NOT_PLAIN = [
    (
        "Latin-1",
        VALID.replace("valid", "café").encode("latin-1"),
        "space.yaml: not UTF-8 text (byte 0xe9 at line 2,",
    ),
    (
        "Windows-1252",
        VALID.replace("a small", "“a small”").encode("cp1252"),
        "space.yaml: not UTF-8 text (byte 0x93 at line 2, column 14;",
    ),
    ("UTF-16", VALID.encode("utf-16"), "space.yaml: UTF-16 text: save it as UTF-8"),
    ("UTF-16 big-endian", b"\xfe\xff" + VALID.encode("utf-16-be"), "space.yaml: UTF-16 text"),
    (
        "a list as a key",
        VALID + "? [a, b]\n: 3\n",
        "space.yaml: malformed YAML at line 11, column 3: a list as a key: a key is a plain name",
    ),
    (
        "a mapping as a key",
        VALID.replace("train: {epochs: 4, weights: none}", "train: {{epochs: 4}: 30}"),
        "space.yaml: malformed YAML at line 4, column 9: a mapping as a key",
    ),
    (
        "5,000 nested flow lists",
        VALID + "colour: " + "[" * 5000 + "]" * 5000 + "\n",
        f"space.yaml: malformed YAML at line 11, column {MAX_DEPTH + 8}: nested more than {MAX_DEPTH} levels",
    ),
    (
        "mappings nested 900 deep",
        VALID + "colour:\n" + "".join(" " * (i + 1) + "k:\n" for i in range(900)) + " " * 901 + "v\n",
        f"nested more than {MAX_DEPTH} levels deep",
    ),
    (
        "a control character",
        VALID + "note: a\x01b\n",
        "space.yaml: malformed YAML at line 11, column 8: non-printable character U+0001 is not allowed",
    ),
    ("a NUL byte", VALID + "note: a\x00b\n", "at line 11, column 8: non-printable character U+0000"),
    (
        "a 5,000-digit integer",
        VALID.replace("epochs: 4", "epochs: " + "9" * 5000),
        "line 4, column 17: cannot read",
    ),
    (
        "a date that is none",
        VALID + "note: 2001-13-45\n",
        "line 11, column 7: cannot read '2001-13-45' as timestamp",
    ),
]


@pytest.mark.parametrize(("what", "data", "line"), NOT_PLAIN, ids=[c[0] for c in NOT_PLAIN])
def test_a_file_that_is_not_utf8_or_plain_yaml_is_one_line_naming_file_and_line(
    what, data, line, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    message = launch_refuses(tmp_path, data, capsys)
    assert f"error: {tmp_path / 'space.yaml'}: " in message, message
    assert line in message, message
    assert "<unicode string>" not in message
    assert "position" not in message


def test_a_byte_order_mark_is_still_utf8(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    assert load_space(path).name == "t"


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("{[1]: 2}", "cannot read value '{[1]: 2}': a list as a key"),
        ("{{a: 1}: 2}", "a mapping as a key"),
        ("[" * 5000 + "]" * 5000, f"nested more than {MAX_DEPTH} levels deep"),
        ("a\x00b", "non-printable character U+0000 is not allowed"),
    ],
)
def test_a_set_value_of_the_same_shapes_is_one_line(value, line, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = launch_refuses(tmp_path, VALID, capsys, "--set", f"train.epochs={value}")
    assert message.startswith("asha-tune launch: error: --set train.epochs=")
    assert line in message


def test_spaces_lists_the_good_files_and_one_line_per_bad_one(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "spaces"
    folder.mkdir()
    (folder / "good.yaml").write_text(VALID)
    (folder / "latin.yaml").write_bytes(VALID.replace("valid", "café").encode("latin-1"))
    (folder / "broken.yaml").write_text("name: [\n")
    (folder / "nested.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    monkeypatch.setenv("ASHA_TUNE_SPACES", str(folder))
    monkeypatch.chdir(tmp_path)
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out.splitlines()
    lines = {line.split()[0]: line for line in out if line and not line.startswith(" ")}
    assert "a small valid space" in lines["good"]
    assert f"latin{' ' * 12}unreadable: {folder / 'latin.yaml'}: not UTF-8 text (byte 0xe9" in lines["latin"]
    assert f"unreadable: {folder / 'broken.yaml'}: malformed YAML at line 2" in lines["broken"]
    assert "nested more than" in lines["nested"]
    assert "quickstart" in lines  # the shipped spaces after them


def test_space_that_is_a_folder_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = refused(["launch", "--space", str(tmp_path), "--dry-run"], capsys)
    assert f"--space {tmp_path}: a folder, not a space file" in line
    assert "no such file" not in line


# --- 2. sizes nobody meant ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameter", "values", "line"),
    [
        (
            "train.seed",
            {"type": "int", "low": 0, "high": 10**9},
            "parameters.train.seed: its 1,000,000,001 values make a grid of",
        ),
        (
            "shaping.p0",
            {"type": "float", "low": 0.0, "high": 0.9, "step": 1e-9},
            "parameters.shaping.p0: its 900,000,001 values make a grid of",
        ),
    ],
)
def test_a_grid_is_counted_before_it_is_built(parameter, values, line, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parameters = {
        "shaping.convs": {"type": "categorical", "values": [[1]]},
        "shaping.p0": {"type": "float", "low": 0.0, "high": 0.9, "step": 0.3},
        parameter: values,
    }
    text = edited({"search": {"algorithm": "grid"}, "parameters": parameters})
    start = time.monotonic()
    message = launch_refuses(tmp_path, text, capsys)
    assert time.monotonic() - start < 10  # counted, not built (building took minutes, then MemoryError)
    assert line in message
    assert f"a sweep runs at most {MAX_TRIALS:,} trials" in message


def test_the_count_follows_when_conditions_without_building_the_grid(tmp_path):
    """grid_size agrees with the grid it counts, conditions and listed configurations included."""
    text = edited(
        {
            "search": {"algorithm": "grid"},
            "shaping": {},
            "parameters": {
                "shaping.mode": {"type": "grid", "values": ["random", "target"]},
                "shaping.convs": {"type": "conv_subset", "allowed": [1, 2, 3], "max_size": 2},
                "shaping.p0": {
                    "type": "float",
                    "low": 0.1,
                    "high": 0.5,
                    "step": 0.2,
                    "when": {"shaping.mode": "random"},
                },
                "shaping.shape_fn": {
                    "type": "grid",
                    "values": ["raw", "topk"],
                    "when": {"shaping.mode": "target"},
                },
                "shaping.topk_fraction": {
                    "type": "grid",
                    "values": [0.1, 0.2],
                    "when": {"shaping.shape_fn": "topk"},
                },
                "train.seed": {"type": "int", "low": 0, "high": 2},
            },
        }
    )
    (tmp_path / "g.yaml").write_text(text)
    space = load_space(tmp_path / "g.yaml")
    assert space.grid_size() == len(space.grid()) == 6 * (3 + 3) * 3 == space.num_trials
    with pytest.raises(ValueError, match=r"^parameters.train.seed: its 3 values make a grid of 108 "):
        space.grid_size(limit=100)
    tree = yaml.safe_load(Path(PACKAGE_SPACES / "paper_grid.yaml").read_text())
    tree["parameters"] = {"train.seed": {"type": "grid", "values": [0, 1]}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(tree))
    paper = load_space(tmp_path / "p.yaml", ["search.only=[rand-*]"])
    assert (
        paper.grid_size()
        == len(paper.grid())
        == 2 * len(paper.active_configurations)
        < 2 * len(paper.configurations)
    )


def test_a_categorical_longer_than_a_sweep_and_a_file_of_megabytes_are_refused_at_once(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    many = edited({"parameters/train.seed": {"type": "categorical", "values": list(range(MAX_TRIALS + 1))}})
    line = launch_refuses(tmp_path, many, capsys)
    assert f"parameters.train.seed.values: List should have at most {MAX_TRIALS} items" in line
    assert line.endswith("(got [0, 1, 2, 3, 4, 5, 6, 7, ...])")  # the value, shortened
    huge = VALID + "description2: [" + ", ".join(["x"] * (MAX_SPACE_BYTES // 3)) + "]\n"
    start = time.monotonic()
    line = launch_refuses(tmp_path, huge, capsys)
    assert time.monotonic() - start < 5
    assert f"space.yaml: {len(huge):,} bytes; a space file holds at most {MAX_SPACE_BYTES:,}" in line
    line = launch_refuses(tmp_path, edited({"search/num_trials": 10**9}), capsys)
    assert f"search.num_trials: Input should be less than or equal to {MAX_TRIALS}" in line


# --- 3. numbers outside what the libraries take ----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"search/seed": -1}, "search.seed: Input should be greater than or equal to 0 (got -1)"),
        (
            {"train/seed": 2**70},
            f"train.seed: Input should be less than {SEED_LIMIT} (got 1180591620717411303424)",
        ),
        (
            {"selection": {"protocol": "source_val", "split_seed": -3}},
            "selection.split_seed: Input should be greater",
        ),
        (
            {"parameters/train.seed": {"type": "int", "low": 0, "high": 2**40}},
            f"parameters.train.seed: Input should be less than {SEED_LIMIT} (got 1099511627776)",
        ),
        (
            {"parameters/train.batch_size": {"type": "int", "low": 0, "high": 64, "log": True}},
            "parameters.train.batch_size: a log range needs low >= 1 (got low 0)",
        ),
        (
            {"parameters/train.batch_size": {"type": "int", "low": 8, "high": 64, "step": 8, "log": True}},
            "parameters.train.batch_size: a log range cannot have a step",
        ),
    ],
)
def test_numbers_the_libraries_refuse_are_refused_first(change, line, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert line in launch_refuses(tmp_path, edited(change), capsys)


def test_the_seed_limit_is_what_numpy_optuna_and_torch_take():
    """The largest seed a space takes, plus the trials a resumed search adds to its sampler's
    seed (sweep/study.py), seeds Optuna's samplers and numpy; a trial seed seeds torch's
    generators (trial/training.py: seed * 1000 + a stream offset)."""
    import numpy as np
    import optuna
    import torch

    largest = SEED_LIMIT - 1 + MAX_TRIALS
    optuna.samplers.TPESampler(seed=largest)
    np.random.RandomState(largest)
    torch.Generator().manual_seed((SEED_LIMIT - 1) * 1000 + 999)
    with pytest.raises(ValueError):
        np.random.RandomState(-1)  # what search.seed -1 met at run time


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["ui", "--port=99999"], "argument --port: 99999 is not a port number (1 to 65535)"),
        (["ui", "--port=-1"], "argument --port: -1 is not a port number (1 to 65535)"),
        (["ui", "--port=0"], "argument --port: 0 is not a port number"),
        (["ui", "--port=http"], "argument --port: 'http' is not a port number"),
        (
            ["launch", "--space", "quickstart", "--num-cpus=nan"],
            "argument --num-cpus: 'nan' is not a finite number",
        ),
        (
            ["launch", "--space", "quickstart", "--num-gpus=-1"],
            "argument --num-gpus: '-1' is not a finite number",
        ),
        (
            ["resume", "x", "--resource-wait=inf"],
            "argument --resource-wait: 'inf' is not a finite number of 0",
        ),
    ],
)
def test_flags_refuse_numbers_that_are_none_before_anything_starts(args, line, capsys, tmp_path, monkeypatch):
    """`ui --port 99999` printed a traceback and exited 0; Ray met nan CPUs."""
    monkeypatch.chdir(tmp_path)
    assert line in refused(args, capsys, command=args[0])
    assert list(tmp_path.iterdir()) == []


# --- 4. accepted before, and should not be ---------------------------------------------------------

MODE_SEARCHED = {
    "shaping": {},
    "parameters": {
        "shaping.mode": {"type": "categorical", "values": ["random", "target"]},
        "shaping.convs": {"type": "conv_subset", "allowed": [1, 2, 3, 4], "min_size": 1, "max_size": 2},
        "shaping.p0": {"type": "float", "low": 0.0, "high": 0.9, "when": {"shaping.mode": "random"}},
    },
}
NOT_ALLOWED = [
    ("lr infinite", {"train/lr": math.inf}, "train.lr: Input should be a finite number (got inf)"),
    (
        "weight decay NaN",
        {"train/weight_decay": math.nan},
        "train.weight_decay: Input should be a finite number (got nan)",
    ),
    (
        "cpu infinite",
        {"resources": {"cpu": math.inf}},
        "resources.cpu: Input should be a finite number (got inf)",
    ),
    (
        "reduction factor infinite",
        {"scheduler/reduction_factor": math.inf},
        "scheduler.reduction_factor: Input should be a finite number (got inf)",
    ),
    (
        "a range's bound infinite",
        {"parameters/train.lr": {"type": "float", "low": 0.001, "high": math.inf, "log": True}},
        "parameters.train.lr.high: Input should be a finite number (got inf)",
    ),
    (
        "a fixed value infinite",
        {"parameters/train.lr": math.inf},
        "parameters.train.lr: Input should be a finite number (got inf)",
    ),
    (
        "p0 NaN",
        {"shaping": {"mode": "random", "p0": math.nan}, "parameters/shaping.p0": None},
        "p0 nan is outside [0, 1)",
    ),
    (
        "epochs yes",
        {"train/epochs": True},
        "train.epochs: expected a number, got true (YAML reads yes/no/on/off",
    ),
    ("lr on", {"train/lr": True}, "train.lr: expected a number, got true"),
    (
        "a conv true",
        {"parameters/shaping.convs": {"type": "categorical", "values": [[True, 2]]}},
        "expected a number, got true",
    ),
    ("nesterov 1", {"train/nesterov": 1}, "train.nesterov: Input should be a valid boolean (got 1)"),
    (
        "reproducible 'yes'",
        {"search/reproducible": "yes"},
        "search.reproducible: Input should be a valid boolean (got 'yes')",
    ),
    (
        "an increasing p0 schedule",
        {"shaping": {"mode": "random", "p0": {"first": 0.1, "last": 0.7}}, "parameters/shaping.p0": None},
        "shaping.p0: a decreasing p0 schedule needs first >= last (got first 0.1, last 0.7)",
    ),
    (
        "a schedule's ranges that cross",
        {
            "parameters/shaping.p0": None,
            "parameters/shaping.p0.first": {"type": "float", "low": 0.3, "high": 0.9},
            "parameters/shaping.p0.last": {"type": "float", "low": 0.01, "high": 0.5},
        },
        "parameters.shaping.p0.last: a decreasing p0 schedule needs first >= last (got first 0.3, last 0.5)",
    ),
    (
        "a when value never drawn",
        {
            **MODE_SEARCHED,
            "parameters/shaping.p0": {
                "type": "float",
                "low": 0,
                "high": 0.9,
                "when": {"shaping.mode": "randm"},
            },
        },
        "parameters.shaping.p0: when shaping.mode is 'randm', which shaping.mode never takes "
        "(categorical ['random', 'target'])",
    ),
    (
        "a when value out of a range",
        {"parameters/train.lr": {"type": "float", "low": 0.001, "high": 0.01, "when": {"shaping.p0": 2}}},
        "parameters.train.lr: when shaping.p0 is 2, which shaping.p0 never takes (float [0.0, 0.9])",
    ),
    (
        "a conv set in when, read as alternatives",
        {
            "parameters/train.lr": {
                "type": "float",
                "low": 0.001,
                "high": 0.01,
                "when": {"shaping.convs": [1, 2]},
            }
        },
        "when shaping.convs is 1, which shaping.convs never takes (conv subset of [1, 2, 3, 4], size 1..2) "
        "(a list in when means any of its values)",
    ),
    (
        "a when on a parameter listed below",
        {
            "parameters": {
                "train.lr": {"type": "float", "low": 0.001, "high": 0.01, "when": {"shaping.p0": 0.5}},
                "shaping.convs": {"type": "categorical", "values": [[1]]},
                "shaping.p0": {"type": "float", "low": 0.0, "high": 0.9},
            }
        },
        "parameters.train.lr: when refers to shaping.p0, which is listed below it: parameters are drawn in "
        "file order, so train.lr would never be drawn; list shaping.p0 above train.lr",
    ),
    (
        "a when on itself",
        {"parameters/shaping.p0": {"type": "float", "low": 0.0, "high": 0.9, "when": {"shaping.p0": 0.5}}},
        "parameters.shaping.p0: when refers to itself",
    ),
    (
        "train_loss maximised",
        {"scheduler/metric": "train_loss", "scheduler/mode": "max"},
        "scheduler.mode max contradicts scheduler.metric train_loss: lower train_loss is better; use "
        "scheduler.mode: min",
    ),
    (
        "an accuracy minimised",
        {"scheduler/mode": "min"},
        "scheduler.mode min contradicts scheduler.metric val_acc: higher val_acc is better",
    ),
]


@pytest.mark.parametrize(("what", "change", "line"), NOT_ALLOWED, ids=[c[0] for c in NOT_ALLOWED])
def test_a_value_accepted_before_is_refused_naming_field_value_and_rule(
    what, change, line, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    tree = yaml.safe_load(edited({k: v for k, v in change.items() if v is not None}))
    for key in [k for k, v in change.items() if v is None]:
        del tree["parameters"][key.split("/")[1]]
    message = launch_refuses(tmp_path, yaml.safe_dump(tree, sort_keys=False), capsys)
    assert line in message, message


def test_what_the_when_check_leaves_alone(tmp_path):
    """A pinned mode switches the other mode's parameters off (not refused); a metric's direction
    is the default mode; a `when` on None waits for a parameter that was not drawn."""
    pinned = load_space("paper_search", ["shaping.mode=target"])
    assert pinned.parameters["shaping.mode"].describe().startswith("fixed 'target' (pinned")
    text = edited({"scheduler/metric": "train_loss"})
    (tmp_path / "s.yaml").write_text(text)
    assert load_space(tmp_path / "s.yaml").scheduler.mode == "min"
    tree = yaml.safe_load(edited(MODE_SEARCHED))
    tree["parameters"]["train.lr"] = {
        "type": "float",
        "low": 0.001,
        "high": 0.01,
        "when": {"shaping.p0": None},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    assert "train.lr" in load_space(tmp_path / "s.yaml").parameters


LISTED = """\
name: listed
data: {targets: [cartoon], image_size: 32}
train: {epochs: 3, weights: none}
selection: oracle
configurations:
  - id: base
    values: {shaping.mode: baseline}
    published: {FIGURE}
"""


@pytest.mark.parametrize(
    ("figure", "line"),
    [
        (
            "{acc_cartooon: 54.8}",
            "configurations.base.published: acc_cartooon is not an accuracy a trial on pacs reports (one of "
            "acc_art_painting, acc_cartoon, acc_photo, acc_sketch, source_acc, target_acc, val_acc)",
        ),
        (
            "{acc_cartoon: .nan}",
            "configurations.0.published.acc_cartoon: Input should be a finite number (got nan)",
        ),
        (
            "{acc_cartoon: 130}",
            "configurations.0.published.acc_cartoon: Input should be less than or equal to 100",
        ),
        (
            "{acc_cartoon: -1}",
            "configurations.0.published.acc_cartoon: Input should be greater than or equal to 0",
        ),
    ],
)
def test_a_published_figure_is_an_accuracy_a_trial_reports(figure, line, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert line in launch_refuses(tmp_path, LISTED.replace("{FIGURE}", figure), capsys)


@pytest.mark.parametrize("name", ["", "..", ".", ".hidden", "a/b", "../up", "a\x01b", "-flag", "with space"])
def test_a_sweep_name_that_is_not_a_plain_folder_name_is_refused(name, tmp_path, capsys, monkeypatch):
    """`--name ..` wrote sweep.json above --results-dir; `--name ''` got the missing data root's message."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASHA_TUNE_DATA_ROOT", raising=False)
    line = refused(["launch", "--space", "quickstart", f"--name={name}"], capsys)
    assert line.startswith(f"asha-tune launch: error: --name {name!r}: use letters, digits")
    assert list(tmp_path.iterdir()) == []
    line = refused(["launch", "--space", "quickstart", f"--warm-start={name}", "--dry-run"], capsys)
    assert line.startswith(f"asha-tune launch: error: --warm-start {name!r}: use letters, digits")


# --- 6. a dry run checks what a warm start needs of the space ---------------------------------------


def test_a_dry_run_checks_the_warm_start_the_launch_would_refuse(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = refused(["launch", "--space", "paper_grid", "--warm-start", "old", "--dry-run"], capsys)
    assert line == (
        "asha-tune launch: error: --warm-start old: space paper_grid runs a list of configurations, whatever "
        "was run before; warm-start an optuna or random search"
    )
    line = refused(
        ["launch", "--space", "quickstart", "--name", "q", "--warm-start", "q", "--dry-run"], capsys
    )
    assert line.endswith("--warm-start q: a sweep cannot be warm-started from itself")
    assert main(["launch", "--space", "quickstart", "--warm-start", "old", "--dry-run"]) == 0
    assert list(tmp_path.iterdir()) == []


def test_problems_are_config_errors_for_the_python_api(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes(VALID.encode("utf-16"))
    with pytest.raises(ConfigError, match="UTF-16 text"):
        load_space(path)
