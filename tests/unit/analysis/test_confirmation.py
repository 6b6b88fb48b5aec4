"""The confirmation report's statistics with known numbers."""

from __future__ import annotations

import math

import pytest

from asha_tune.analysis.confirmation import interval


def test_the_interval_of_the_mean_is_t_based():
    stats = interval([60.0, 62.0, 64.0])
    # mean 62, sd 2, t(0.975, 2) = 4.3027: half-width 4.3027 * 2 / sqrt(3) = 4.968
    assert stats["mean"] == 62.0
    assert stats["sd"] == 2.0
    assert stats["n"] == 3
    assert stats["ci95"] == pytest.approx([62.0 - 4.968, 62.0 + 4.968], abs=1e-3)


def test_an_accuracys_interval_stays_within_0_and_100():
    # Two seeds far apart: mean 17.5, sd 17.68, t(0.975, 1) = 12.71, half-width 158.9.
    stats = interval([5.0, 30.0], (0.0, 100.0))
    assert stats["ci95"] == [0.0, 100.0]
    assert math.isclose(stats["mean"], 17.5)
    assert stats["sd"] == pytest.approx(17.678, abs=1e-3)
    assert interval([5.0, 30.0])["ci95"][0] < -100  # unbounded: what the clipping prevents


def test_one_run_has_no_spread():
    assert interval([61.0]) == {"n": 1, "mean": 61.0, "sd": None, "ci95": None, "values": [61.0]}
