"""Independent measurements of one quantity: mean, sample standard deviation, standard error and
the t-based 95 % interval of the mean. One home for the statistics of a search's replicates
(replicate_stats.py) and of a confirmation's new seeds (confirmation.py)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


def t_quantile(df: float) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (two-sided 95 %); `df` may
    be fractional (Welch-Satterthwaite)."""
    from scipy.stats import t  # scipy comes with mlflow and scikit-learn

    return float(t.ppf(0.975, df))


@dataclass(frozen=True)
class Estimate:
    """Mean, sample sd, SE = sd / sqrt(n), and mean ± t(0.975, n - 1) · SE."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def sd(self) -> float:
        """Sample standard deviation (n - 1); nan below two values (no spread is measured)."""
        return statistics.stdev(self.values) if self.n > 1 else math.nan

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n) if self.n > 1 else math.nan

    def ci95(self, bounds: tuple[float, float] | None = None) -> tuple[float, float] | None:
        """The t-based 95 % interval of the mean, None below two values. Clipped to `bounds` (an
        accuracy's [0, 100]): with few values it can reach past them."""
        if self.n < 2:
            return None
        half = t_quantile(self.n - 1) * self.se
        low, high = self.mean - half, self.mean + half
        return (max(low, bounds[0]), min(high, bounds[1])) if bounds is not None else (low, high)
