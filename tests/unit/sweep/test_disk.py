"""The disk under --results-dir: what a sweep writes there (measured against a real trial's
checkpoint and final weights), the preflight refusal, the reserve, and what counts as a full disk."""

from __future__ import annotations

import errno
import shutil
from collections import namedtuple

import pytest
import torch

from asha_tune.errors import NoSpaceError
from asha_tune.spaces import load_space
from asha_tune.sweep import preflight
from asha_tune.sweep.checkpoints import final_weights
from asha_tune.sweep.disk import Reserve, is_no_space
from asha_tune.sweep.preflight import check_space, sweep_bytes
from asha_tune.trial.training import run_trial
from tests.helpers.data import tiny_config


def test_the_estimate_matches_a_real_checkpoint_and_final_weights(tiny_runtime, tmp_path):
    states = []
    run_trial(
        tiny_config(train={"epochs": 1}), tiny_runtime, report=lambda metrics, state: states.append(state)
    )
    torch.save(states[-1], tmp_path / "checkpoint.pt")
    torch.save(final_weights(states[-1]), tmp_path / "final.pt")
    checkpoint, final = (tmp_path / "checkpoint.pt").stat().st_size, (tmp_path / "final.pt").stat().st_size
    need = sweep_bytes(load_space("quickstart"))
    # An estimate from the model's tensors, never below what is written, at most 3% above.
    assert checkpoint <= need.checkpoint <= checkpoint * 1.03
    assert final <= need.final <= final * 1.03
    print(f"FIGURES ResNet-18 (7 classes): checkpoint {checkpoint} B, final weights {final} B")


def test_the_peak_counts_two_checkpoints_per_running_trial_and_the_best_final_weights():
    space = load_space("quickstart", ["search.max_concurrent=3", "search.num_trials=8"])
    need = sweep_bytes(space)
    assert need.running == 3
    assert need.peak == 3 * 2 * need.checkpoint + need.final + need.reserve + need.margin
    assert sweep_bytes(load_space("quickstart", ["search.reproducible=true"])).running == 1


Usage = namedtuple("Usage", "total used free")


def test_preflight_refuses_a_disk_without_room_for_the_peak_in_one_line(tmp_path, monkeypatch):
    space = load_space("quickstart")
    peak = sweep_bytes(space).peak
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - peak + 1, peak - 1))
    with pytest.raises(NoSpaceError) as refused:
        check_space(tmp_path / "results" / "not-yet", space)  # the nearest existing parent counts
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"--results-dir {tmp_path / 'results' / 'not-yet'} has ")
    assert "x 2 checkpoints of 90 MB + final weights of 45 MB" in message
    assert "free space, lower search.max_concurrent, or choose another --results-dir" in message
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - peak, peak))
    check_space(tmp_path, space)
    assert preflight.free_bytes(tmp_path) == peak


def test_the_reserve_holds_its_bytes_until_released(tmp_path):
    reserve = Reserve(tmp_path, 4 << 20)
    assert reserve.hold()
    assert reserve.held() == 4 << 20
    assert reserve.path.stat().st_blocks * 512 >= 4 << 20  # allocated, not a sparse file
    reserve.release()
    assert reserve.held() == 0
    assert not reserve.path.exists()
    reserve.release()  # twice is fine


def test_a_full_disk_is_recognised_as_ray_and_pyarrow_raise_it():
    assert is_no_space(OSError(errno.ENOSPC, "No space left on device"))
    pyarrow = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert is_no_space(pyarrow)
    try:
        try:
            raise pyarrow
        except OSError as inner:
            raise RuntimeError("Saving experiment state failed") from inner
    except RuntimeError as outer:
        assert is_no_space(outer)
    assert not is_no_space(OSError(errno.EACCES, "Permission denied"))
    assert not is_no_space(ValueError("No space left on device"))  # only an OSError is a disk's
