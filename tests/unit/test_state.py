"""Issue 24, state: saved state that is damaged, paths that cannot be written, stores that cannot
be opened, and the CLI's last line of defence; each refused in one line naming what is wrong,
before anything is recorded, and nothing already recorded lost."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from asha_tune import cli, defaults, files
from asha_tune.cli import main
from asha_tune.errors import ConfigError
from asha_tune.files import folder_problem, write_atomic, write_problem
from asha_tune.runner import run_logged_trial
from asha_tune.tracking.tags import STATUS_TAG
from asha_tune.trial.config import TrialConfig
from tests.helpers.mlflow import mlflow_store

TINY = {
    "data": {"targets": ["cartoon"], "image_size": 32},
    "train": {"epochs": 2, "batch_size": 8, "weights": "none"},
}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0], err
    return err[0]


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


# --- saved state that is damaged ----------------------------------------------------------------

DAMAGED = {
    "empty": (b"", "it is empty"),
    "cut short": (b'{"name": "s1", "space": {', "it is not whole JSON"),
    "not text": ('{"name": "é"}'.encode("latin-1"), "it is not text"),
    "another version": (
        b'{"name": "s1", "layout": 3}',
        "it does not hold what this version of asha-tune writes",
    ),
}


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_sweep_json_is_named_with_what_to_do(tmp_path, capsys, content):
    saved, said = content
    (tmp_path / "results" / "s1").mkdir(parents=True)
    (tmp_path / "results" / "s1" / "sweep.json").write_bytes(saved)
    assert main(["resume", "s1", "--results-dir", str(tmp_path / "results")]) == 2
    line = one_error_line(capsys)
    assert f"{tmp_path / 'results' / 's1' / 'sweep.json'} is damaged: {said}" in line
    assert "--restart" in line
    assert "JSONDecodeError" not in line
    assert "validation error" not in line


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_cluster_json_is_named_with_what_to_do(tmp_path, capsys, content):
    saved, said = content
    (tmp_path / "cluster.json").write_bytes(saved)
    assert main(["cluster", "status", "--dir", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert f"{tmp_path / 'cluster.json'} is damaged: {said}" in line
    assert "cluster up" in line


def test_a_write_that_fails_keeps_the_old_file_whole_and_no_half_copy(tmp_path, monkeypatch):
    path = tmp_path / "sweep.json"
    write_atomic(path, "old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError):
        write_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["sweep.json"]


# --- folders that cannot be written -------------------------------------------------------------


def test_asking_whether_a_folder_can_be_written_leaves_nothing_behind(tmp_path):
    assert folder_problem(tmp_path / "a" / "b") is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("{file}/x", "{file} is a file, not a folder"),
        ("/proc/asha-tune-x", "no folder can be created at /proc/asha-tune-x"),
    ],
)
def test_a_folder_that_cannot_be_written_says_why(tmp_path, where, said):
    (tmp_path / "f").write_text("")
    problem = folder_problem(Path(where.format(file=tmp_path / "f")))
    assert problem is not None
    assert problem.text == said.format(file=tmp_path / "f")
    assert not problem.full


def test_a_full_disk_is_told_apart_so_the_fix_is_to_free_space():
    assert write_problem(OSError(errno.ENOSPC, "No space left on device")).full
    assert not write_problem(OSError(errno.EROFS, "Read-only file system")).full


# --- a trial: nothing recorded it cannot finish -------------------------------------------------


def test_a_trial_whose_checkpoint_cannot_be_written_is_refused_before_its_run(tmp_path, tiny_runtime):
    (tmp_path / "f").write_text("")
    uri = mlflow_store(tmp_path / "mlflow.db")
    config = TrialConfig.model_validate(TINY)
    with pytest.raises(
        ConfigError, match=r"^--checkpoint \S+ cannot be written \(\S+ is a file, not a folder\)"
    ):
        run_logged_trial(config, tiny_runtime, tracking_uri=uri, checkpoint=tmp_path / "f" / "c.pt")
    assert all_runs(uri) == []


def test_a_checkpoint_write_that_fails_mid_trial_ends_its_run_resumable(tmp_path, tiny_runtime, monkeypatch):
    from asha_tune import runner

    real = runner.save_checkpoint

    def fills(state: dict, path: Path) -> None:  # the disk fills after epoch 1's checkpoint
        if path.exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        real(state, path)

    monkeypatch.setattr(runner, "save_checkpoint", fills)
    uri = mlflow_store(tmp_path / "mlflow.db")
    with pytest.raises(runner.CheckpointWriteError) as err:
        run_logged_trial(
            TrialConfig.model_validate(TINY), tiny_runtime, tracking_uri=uri, checkpoint=tmp_path / "c.pt"
        )
    assert "after epoch 2 (its file system is full)" in str(err.value)
    assert "--resume" in str(err.value)
    (run,) = all_runs(uri)
    assert run.info.status != "RUNNING"
    assert run.data.tags[STATUS_TAG] == "interrupted"


def test_weights_that_are_not_a_torch_file_are_refused_before_a_run(tmp_path):
    from asha_tune.sweep.preflight import check_trial_weights

    (tmp_path / "w.pt").write_bytes(b"not weights at all")
    config = TrialConfig.model_validate(
        {**TINY, "train": {**TINY["train"], "weights": str(tmp_path / "w.pt")}}
    )
    with pytest.raises(ConfigError, match="it is not a file torch.save wrote"):
        check_trial_weights(config)


# --- stores and servers -------------------------------------------------------------------------


def test_ui_on_a_store_mlflow_cannot_open_is_one_line_exit_2(capsys):
    assert main(["ui", "--tracking-uri", "foo://bar"]) == 2
    assert "MLflow cannot open the store foo://bar (MLflow takes no such URI" in one_error_line(capsys)


def test_ui_on_a_port_in_use_is_one_line_exit_2(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        assert main(["ui", "--tracking-uri", uri, "--port", str(port)]) == 2
    assert f"--port {port}: 127.0.0.1:{port} is taken" in one_error_line(capsys)


@pytest.mark.parametrize("command", ["compare", "report"])
def test_unknown_sweeps_are_named_and_no_store_is_made(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    assert main([command, "nope"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"asha-tune {command}: error: no sweep nope: none in ")
    assert not (tmp_path / defaults.TRACKING_DB).exists()


@pytest.mark.parametrize("command", ["compare", "report"])
def test_an_out_that_cannot_be_written_is_refused_before_reading(tmp_path, capsys, command):
    (tmp_path / "f").write_text("")
    out = tmp_path / "f" / "out"
    assert main([command, "nope", "--out", str(out), "--tracking-uri", mlflow_store(tmp_path / "m.db")]) == 2
    assert f"--out {out} cannot be written ({tmp_path / 'f'} is a file, not a folder)" in one_error_line(
        capsys
    )


# --- the last line of defence -------------------------------------------------------------------


def test_an_unexpected_error_is_one_line_and_its_traceback_a_file(monkeypatch, capsys):
    def bug(args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "cmd_spaces", bug)
    monkeypatch.delenv(defaults.DEBUG_ENV, raising=False)
    assert main(["spaces"]) == 1
    line = one_error_line(capsys)
    assert line.startswith(
        "asha-tune spaces: error: unexpected RuntimeError: boom (the full traceback is in "
    )
    log = Path(line.split("the full traceback is in ")[1].split(";")[0])
    try:
        assert "Traceback" in log.read_text()
        assert "RuntimeError: boom" in log.read_text()
    finally:
        log.unlink()
    monkeypatch.setenv(defaults.DEBUG_ENV, "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(["spaces"])


def test_output_cut_short_by_its_reader_ends_quietly():
    """`asha-tune spaces | head`: the reader is gone before the listing is written."""
    child = subprocess.Popen(
        [sys.executable, "-m", "asha_tune.cli", "spaces"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, defaults.SPACES_ENV: ""},
    )
    assert child.stdout is not None
    assert child.stderr is not None
    child.stdout.close()
    err = child.stderr.read().decode()
    child.wait(timeout=120)
    assert err == ""
    assert child.returncode == 1
