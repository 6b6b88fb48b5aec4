"""The benchmark's parts run (on tiny synthetic data); speed itself is never asserted here."""

from __future__ import annotations

import pytest
import torch

from benchmarks.authors import numpy_mask_hook, time_authors
from benchmarks.speed import Profile, full_trial, table, throughput, tiled, trial_config


def test_authors_mask_hook_is_their_random_map():
    np_hook = numpy_mask_hook(0.7)
    a = torch.randn(64, 64, 32, 32)
    out = np_hook(None, (), a)
    positive = a > 0
    assert torch.all(out[~positive] == 0)
    assert set(out[positive].unique().tolist()) == {0.0, 1.0}  # binarized, not a * mask
    assert abs((out[positive] == 0).float().mean().item() - 0.7) < 0.01


def test_authors_loop_times_real_steps(synthetic_pacs):
    timing = time_authors(
        synthetic_pacs,
        "art_painting",
        "cartoon",
        32,
        4,
        [1],
        0.7,
        torch.device("cpu"),
        train_steps=2,
        eval_batches=1,
        warmup=1,
        workers=0,
    )
    assert timing.seconds_per_train_step > 0
    assert timing.seconds_per_eval_batch > 0
    # 2,048 source images in batches of 128 are 16 steps; 2,344 target images are 19 batches.
    known = type(timing)(
        seconds_per_train_step=0.5, seconds_per_eval_batch=0.25, train_steps_timed=2, eval_batches_timed=1
    )
    assert known.extrapolate(30, 2048, 2344, 128) == pytest.approx(30 * (8.0 + 4.75))


def test_trial_measurements_and_table(tiny_runtime):
    profile = Profile(32, 8, 16, 2, 1, 1, 1, (), False, "tiny")
    config = trial_config(profile, {"mode": "random", "convs": [1], "p0": 0.5})
    trial_figures = full_trial(config, tiny_runtime, tile=False)
    assert trial_figures["wall_s"] >= trial_figures["train_s"] + trial_figures["eval_s"]
    from benchmarks.speed import make_trial

    trial = make_trial(config, tiny_runtime, tile=True)
    assert len(trial.data.source) == 2048
    assert len(trial.data.targets["cartoon"]) == 2344
    assert torch.equal(tiled(trial.data.source, 30).labels[21:], trial.data.source.labels[:9])
    small = make_trial(config, tiny_runtime, tile=False)
    rates = throughput(small, 1)
    text = table(
        {
            "device": "cpu",
            "torch": torch.__version__,
            "commit": None,
            "date": "today",
            "protocol": "tiny",
            "tiled": False,
            "modes": {"random conv 1": rates},
            "warm_trial": trial_figures,
            "cold_trial": trial_figures,
        }
    )
    assert "random conv 1" in text
    assert "full trial, warm cache" in text


