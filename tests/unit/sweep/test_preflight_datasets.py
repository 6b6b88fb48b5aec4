"""A data root checked against its dataset's layout before anything starts or is recorded, by
`asha-tune trial` and `asha-tune launch` alike: each problem one line naming it, exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from asha_tune.cli import main
from tests.helpers.data import ODD_CLASSES, ODD_DOMAINS, make_domains, make_synthetic_pacs
from tests.helpers.processes import tagged_processes

FOLDER = {"dataset": "folder", "source": ["Real World", "clipart"], "image_size": 32}


@pytest.fixture
def work(tmp_path, monkeypatch, process_tag) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    yield folder
    assert tagged_processes(process_tag, "raylet") == []  # no Ray was started


def space(tmp_path: Path, data: dict, selection: str = "source_val") -> Path:
    path = tmp_path / "space.yaml"
    tree = {
        "name": "layout",
        "data": data,
        "train": {"epochs": 1, "weights": "none"},
        "selection": selection,
        "search": {"num_trials": 1},
        "resources": {"cpu": 1},
        "parameters": {"train.lr": {"type": "float", "low": 0.001, "high": 0.01}},
    }
    path.write_text(yaml.safe_dump(tree, allow_unicode=True))
    return path


def trial_args(data: dict) -> list[str]:
    args = ["trial", "--dataset", data["dataset"], "--source", ",".join(data["source"]), "--image-size", "32"]
    if "targets" in data:
        args += ["--target", ",".join(data["targets"])]
    return [*args, "--weights", "none", "--epochs", "1", "--no-progress"]


def errors(args: list[str], work: Path, capsys) -> list[str]:
    """Run the command in an empty folder: exit 2, and the error lines it printed (nothing written)."""
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith(f"asha-tune {args[0]}: error: ") for line in lines), lines
    assert list(work.iterdir()) == []  # no MLflow store, no checkpoint, no results folder
    return [line.split(": error: ", 1)[1] for line in lines]


def both(root: Path, data: dict, tmp_path: Path, work: Path, capsys) -> list[list[str]]:
    """The lines `asha-tune trial` and `asha-tune launch` give for the same data."""
    by_trial = errors([*trial_args(data), "--data-root", str(root)], work, capsys)
    by_launch = errors(
        ["launch", "--space", str(space(tmp_path, data)), "--data-root", str(root)], work, capsys
    )
    return [by_trial, by_launch]


def odd(tmp_path: Path) -> Path:
    return make_domains(tmp_path / "odd")


CASES = {
    "a class missing from one domain": (
        lambda r: shutil.rmtree(r / "sketch" / "grand chat"),
        "class folder {r}/sketch/grand chat is missing (the other domains of {r} have it)",
    ),
    "class sets that differ": (
        lambda r: (shutil.rmtree(r / "sketch" / "bird"), shutil.rmtree(r / "réel" / "grand chat")),
        "domains of {r} hold different class folders: réel lacks grand chat; sketch lacks bird",
    ),
    "an empty class": (
        lambda r: [p.unlink() for p in (r / "réel" / "bird").iterdir()],
        "class folder {r}/réel/bird has no images",
    ),
    "an empty domain": (
        lambda r: (shutil.rmtree(r / "sketch"), (r / "sketch").mkdir()),
        "domain folder {r}/sketch has no class folders (an empty domain)",
    ),
    "two domains one metric name": (
        lambda r: (shutil.copytree(r / "sketch", r / "a+b"), shutil.copytree(r / "sketch", r / "a&b")),
        "domains 'a&b' and 'a+b' would both report as acc_a_b",
    ),
}


@pytest.mark.parametrize(("damage", "message"), list(CASES.values()), ids=list(CASES))
def test_each_folder_layout_error_is_one_line_before_anything_starts(damage, message, tmp_path, work, capsys):
    root = odd(tmp_path)
    damage(root)
    expected = message.format(r=root)
    for lines in both(root, FOLDER, tmp_path, work, capsys):
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"data root {root}: "), lines
        assert expected in lines[0], lines


def test_an_unknown_folder_domain_is_named_with_those_the_root_has(tmp_path, work, capsys):
    root = odd(tmp_path)
    for lines in both(root, {**FOLDER, "targets": ["moon"]}, tmp_path, work, capsys):
        assert lines == [
            f"data root {root}: unknown domain 'moon': {root} has {', '.join(sorted(ODD_DOMAINS))}"
        ]


def test_a_missing_domain_of_a_named_layout_says_what_the_root_should_hold(tmp_path, work, capsys):
    root = tmp_path / "office_home"
    for domain in ("Art", "Clipart"):
        for c in range(65):
            (root / domain / f"k{c}").mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(root / domain / f"k{c}" / "0.png")
    data = {
        "dataset": "office_home",
        "source": ["Art", "Clipart"],
        "targets": ["Real World"],
        "image_size": 32,
    }
    for lines in both(root, data, tmp_path, work, capsys):
        assert lines == [
            f"data root {root} does not hold the office_home domain(s) Real World "
            "(expected Art/, Clipart/, Product/, Real World/ in it)"
        ]


def test_every_problem_is_its_own_line(tmp_path, work, capsys):
    root = make_synthetic_pacs(tmp_path / "pacs")
    shutil.rmtree(root / "cartoon" / "dog")
    shutil.rmtree(root / "photo" / "horse")
    data = {"dataset": "pacs", "source": ["art_painting", "cartoon"], "targets": ["photo"]}
    for lines in both(root, data, tmp_path, work, capsys):
        assert lines == [
            f"data root {root}: class folder {root}/cartoon/dog is missing",
            f"data root {root}: class folder {root}/photo/horse is missing",
        ]


def test_a_folder_subset_below_its_class_count(tmp_path, work, capsys):
    root = odd(tmp_path)
    lines = errors([*trial_args(FOLDER), "--limit-per-domain", "2", "--data-root", str(root)], work, capsys)
    assert lines == [f"data.limit_per_domain 2 is below the {len(ODD_CLASSES)} classes of {root}"]


def test_the_preflight_gives_each_domains_fingerprint_and_a_changed_file_changes_it(tmp_path):
    """What the launch records as the data it read (DATA_FINGERPRINT_TAG): one fingerprint per
    domain, equal for equal files, another when a file of that domain is rewritten."""
    from asha_tune.sweep.preflight import data_problems, fingerprint_text
    from asha_tune.trial.config import DataConfig

    root = make_synthetic_pacs(tmp_path / "pacs", per_class=2, size=16)
    data = DataConfig(targets=["cartoon"])
    first: dict[str, str] = {}
    assert data_problems(data, root, {"art_painting", "cartoon"}, False, None, first) == []
    assert sorted(first) == ["art_painting", "cartoon"]
    again: dict[str, str] = {}
    data_problems(data, root, {"art_painting", "cartoon"}, False, None, again)
    assert again == first
    image = next((root / "cartoon" / "dog").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")  # another size: another file
    changed: dict[str, str] = {}
    data_problems(data, root, {"art_painting", "cartoon"}, False, None, changed)
    assert changed["art_painting"] == first["art_painting"]
    assert changed["cartoon"] != first["cartoon"]
    assert fingerprint_text(first) == f"art_painting {first['art_painting']}, cartoon {first['cartoon']}"
