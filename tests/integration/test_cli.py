"""The CLI: `asha-tune trial` flag errors and real trials through the command; sweep exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    assert params["shaping.mode"] == "random"
    assert params["shaping.convs"] == "[1]"
    assert params["shaping.p0"] == "0.7"
    assert params["data.targets"] == '["cartoon", "sketch"]'
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
