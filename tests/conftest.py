"""Shared fixtures: the real PACS (integration), tiny synthetic PACS trees (unit tests)."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asha_tune.config import CLASSES, DOMAINS, Runtime, TrialConfig

REPO = Path(__file__).resolve().parents[1]

# Keep every test on loopback and off the user's caches.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")


def real_pacs_root() -> Path:
    return Path(os.environ.get("ASHA_TUNE_DATA_ROOT", REPO.parent / "shared" / "PACS"))


@pytest.fixture(scope="session")
def pacs_root() -> Path:
    root = real_pacs_root()
    if not (root / "art_painting").is_dir():
        pytest.fail(f"real PACS not found at {root}: set ASHA_TUNE_DATA_ROOT")
    return root


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decode cache for the whole session, so real PACS is decoded once per image size."""
    return Path(os.environ.get("ASHA_TUNE_TEST_CACHE", tmp_path_factory.mktemp("cache")))


def make_synthetic_pacs(
    root: Path, per_class: int = 3, size: int = 40, domains: tuple[str, ...] = DOMAINS
) -> Path:
    """A PACS-shaped tree of tiny images whose colour depends on the class (learnable)."""
    rng = np.random.default_rng(0)
    for d, domain in enumerate(domains):
        for c, name in enumerate(CLASSES):
            folder = root / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = np.array([30 * c, 255 - 30 * c, 60 * d], dtype=np.float64)
                pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
                suffix = ".png" if domain == "sketch" else ".jpg"
                Image.fromarray(pixels).save(folder / f"{name}_{i}{suffix}")
    return root


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

    from asha_tune import training

    monkeypatch.setattr(training, "autocast_dtype", lambda precision, device: torch.float16)


def tiny_config(**sections: dict) -> TrialConfig:
    """A trial small enough for unit tests: 32 px, random init, a few images."""
    base = {
        "data": {"image_size": 32, "targets": ["cartoon"]},
        "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 16, "weights": "none"},
    }
    for key, values in sections.items():
        base[key] = {**base.get(key, {}), **values}
    return TrialConfig.model_validate(base)


# --- processes a test started --------------------------------------------------------------
# Ray's processes (raylet, GCS, workers) inherit the environment of whoever started them, so a
# per-test marker variable finds exactly this test's processes: other Ray instances on the same
# machine (another test run, a user's cluster) are never touched, unlike `ray stop --force`.
PROCESS_TAG_ENV = "ASHA_TUNE_TEST_PROCESS_TAG"


def tagged_processes(tag: str, fragment: str = "") -> list[int]:
    """Pids whose environment carries `tag` (and whose command line contains `fragment`)."""
    marker = f"{PROCESS_TAG_ENV}={tag}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if fragment and fragment not in (entry / "cmdline").read_bytes().decode(errors="ignore"):
                continue
        except OSError:
            continue
        pids.append(int(entry.name))
    return pids


def kill_tagged(tag: str) -> None:
    for pid in tagged_processes(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def process_tag(monkeypatch: pytest.MonkeyPatch):
    """A marker set in this test's environment; whatever it started is killed at the end."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(PROCESS_TAG_ENV, tag)
    yield tag
    kill_tagged(tag)


def free_port() -> int:
    """A loopback port nobody listens on now (fixed ports collide with parallel test runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    """The predicate's first truthy value, or a failed test after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
