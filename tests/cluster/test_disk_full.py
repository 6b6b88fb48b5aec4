"""A full disk under --results-dir, on small filesystems this test mounts (tmpfs) and unmounts
itself: launch refuses a disk without room for the sweep's peak in one line; a disk that fills
mid-sweep (a filler file written at once, as another program would) stops the sweep in one line
with every record closed and its trials resumable, and `asha-tune resume` finishes it once the
filler is deleted. MLflow and Optuna keep their stores elsewhere, so they survive. Needs root (to
mount); marked `cluster` (minutes), as the other fault tests. Each test prints its FIGURES.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from asha_tune.spaces import load_space
from asha_tune.sweep.preflight import free_bytes, sweep_bytes
from tests.helpers.processes import wait_for

pytestmark = pytest.mark.cluster

CLI = [sys.executable, "-m", "asha_tune.cli"]
SPACE = {
    "name": "diskfull",
    "data": {"source": "art_painting", "targets": ["cartoon"], "image_size": 32, "limit_per_domain": 70},
    "train": {"epochs": 6, "batch_size": 16, "weights": "none", "seed": 0},
    "shaping": {"mode": "random"},
    "scheduler": {"kind": "fifo"},
    "resources": {"cpu": 1},
    "search": {"algorithm": "random", "num_trials": 2, "max_concurrent": 2, "seed": 0},
    "parameters": {
        "shaping.convs": {"type": "conv_subset", "allowed": [1, 2, 3, 4], "min_size": 1, "max_size": 1},
        "shaping.p0": {"type": "float", "low": 0.1, "high": 0.8},
    },
}
MB = 1_000_000


@contextmanager
def small_filesystem(path: Path, megabytes: int):
    """A tmpfs of that size at `path`, unmounted (with whatever is on it) at the end."""
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


class Work:
    def __init__(self, root: Path, results: Path, pacs_root: Path, cache: Path):
        self.root, self.results, self.pacs_root, self.cache = root, results, pacs_root, cache
        self.space = root / "diskfull.yaml"
        self.space.write_text(yaml.safe_dump(SPACE))

    def stores(self) -> list[str]:  # on the big disk: the records survive the small one
        return [
            *("--tracking-uri", f"sqlite:///{self.root}/mlflow.db"),
            *("--study-url", f"sqlite:///{self.root}/optuna.db"),
        ]

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1", "ASHA_TUNE_CACHE_DIR": str(self.cache)}

    def launch(self, name: str) -> list[str]:
        return [
            *CLI,
            *("launch", "--space", str(self.space), "--name", name, "--device", "cpu", "--num-cpus", "2"),
            *("--data-root", str(self.pacs_root), "--results-dir", str(self.results), *self.stores()),
        ]

    def resume(self, name: str) -> list[str]:
        return [*CLI, "resume", name, "--results-dir", str(self.results)]


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_launch_refuses_a_results_dir_without_room_for_the_sweeps_checkpoints(
    tmp_path, pacs_root, shared_cache
):
    with small_filesystem(tmp_path / "small", 150) as small:
        work = Work(tmp_path, small, pacs_root, shared_cache)
        started = time.monotonic()
        done = subprocess.run(
            work.launch("refused"), env=work.env(), cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        took = time.monotonic() - started
        free = free_bytes(small)
    assert done.returncode == 4, done.stdout[-2000:] + done.stderr[-2000:]
    errors = lines(done.stderr)
    need = sweep_bytes(load_space(str(work.space))).peak
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        f"asha-tune launch: error: --results-dir {small} has {free / MB:.0f} MB free; this sweep "
        f"writes up to {need / MB:.0f} MB there ("
    ), errors
    assert "2 running trials x 2 checkpoints of 90 MB + final weights of 45 MB" in errors[0]
    assert "free space, lower search.max_concurrent, or choose another --results-dir" in errors[0]
    # nothing began
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "optuna.db").exists()
    assert list(small.iterdir()) == []
    print(
        f"FIGURES disk preflight: {free / MB:.0f} MB free < {need / MB:.0f} MB needed, refused in {took:.1f} s"
    )


def checkpoint_size(sweep: Path) -> int | None:
    """The size of a trial's checkpoint once one is complete (Tune writes it in place, then
    replaces it at the next one)."""
    for path in sweep.glob("train_trial_*/checkpoint_*/trial.pt"):
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if size > 80 * MB:
            return size
    return None


def fill(folder: Path) -> int:
    """Write a filler file until the disk is full, as another program would; its size."""
    written = 0
    chunk = b"\0" * (1 << 20)
    with open(folder / "filler", "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC
                return written


def test_a_disk_that_fills_mid_sweep_stops_it_in_one_line_and_resume_finishes_it(
    tmp_path, pacs_root, shared_cache
):
    name = "filled"
    with small_filesystem(tmp_path / "disk", 800) as disk:
        work = Work(tmp_path, disk, pacs_root, shared_cache)
        started = time.monotonic()
        driver = subprocess.Popen(
            work.launch(name),
            env=work.env(),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            checkpoint_bytes = wait_for(
                lambda: checkpoint_size(disk / name), 600, "a trial's first checkpoint", poll=0.5
            )
            filled_at = time.monotonic()
            filler = fill(disk)
            stdout, stderr = driver.communicate(timeout=600)
        finally:
            if driver.poll() is None:
                driver.kill()
        stopped_s = time.monotonic() - filled_at
        launch_s = time.monotonic() - started
        assert driver.returncode == 4, stdout[-3000:] + stderr[-3000:]
        errors = lines(stderr)
        assert len(errors) == 1, errors  # Ray's and pyarrow's tracebacks stay in files
        assert errors[0].startswith(f"asha-tune launch: error: no space left under --results-dir {disk} ("), (
            errors
        )
        assert f"(the sweep is kept: asha-tune resume {name} --results-dir {disk})" in errors[0]
        print(f"the line: {errors[0]}")
        assert "Traceback" not in stdout
        assert "No space left on device" not in stdout

        # Records closed and consistent: the parent interrupted, no trial running or failed.
        client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        parent_id = json.loads((disk / name / "sweep.json").read_text())["parent_run_id"]
        parent = client.get_run(parent_id)
        assert parent.info.status == "KILLED"
        assert parent.data.tags["asha_tune.status"] == "interrupted"
        assert parent.data.tags["asha_tune.failure"].startswith("no space left under --results-dir")
        experiment = client.get_experiment_by_name(SPACE["name"])
        children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
        statuses = sorted(r.data.tags["asha_tune.status"] for r in children)
        assert "running" not in statuses, statuses
        assert "failed" not in statuses, statuses
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db")
        assert all(t.state not in (TrialState.RUNNING, TrialState.FAIL) for t in study.trials)

        (disk / "filler").unlink()  # space freed
        resumed = subprocess.run(
            work.resume(name), env=work.env(), cwd=tmp_path, capture_output=True, text=True, timeout=900
        )
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert lines(resumed.stderr) == [], resumed.stderr[-3000:]

    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    numbers = sorted(int(r.data.tags["asha_tune.trial_number"]) for r in children)
    assert numbers == [0, 1]  # each trial exactly once
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == list(range(1, 7)), steps  # every epoch once: none lost, none duplicated
        trial = study.trials[int(run.data.tags["asha_tune.trial_number"])]
        assert trial.value == pytest.approx(run.data.metrics["val_acc"])
    print(
        f"FIGURES disk filled mid-sweep: checkpoint on disk {checkpoint_bytes / MB:.1f} MB, filler "
        f"{filler / MB:.0f} MB, driver stopped {stopped_s:.0f} s after the fill (launch ran {launch_s:.0f} s), "
        f"stderr lines {len(errors)}, statuses at stop {statuses}, resumed to 2 of 2 trials, 6 epochs each once"
    )
