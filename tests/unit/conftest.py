"""The fast tier (`make test-fast`): what a contributor runs on every change. No Ray, no real PACS:
synthetic images, tiny configurations, real sqlite stores. The guards below fail a test that
breaks the rule, so that the tier stays what it says."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    from asha_tune.sweep import session

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a unit test started Ray: it belongs in tests/integration")

    monkeypatch.setattr(session, "_start", refuse)


@pytest.fixture(scope="session")
def pacs_root() -> Path:
    pytest.fail("a unit test asked for the real PACS: it belongs in tests/integration")
