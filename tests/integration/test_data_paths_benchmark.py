"""The data paths benchmark's parts run (on a tiny synthetic set); speed is never asserted."""

from __future__ import annotations

import argparse

from asha_tune.trial import cache
from asha_tune.trial.datasets import list_dataset
from benchmarks import data_paths


def test_data_paths_parts_and_table(tmp_path):
    files = list_dataset("folder", data_paths.make_dataset(tmp_path / "data", 40))["d"]
    assert len(files) == 40
    assert len(set(files.labels)) == data_paths.CLASSES
    _, built = cache.load_cached_domain(files, 32, tmp_path / "cache", "folder", workers=2)
    args = argparse.Namespace(image_size=32, batch=8, train_steps=1, rounds=2)
    rates = data_paths.throughput(built.entry, files.labels, args)
    assert set(rates) == {
        f"{what}, {path}"
        for what in ("data only", "train step")
        for path in ("stream (cold)", "stream (warm)", "in memory", "in memory, index_select")
    }
    assert all(v["img_s"] > 0 and v["cpu_ms_per_100"] > 0 for v in rates.values())
    (measured,) = [data_paths.memory(built.entry, "stream", 1, args)]
    assert measured["Pss"] > 0
    assert measured["Pss_File"] > 0
    assert measured["img_s_each"] > 0
    report = {
        "cpu": "CPU test",
        "torch": "x",
        "commit": "abc",
        "date": "today",
        "batch": 8,
        "budget_mib": 1,
        "decision": "streamed",
        "dataset": {"images": 40, "image_size": 32, "base": 37, "train_mib": 0.2, "test_mib": 0.1},
        "build": [{"workers": 2, "seconds": 1.0, "img_s": 40.0}],
        "throughput": rates,
        "memory": [measured],
        "load_start": 1.0,
        "load_end": 1.0,
    }
    text = data_paths.table(report)
    assert "stream, 1 trial(s) at once" in text
    assert "data only, stream (cold)" in text
