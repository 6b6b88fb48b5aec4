"""Fixtures shared by every tier. Helpers (data, processes, sweeps, browser) are in tests/helpers."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from asha_tune.trial.config import Runtime
from tests.helpers.data import make_synthetic_pacs, real_pacs_root
from tests.helpers.processes import PROCESS_TAG_ENV, kill_tagged

# Keep every test on loopback and off the user's caches.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")


@pytest.fixture(scope="session")
def pacs_root() -> Path:
    """The real PACS; the tests that need it skip where it is missing."""
    root = real_pacs_root()
    if not (root / "art_painting").is_dir():
        pytest.skip(f"real PACS not found at {root} (set ASHA_TUNE_DATA_ROOT to run this test)")
    return root


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decode cache for the whole session, so real PACS is decoded once per image size."""
    return Path(os.environ.get("ASHA_TUNE_TEST_CACHE", tmp_path_factory.mktemp("cache")))


@pytest.fixture
def pacs_runtime(pacs_root: Path, shared_cache: Path) -> Runtime:
    return Runtime(data_root=pacs_root, cache_dir=shared_cache, device="cpu")


@pytest.fixture
def synthetic_pacs(tmp_path: Path) -> Path:
    return make_synthetic_pacs(tmp_path / "pacs")


@pytest.fixture
def tiny_runtime(synthetic_pacs: Path, tmp_path: Path) -> Runtime:
    return Runtime(data_root=synthetic_pacs, cache_dir=tmp_path / "cache", device="cpu")


@pytest.fixture
def fp16_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA recipe's fp16 autocast and enabled GradScaler, on the CPU (torch runs both there;
    the trial itself refuses fp16 on the CPU as slow): for faults a CPU can show."""
    import torch

    from asha_tune.trial import training

    monkeypatch.setattr(training, "autocast_dtype", lambda precision, device: torch.float16)


@pytest.fixture
def process_tag(monkeypatch: pytest.MonkeyPatch):
    """A marker set in this test's environment; whatever it started is killed at the end."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(PROCESS_TAG_ENV, tag)
    yield tag
    kill_tagged(tag)
