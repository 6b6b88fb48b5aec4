"""The CLI: `asha-tune trial` flag errors and real trials through the command; sweep exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asha_tune.cli import main

CLI = [sys.executable, "-m", "asha_tune.cli"]


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    return subprocess.run(
        CLI + args,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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


def test_corrupt_image_is_one_line_and_the_run_is_marked_failed(synthetic_pacs, tmp_path):
    (synthetic_pacs / "cartoon" / "dog" / "zz_broken.jpg").write_bytes(b"garbage")
    out = run_cli(
        [
            "trial",
            "--data-root",
            str(synthetic_pacs),
            "--cache-dir",
            str(tmp_path / "c"),
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--weights",
            "none",
            "--no-progress",
        ],
        tmp_path,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("asha-tune trial: error: cannot read image ")
    assert "cartoon/dog/zz_broken.jpg" in out.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("asha-tune-trials").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["asha_tune.status"] == "failed"
    assert "cannot read image" in run.data.tags["asha_tune.failure"]


def test_real_pacs_trial_end_to_end_through_the_cli(pacs_root, shared_cache, tmp_path):
    out = run_cli(
        [
            "trial",
            "--mode",
            "random",
            "--convs",
            "1",
            "--p0",
            "0.7",
            "--source",
            "art_painting",
            "--target",
            "cartoon,sketch",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--image-size",
            "64",
            "--limit-per-domain",
            "84",
            "--weights",
            "none",
            "--seed",
            "0",
            "--device",
            "cpu",
        ],
        tmp_path,
        env={"ASHA_TUNE_DATA_ROOT": str(pacs_root), "ASHA_TUNE_CACHE_DIR": str(shared_cache)},
    )
    assert out.returncode == 0, out.stderr
    assert "epoch 2/2" in out.stderr  # the per-epoch progress bar
    run_id = out.stdout.split("MLflow run ")[1].split(";")[0]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the embedded default store
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["asha_tune.status"] == "completed"
    params = run.data.params
    assert params["shaping.mode"] == "random" and params["shaping.convs"] == "[1]"
    assert params["shaping.p0"] == "0.7" and params["data.targets"] == '["cartoon", "sketch"]'
    assert params["data.limit_per_domain"] == "84"
    for metric in ("acc_cartoon", "acc_sketch", "target_acc", "train_loss", "source_acc"):
        history = client.get_metric_history(run_id, metric)
        assert sorted(m.step for m in history) == [1, 2], metric
        assert all(0 <= m.value <= 100 for m in history) or metric == "train_loss"
    final = run.data.metrics["final_acc_cartoon"]
    assert final == client.get_metric_history(run_id, "acc_cartoon")[-1].value
    se = run.data.metrics["acc_cartoon_se"]
    assert f"acc_cartoon {final:.1f} ± {se:.1f}% (n = {int(params['n_cartoon']):,}; chance " in out.stdout
    checkpoint = Path(out.stdout.strip().split("checkpoint ")[-1])
    assert checkpoint.exists()
    stored = json.loads(Path(run.info.artifact_uri.removeprefix("file://"), "trial_config.json").read_text())
    assert stored["shaping"]["p0"] == 0.7


def test_cli_resume_after_sigkill_continues_the_same_run(synthetic_pacs, tmp_path):
    args = [
        "trial",
        "--data-root",
        str(synthetic_pacs),
        "--cache-dir",
        str(tmp_path / "c"),
        "--image-size",
        "32",
        "--epochs",
        "6",
        "--weights",
        "none",
        "--no-progress",
        "--checkpoint",
        str(tmp_path / "ck.pt"),
        "--resume",
    ]
    proc = subprocess.Popen(CLI + args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "ck.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from asha_tune.trial.training import load_checkpoint

    done = load_checkpoint(tmp_path / "ck.pt")["epoch"]
    assert 1 <= done < 6
    out = run_cli(args, tmp_path)
    assert out.returncode == 0, out.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("asha-tune-trials").experiment_id])
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "target_acc")]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]  # one run, every epoch once
    assert run.info.status == "FINISHED"


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
    assert len(err) == 1 and "all 2 trials failed" in err[0]
    assert "asha-tune launch --space quickstart --name s1 --restart" in err[0]


def test_p0_zero_schedule_trains(tiny_runtime):
    # `--p0 0:0` once crashed with ZeroDivisionError: it is the constant schedule p0 = 0.
    from asha_tune.trial.training import run_trial

    from .conftest import tiny_config

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
