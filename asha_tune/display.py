"""How values read on a terminal: accuracies with %, sampled floats to 4 significant digits.

Display only: MLflow and Optuna keep every value exact.
"""

from __future__ import annotations

from typing import Any


def is_accuracy(metric: str) -> bool:
    """target_acc, source_acc, acc_cartoon, ... (any *_acc or acc_* metric is a percentage)."""
    return metric.endswith("_acc") or metric.startswith("acc_")


def metric_text(metric: str, value: float) -> str:
    """`target_acc 20.71%`, `train_loss 1.843`."""
    return f"{metric} {value:.2f}%" if is_accuracy(metric) else f"{metric} {value:.4g}"


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
