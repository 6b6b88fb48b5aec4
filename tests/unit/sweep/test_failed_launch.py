"""Issue 24, state: a launch refused for a store or folder it cannot write, or failing after it
created its records, leaves nothing half made, and the same command, corrected, starts the sweep.

The sweep itself is not run (that is Ray's, in tests/integration): `_run` is replaced by a stop
that proves the launch got there, with its study, parent run and sweep.json made."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import optuna
import pytest

from asha_tune.cli import main
from asha_tune.sweep import single
from asha_tune.sweep.settings import SWEEP_FILE
from asha_tune.tracking import Tracker
from asha_tune.tracking.records import find_parent
from tests.helpers.data import make_synthetic_pacs
from tests.helpers.mlflow import mlflow_store

NAME = "s1"


class Started(BaseException):
    """The launch reached the sweep's run: everything before it was created."""


def started(*args: object, **kwargs: object) -> None:
    raise Started


@pytest.fixture
def stores(tmp_path, monkeypatch) -> dict[str, str]:
    monkeypatch.setattr(single, "_run", started)
    data = make_synthetic_pacs(tmp_path / "pacs", per_class=1, size=8)
    return {
        "--results-dir": str(tmp_path / "results"),
        "--tracking-uri": mlflow_store(tmp_path / "mlflow.db"),
        "--study-url": f"sqlite:///{tmp_path / 'optuna.db'}",
        "--cache-dir": str(tmp_path / "cache"),
        "--data-root": str(data),
    }


def launch(flags: dict[str, str], *extra: str) -> int:
    argv = ["launch", "--space", "quickstart", "--name", NAME, "--device", "cpu", *extra]
    for flag, value in flags.items():
        argv += [flag, value]
    return main(argv)


def studies(url: str) -> list[str]:
    if not Path(url.removeprefix("sqlite:///")).exists():
        return []
    return [s.study_name for s in optuna.get_all_study_summaries(url)]


def assert_nothing_made(flags: dict[str, str]) -> None:
    assert NAME not in studies(flags["--study-url"])
    assert not (Path(flags["--results-dir"]) / NAME).exists()
    tracker = Tracker(flags["--tracking-uri"])
    with pytest.raises(Exception, match="no sweep"):
        find_parent(tracker, NAME)


def assert_started(flags: dict[str, str], *extra: str) -> None:
    with pytest.raises(Started):
        launch(flags, *extra)
    assert NAME in studies(flags["--study-url"])
    assert (Path(flags["--results-dir"]) / NAME / SWEEP_FILE).is_file()
    assert find_parent(Tracker(flags["--tracking-uri"]), NAME)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize(
    ("flag", "bad", "said"),
    [
        (
            "--results-dir",
            "{file}/results",
            r"--results-dir \S+ cannot be written \(\S+ is a file, not a folder\)",
        ),
        (
            "--results-dir",
            "/proc/asha-tune-results",
            r"--results-dir /proc/asha-tune-results cannot be written",
        ),
        ("--tracking-uri", "foo://bar", r"MLflow cannot open the store foo://bar \(MLflow takes no such URI"),
        ("--tracking-uri", "sqlite:///{file}/mlflow.db", r"--tracking-uri sqlite:///\S+ cannot be written"),
        (
            "--tracking-uri",
            "sqlite:////proc/x/mlflow.db",
            r"--tracking-uri sqlite:////proc/x/mlflow.db cannot be",
        ),
        ("--study-url", "sqlite:///{file}/optuna.db", r"--study-url sqlite:///\S+ cannot be written"),
        (
            "--study-url",
            "foo://bar",
            r"cannot open Optuna storage foo://bar \(no database driver takes this URL",
        ),
        ("--cache-dir", "{file}/cache", r"--cache-dir \S+ cannot be written \(\S+ is a file, not a folder\)"),
    ],
)
def test_a_store_that_cannot_be_written_is_refused_before_anything_is_made(
    tmp_path, stores, capsys, flag, bad, said
):
    (tmp_path / "a-file").write_text("")
    refused = {**stores, flag: bad.format(file=tmp_path / "a-file")}
    assert launch(refused) == 2
    line = one_error_line(capsys)
    assert re.search(said, line), line
    assert_nothing_made(stores)
    assert_started(stores)  # the same command, corrected


def test_a_launch_failing_after_its_records_are_made_removes_them(stores, monkeypatch, capsys):
    def full(self: Tracker, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Tracker, "log_dict", full)  # the parent run exists when its space is logged
    assert launch(stores) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert_nothing_made(stores)
    monkeypatch.undo()
    monkeypatch.setattr(single, "_run", started)
    assert_started(stores)


def test_a_study_left_without_its_sweep_is_refused_and_kept_by_restart(stores, capsys):
    from asha_tune.spaces import load_space
    from asha_tune.sweep.study import create_study

    create_study(stores["--study-url"], NAME, load_space("quickstart"))  # an older asha-tune's leftover
    assert launch(stores) == 2
    line = one_error_line(capsys)
    assert f"a study named {NAME} is in" in line
    assert "--restart" in line
    assert_started(stores, "--restart")
    assert f"{NAME}.attempt-1" in studies(stores["--study-url"])