def test_the_speed_benchmark_keeps_every_section_and_survives_failing_ones(
    tiny_runtime, tmp_path, monkeypatch
):
    """End to end on synthetic PACS: a section made to fail and variants that fail on the CPU
    (fp16) are recorded with their reason, and every other section still runs and is written."""
    import json
    import sys

    from benchmarks import speed

    monkeypatch.setitem(speed.PROFILES, "cpu", Profile(32, 8, 16, 1, 1, 1, 1, (), False, "tiny"))
    monkeypatch.setenv(speed.FAIL_ENV, "mode baseline")
    out, table_file = tmp_path / "bench.json", tmp_path / "bench.txt"
    seen_on_disk = []
    real_full_trial = speed.full_trial

    def full_trial(*args, **kwargs):  # what is on disk when the warm trial starts
        seen_on_disk.append(json.loads(out.read_text()))
        return real_full_trial(*args, **kwargs)

    monkeypatch.setattr(speed, "full_trial", full_trial)
    argv = ["speed.py", "--profile", "cpu", "--data-root", str(tiny_runtime.data_root), "--device", "cpu"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--table", str(table_file)]
    monkeypatch.setattr(sys, "argv", argv + ["--variants", "--skip-authors"])
    speed.main()

    report = json.loads(out.read_text())
    assert report["modes"]["baseline"] == {"error": f"RuntimeError: deliberate failure ({speed.FAIL_ENV})"}
    assert set(report["modes"]) == set(speed.MODES)
    assert all(m["train_img_s"] > 0 for name, m in report["modes"].items() if name != "baseline")
    assert report["variants"]["fp16 NCHW"]["error"].startswith("ConfigError: precision fp16 needs CUDA")
    assert report["variants"]["bf16 channels_last"]["train_img_s"] > 0
    assert report["variants"]["bf16 channels_last"]["amp"] == "torch.bfloat16"
    assert report["warm_trial"]["wall_s"] > 0
    assert report["cold_trial"]["device"] == "cpu"
    assert report["versions"]["torch"] == torch.__version__
    assert report["versions"]["python"]
    # The cold trial and the modes were on disk before the warm trial ran.
    assert "cold_trial" in seen_on_disk[1]
    assert set(seen_on_disk[1]["modes"]) == set(speed.MODES)
    text = table_file.read_text()
    assert f"baseline                 failed: RuntimeError: deliberate failure ({speed.FAIL_ENV})" in text
    assert "fp16 NCHW" in text
    assert "failed: ConfigError: precision fp16 needs CUDA" in text
    assert f"torch {torch.__version__} (CUDA {torch.version.cuda}" in text.splitlines()[0]


def test_a_crashed_sharing_worker_is_an_error_not_an_index_error(tmp_path):
    from benchmarks.speed import worker_result

    log = tmp_path / "worker.err"
    log.write_text("Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: CUDA out of memory\n")
    assert worker_result(1, "", log) == {"error": "exit 1: torch.OutOfMemoryError: CUDA out of memory"}
    assert worker_result(0, 'noise\n{"peak_mib": 5.0}\n', log) == {"peak_mib": 5.0}
    log.write_text("")
    assert worker_result(-9, "", log) == {"error": "exit -9: no output"}


def test_the_commit_without_git(tmp_path, monkeypatch):
    from benchmarks import speed

    monkeypatch.setattr(speed, "REPO", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git at all
    assert speed.commit() is None
    (tmp_path / ".device-data").mkdir()
    (tmp_path / ".device-data" / "commit.txt").write_text("8a5611b+changes\n")
    assert speed.commit() == "8a5611b+changes (as prepared)"


# --- the sweep benchmark ------------------------------------------------------------------


def epoch(
    pid: int, at_report: float, train: float, evaluate: float, checkpoint: float = 0.0, **first
) -> dict:
    result = {
        "pid": pid,
        "at_report": at_report,
        "time_train": train,
        "time_eval": evaluate,
        "time_checkpoint": checkpoint,
        "checkpoint_dir_name": "checkpoint_000000" if checkpoint else None,
    }
    return {**result, **first}


def test_sweep_analysis_accounts_for_every_slot_second():
    from benchmarks.sweep import PARTS, analyse

    # Two slots from t=1000 to 1025. Process 1 runs trial A (two epochs), then trial B (reused);
    # process 2 runs trial C. Times are chosen so that each part has a known value.
    a = [
        epoch(1, 1010.0, 4.5, 1.0, 0.2, at_process=1001.0, at_entry=1003.0, time_imports=1.0, time_data=0.5),
        epoch(1, 1016.5, 4.0, 1.0),
    ]
    b = [epoch(1, 1023.0, 4.0, 1.0, 0.3, at_process=1001.0, at_entry=1017.5, time_imports=0.0, time_data=0.1)]
    c = [
        epoch(2, 1012.0, 5.0, 1.0, at_process=1001.5, at_entry=1004.0, time_imports=1.5, time_data=0.2),
        {"epoch": 2, "failed": 1.0, "target_acc": float("nan")},
    ]  # a failed trial's last report
    run = {
        "trials": [a, b, c],
        "slots": 2,
        "t0": 1000.0,
        "t1": 1025.0,
        "driver": {},
        "machine": {},
        "disk": {},
    }
    out = analyse(run)
    compute = 5.5 + 5.0 + 5.0 + 6.0
    assert out["compute_s"] == pytest.approx(compute)
    assert out["efficiency"] == pytest.approx(compute / 50)
    assert out["overhead_per_trial_s"] == pytest.approx((50 - compute) / 3)
    assert out["checkpoint_writes"] == 2
    assert out["epochs"] == 4
    assert out["cpu_per_epoch_s"] == 0.0  # no machine figures in this hand-made run
    parts = out["parts_s"]
    assert list(parts) == list(PARTS)
    expected = {
        "sweep start": 1.0 + 1.5,
        "process start": 2.0 + 2.5,
        "imports": 2.5,
        "data load": 0.8,
        "model build": 0.0 + 0.4 + 0.3,  # setup (0.5 s each) less data
        "checkpoint write": 0.5,
        "report round trips": 1011.5 - 1010.2,
        "between trials": 1.0,
        "idle slot": 1023.3 - 1012.0,
        "sweep end": (1025 - 1023.3) * 2,
    }
    for name, value in expected.items():
        assert parts[name] == pytest.approx(value), name
    assert sum(parts.values()) + compute == pytest.approx(50.0)  # nothing unaccounted
    assert out["first_step_per_trial_s"] == pytest.approx(0.5 / 3)  # A's first epoch, 4.5 against 4.0
    fixed = parts["sweep start"] + parts["sweep end"]
    assert out["overhead_per_trial_in_sweep_s"] == pytest.approx((50 - compute - fixed) / 3)


def test_sweep_analysis_without_trial_timings_reports_totals():
    from benchmarks.sweep import analyse

    plain = [[{"pid": 7, "time_train": 2.0, "time_eval": 1.0, "time_data": 0.3, "checkpoint_dir_name": "c"}]]
    out = analyse(
        {"trials": plain, "slots": 1, "t0": 0.0, "t1": 6.0, "driver": {}, "machine": {}, "disk": {}}
    )
    assert out["efficiency"] == pytest.approx(0.5)
    assert out["data_load_s"] == pytest.approx(0.3)
    assert "parts_s" not in out


def test_sweep_benchmark_runs_a_real_sweep_and_prints_its_figures(tiny_runtime, tmp_path, process_tag):
    """The plumbing end to end, on synthetic PACS: a child process, a real local Ray sweep."""
    from benchmarks.sweep import MEMORY_PROFILE, REPO, analyse, child, merge, space_tree, table

    tree = space_tree(
        REPO,
        merge(
            MEMORY_PROFILE,
            {
                "data": {"image_size": 32},
                "train": {"epochs": 2, "batch_size": 8},
                "search": {"num_trials": 3, "max_concurrent": 2},
            },
        ),
        "bench-tiny",
    )
    spec = {
        "code": str(REPO),
        "tree": tree,
        "slots": 2,
        "memory": True,
        "data_root": str(tiny_runtime.data_root),
        "cache_dir": str(tmp_path / "cache"),
    }
    run = child(spec, tmp_path)
    assert run["finished"]
    assert run["statuses"] == ["completed"] * 3
    assert [len(t) for t in run["trials"]] == [2, 2, 2]
    out = analyse(run)
    results = [r for t in run["trials"] for r in t]
    assert out["compute_s"] == pytest.approx(sum(r["time_train"] + r["time_eval"] for r in results))
    assert out["wall_s"] == pytest.approx(run["t1"] - run["t0"])
    assert sum(out["parts_s"].values()) + out["compute_s"] == pytest.approx(out["wall_s"] * 2)
    assert out["checkpoint_writes"] == sum(1 for r in results if r.get("checkpoint_dir_name"))
    machine = run["machine"]
    assert machine["our_cpu_s"] > 0
    assert machine["load_1min_mean"] >= 0
    assert machine["processes"] >= 3
    assert machine["memory_peak"]["Pss_mib"] > 0
    assert machine["memory_peak"]["processes"] >= 1
    driver = run["driver"]
    assert set(driver) >= {"tracking", "study", "driver_cpu", "ray_start_s", "fit_s", "ray_shutdown_s"}
    assert run["t0"] < driver["ray_start_at"] < driver["fit_at"] < driver["ray_shutdown_at"] < run["t1"]
    report = {
        "date": "today",
        "cpu": "a CPU",
        "cores": 2,
        "variants": ["HEAD"],
        "profiles": {"tiny": {"space": tree, "runs": {"HEAD": [out]}}},
        "memory": {
            "HEAD": [{"trials_at_once": 2, **machine["memory_peak"], "machine": machine, "image_size": 32}]
        },
    }
    text = table(report)
    assert f"{out['efficiency']:6.0%}" in text
    assert "idle slot" in text
    assert "sweep end" in text
    assert out["cpu_per_epoch_s"] == pytest.approx(machine["our_cpu_s"] / 6)
    assert "memory, 2 trial(s) at once, 32 px, HEAD: PSS" in text
