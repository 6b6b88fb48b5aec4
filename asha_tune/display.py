"""How values read on a terminal: accuracies with %, sampled floats to 4 significant digits.

Display only: MLflow and Optuna keep every value exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def is_accuracy(metric: str) -> bool:
    """target_acc, source_acc, acc_cartoon, ... (any *_acc or acc_* metric is a percentage)."""
    return metric.endswith("_acc") or metric.startswith("acc_")


def metric_text(metric: str, value: float, se: float | None = None) -> str:
    """`target_acc 20.71%`, `train_loss 1.843`; with a standard error `target_acc 20.71 ± 1.20%`."""
    if se is None:
        return f"{metric} {value:.2f}%" if is_accuracy(metric) else f"{metric} {value:.4g}"
    return f"{metric} {value:.2f} ± {se:.2f}%" if is_accuracy(metric) else f"{metric} {value:.4g} ± {se:.2g}"


def value_text(value: Any) -> str:
    """A sampled value for display: floats to 4 significant digits, lists without spaces."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    return str(value)


def values_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={value_text(v)}" for k, v in values.items())


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`1 epoch`, `4 epochs`; `2 retries` where the plural is not the noun with an s."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def size_text(n_bytes: float) -> str:
    """`45 MB`, `1.2 GB` (decimal units, as `df -H` shows them)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n_bytes) >= size:
            value = n_bytes / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n_bytes:.0f} B"


def duration_text(seconds: float) -> str:
    """`44s`, `3m 05s`, `2h 07m`, `3d 04h`: two units at most, the larger first."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def eta_s(
    trial_s: float | None,
    to_start: int,
    running_s: Sequence[float],
    slots: int,
    longest_s: float | None = None,
) -> float | None:
    """Seconds until a sweep's last trial ends, from its trials' own timings: `trial_s`, the mean
    duration of the trials that ended (None: none has, no estimate), `longest_s` the longest. Each
    of the `to_start` trials lasts the mean; a running one, `running_s` seconds in, the mean, or
    once past it the longest (ASHA lets the promising ones run on); the work shared over `slots`
    trials at once, and never less than the longest a running trial has left."""
    if trial_s is None:
        return None

    def left(s: float) -> float:
        return next((total - s for total in (trial_s, longest_s or trial_s) if s < total), 0.0)

    lefts = [left(s) for s in running_s]
    work = to_start * trial_s + sum(lefts)
    return max(work / max(slots, 1), max(lefts, default=0.0))
