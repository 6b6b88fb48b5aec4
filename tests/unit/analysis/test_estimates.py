"""Mean, sd, SE and the t-based 95 % interval of independent measurements, with known numbers."""

from __future__ import annotations

import pytest

from asha_tune.analysis.estimates import Estimate, t_quantile


def test_the_interval_is_mean_plus_minus_t_times_the_standard_error():
    # (60, 62, 64): mean 62, SE 2 / sqrt(3); t(0.975, 2) = 4.302653: half-width 4.968
    e = Estimate((60.0, 62.0, 64.0))
    assert t_quantile(2) == pytest.approx(4.302653, abs=1e-6)
    assert e.ci95() == pytest.approx((62.0 - 4.968, 62.0 + 4.968), abs=1e-3)
    assert Estimate((5.0, 30.0)).ci95((0.0, 100.0)) == (0.0, 100.0)  # clipped to an accuracy's range
    assert Estimate((61.0,)).ci95() is None
    assert Estimate(()).ci95() is None


def test_t_takes_the_fractional_degrees_of_freedom_welch_gives():
    assert t_quantile(2) > t_quantile(2.5) > t_quantile(3) > 1.96
