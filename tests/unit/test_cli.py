"""The CLI: `asha-tune trial` flag errors and real trials through the command; sweep exit codes."""

from __future__ import annotations

import sys

import pytest

from asha_tune.cli import main

CLI = [sys.executable, "-m", "asha_tune.cli"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "random", "--convs", "1", "--p0", "1"], "--p0: p0 1.0 is outside [0, 1)"),
        (
            ["--mode", "random", "--convs", "13", "--p0", "0.5"],
            "--convs: downsampling conv 13: allowed convs are 1,2,3,4,5,6,7,9,10,11,12,14,15,16,17,19,20",
        ),
        (["--mode", "random", "--convs", "25", "--p0", "0.5"], "--convs: unknown conv 25"),
        (["--mode", "random", "--convs", "1,x", "--p0", "0.5"], "--convs: cannot read conv list '1,x'"),
        (["--mode", "random", "--convs", "1", "--p0", "abc"], "--p0: cannot read p0 'abc'"),
        (
            ["--mode", "sideways"],
            "--mode: Input should be 'baseline', 'random', 'target' or 'bn_only' (got 'sideways')",
        ),
        (
            ["--shape-fn", "cube", "--mode", "random", "--convs", "1", "--p0", "0.1"],
            "--shape-fn: Input should be",
        ),
        (
            ["--mode", "target", "--convs", "4", "--target", "cartoon,sketch"],
            "mode target adapts to one target domain per trial",
        ),
        (
            ["--target", "moon"],
            "--target: Input should be 'art_painting', 'cartoon', 'photo' or 'sketch' (got 'moon')",
        ),
        (["--epochs", "0"], "--epochs: Input should be greater than or equal to 1 (got '0')"),
        (["--image-size", "big"], "--image-size: Input should be a valid integer"),
        (["--lr", "-1"], "--lr: Input should be greater than 0"),
        (
            ["--topk-fraction", "2", "--mode", "random", "--convs", "1", "--p0", "0.1", "--shape-fn", "topk"],
            "--topk-fraction: Input should be less than or equal to 1",
        ),
        (["--data-root", "/no/such/pacs"], "--data-root /no/such/pacs: no such folder"),
        (["--dataset", "officehome"], "--dataset: Input should be 'pacs', 'folder', 'vlcs', 'office_home'"),
        (["--source", "art_painting,moon"], "--source: Input should be 'art_painting', 'cartoon'"),
        (
            ["--source-sampling", "even"],
            "--source-sampling: Input should be 'union' or 'balanced' (got 'even')",
        ),
        (["--selection", "lodo"], "selection lodo leaves one source domain out in turn: it needs two"),
        (["--data-budget", "lots"], "--data-budget: cannot read a size from 'lots'"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        code = main(["trial", *args])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("asha-tune trial: error: ")
    assert message in err[0]
    assert not (tmp_path / "mlflow.db").exists()  # nothing started, nothing recorded


def test_missing_data_root_from_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASHA_TUNE_DATA_ROOT", raising=False)
    assert main(["trial"]) == 2  # a usage error, as a nonexistent data root is
    assert capsys.readouterr().err.strip() == (
        "asha-tune trial: error: no data root: pass --data-root or set ASHA_TUNE_DATA_ROOT to the PACS folder"
    )


def test_sweep_exit_status(capsys):
    from types import SimpleNamespace

    from asha_tune.cli import sweep_exit

    trial = lambda status: SimpleNamespace(status=status)  # noqa: E731
    settings = SimpleNamespace(name="s1", space=SimpleNamespace(name="quickstart"))
    outcome = lambda finished, *statuses: SimpleNamespace(  # noqa: E731
        finished=finished, trials=[trial(s) for s in statuses], settings=settings
    )
    assert sweep_exit(outcome(True, "failed", "pruned")) == 0
    assert sweep_exit(outcome(False, "completed")) == 130
    assert sweep_exit(outcome(True, "failed", "failed")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "all 2 trials failed" in err[0]
    assert "asha-tune launch --space quickstart --name s1 --restart" in err[0]


def test_p0_zero_schedule_trains(tiny_runtime):
    # `--p0 0:0` once crashed with ZeroDivisionError: it is the constant schedule p0 = 0.
    from asha_tune.trial.training import run_trial
    from tests.helpers.data import tiny_config

    config = tiny_config(shaping={"mode": "random", "convs": [1, 7], "p0": "0:0"}, train={"epochs": 1})
    assert config.shaping.p0_per_conv() == {1: 0.0, 7: 0.0}
    assert len(run_trial(config, tiny_runtime).history) == 1


def test_every_sweep_flag_has_help(capsys):
    for command in ("launch", "resume", "trial"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "--device {auto,cpu,cuda}" in text
        assert "where trials compute: auto (CUDA if present, else CPU)" in text
    with pytest.raises(SystemExit):
        main(["resume", "--help"])
    text = capsys.readouterr().out
    for flag in ("--data-root", "--cache-dir", "--num-cpus", "--num-gpus", "--resource-wait"):
        assert flag in text  # resume takes launch's runtime options


def test_the_help_takes_its_numbers_and_names_from_the_constants(capsys, monkeypatch):
    """The head watch's limit, the autoscaler wait and the importance evaluators: the help says
    what the code does because it reads the same constants (changed here, the help follows)."""
    from asha_tune import defaults
    from asha_tune.sweep.importance import EVALUATORS

    assert tuple(EVALUATORS) == defaults.IMPORTANCE_EVALUATORS
    monkeypatch.setattr(defaults, "HEAD_LOST_S", 45.0)
    monkeypatch.setattr(defaults, "AUTOSCALER_WAIT_S", 600.0)
    monkeypatch.setattr(defaults, "IMPORTANCE_EVALUATORS", ("fanova", "ped_anova"))
    with pytest.raises(SystemExit):
        main(["launch", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "answering for 45 s ($ASHA_TUNE_HEAD_LOST_S)" in text
    assert "waits up to 600 s" in text
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--importances {fanova,ped_anova,none}" in text
    assert "(default fanova)" in text


def test_trial_flags_name_the_dataset_its_sources_and_their_sampling(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from tests.helpers.data import make_domains
    from tests.helpers.mlflow import mlflow_store

    root = make_domains(tmp_path / "odd")
    uri = mlflow_store(tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    args = ["--dataset", "folder", "--source", "clipart,Real World", "--target", "sketch"]
    args += ["--source-sampling", "balanced", "--selection", "lodo", "--data-budget", "1KiB"]
    args += [
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--weights",
        "none",
        "--device",
        "cpu",
    ]
    args += [
        "--data-root",
        str(root),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--tracking-uri",
        uri,
        "--no-progress",
    ]
    assert main(["trial", *args]) == 0
    captured = capsys.readouterr()
    assert "(selection lodo)" in captured.out
    assert "asha-tune trial: data path: images streamed from the disk cache: " in captured.err
    assert "exceed the 1.0 KiB budget" in captured.err
    (run,) = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("asha-tune-trials").experiment_id]
    )
    params = run.data.params
    assert (params["data.dataset"], params["data.source_sampling"], params["selection.protocol"]) == (
        "folder",
        "balanced",
        "lodo",
    )
    assert params["data.source"] == '["Real World", "clipart"]'
    assert params["data_path"] == "stream"
    assert params["n_val"] == str(15 + 16)  # lodo: each left-out source whole
