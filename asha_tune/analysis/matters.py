"""What matters: the selection metric against p0 for each conv set, and a conv × p0 heat map.

From plain (values, metric) pairs, one per trial (no torch, no Ray, no Optuna). The numbers
behind each figure come from a function of their own (`slices`, `heat_map_cells`), so they can
be tested and logged without reading pixels. Every label says what was selected on what, in the
words of the protocol's record (registry.selection_label): a figure of `oracle` records is
"selected on the data it reports".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asha_tune.analysis.curves import selection_metric
from asha_tune.tracking.records import CONVS, P0, Sweep
from asha_tune.tracking.tags import COMPLETED, PRUNED
from asha_tune.trial.registry import selection_label

MAX_SETS = 10  # conv sets drawn in the slice plot (the most tried first); the rest are counted
MAX_ROWS = 30  # rows of the heat map, likewise


@dataclass(frozen=True)
class Point:
    """One trial: its sampled values and its selection metric. A trial ASHA stopped early is
    scored on fewer epochs (`complete` False): the slice plot draws it hollow; a heat map means
    what it is given, so give it points of one budget (the complete trials, or every trial's
    value at one epoch)."""

    values: Mapping[str, Any]
    metric: float
    complete: bool = True


def selected_label(metric: str, protocol: str, mode: str = "max") -> str:
    """`val_acc (source_val: selected on held-out source images; higher is better)`."""
    where = selection_label(protocol)
    better = "higher" if mode == "max" else "lower"
    return f"{metric} ({where}; {better} is better)"


def conv_label(convs: Any) -> str:
    return (
        "convs " + ",".join(str(c) for c in convs) if isinstance(convs, (list, tuple)) else f"convs {convs}"
    )


def _conv_order(label: str) -> tuple[int, list[int]]:
    """Conv sets by size, then by their convs (convs 2 before convs 10)."""
    parts = [int(c) for c in label.removeprefix("convs ").split(",") if c.strip().isdigit()]
    return len(parts), parts


@dataclass(frozen=True)
class Usable:
    points: tuple[tuple[str, float, float, bool], ...]  # (conv label, p0, metric, complete)
    left_out: int  # points without a numeric p0, a conv set or a finite metric


def usable(points: Iterable[Point], p0_key: str = P0, convs_key: str = CONVS) -> Usable:
    kept, left_out = [], 0
    for point in points:
        p0, convs = point.values.get(p0_key), point.values.get(convs_key)
        if (
            not isinstance(p0, (int, float))
            or isinstance(p0, bool)
            or convs is None
            or not math.isfinite(point.metric)
        ):
            left_out += 1
            continue
        kept.append((conv_label(convs), float(p0), float(point.metric), point.complete))
    return Usable(tuple(kept), left_out)


def slices(
    points: Iterable[Point], p0_key: str = P0, convs_key: str = CONVS
) -> dict[str, list[tuple[float, float, bool]]]:
    """conv set -> its (p0, metric, complete) triples sorted by p0; sets by size, then convs."""
    found: dict[str, list[tuple[float, float, bool]]] = {}
    for label, p0, metric, complete in usable(points, p0_key, convs_key).points:
        found.setdefault(label, []).append((p0, metric, complete))
    return {label: sorted(found[label]) for label in sorted(found, key=_conv_order)}


@dataclass(frozen=True)
class HeatMap:
    rows: tuple[str, ...]  # conv sets
    columns: tuple[str, ...]  # p0 values (a grid) or p0 bins
    mean: tuple[tuple[float | None, ...], ...]  # rows x columns; None: no trial there
    count: tuple[tuple[int, ...], ...]
    left_out: int


def _bins(p0s: Sequence[float], bins: int) -> tuple[list[str], list[int]]:
    """Column labels and each p0's column: its own column when there are at most `bins`
    distinct values (a grid), else `bins` equal-width bins over [min, max], the last closed."""
    distinct = sorted(set(p0s))
    if len(distinct) <= bins:
        return [f"{v:g}" for v in distinct], [distinct.index(p) for p in p0s]
    low, high = distinct[0], distinct[-1]
    width = (high - low) / bins
    edges = [low + i * width for i in range(bins + 1)]
    labels = [f"[{edges[i]:.2f}, {edges[i + 1]:.2f}" + ("]" if i == bins - 1 else ")") for i in range(bins)]
    return labels, [min(int((p - low) / width), bins - 1) for p in p0s]


def heat_map_cells(
    points: Iterable[Point], bins: int = 8, p0_key: str = P0, convs_key: str = CONVS
) -> HeatMap:
    """The mean metric and the number of trials of every (conv set, p0) cell."""
    data = usable(points, p0_key, convs_key)
    if not data.points:
        return HeatMap((), (), (), (), data.left_out)
    columns, column_of = _bins([p0 for _, p0, _, _ in data.points], bins)
    rows = sorted({label for label, _, _, _ in data.points}, key=_conv_order)
    sums = [[0.0] * len(columns) for _ in rows]
    counts = [[0] * len(columns) for _ in rows]
    for (label, _, metric, _), column in zip(data.points, column_of, strict=True):
        i = rows.index(label)
        sums[i][column] += metric
        counts[i][column] += 1
    mean = tuple(
        tuple(s / n if n else None for s, n in zip(srow, crow, strict=True))
        for srow, crow in zip(sums, counts, strict=True)
    )
    return HeatMap(tuple(rows), tuple(columns), mean, tuple(map(tuple, counts)), data.left_out)


# --- figures -----------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _most_tried(labels: Iterable[str], limit: int) -> tuple[list[str], int]:
    counts = Counter(labels)
    shown = sorted(sorted(counts, key=lambda k: (-counts[k], _conv_order(k)))[:limit], key=_conv_order)
    return shown, sum(n for k, n in counts.items() if k not in shown)


def slice_plot(
    points: Sequence[Point], metric: str, protocol: str, path: Path, *, mode: str = "max", title: str = ""
) -> Path:
    """The selection metric against p0, a colour per conv set (the MAX_SETS most tried)."""
    plt = _pyplot()
    series = slices(points)
    shown, hidden = _most_tried([label for label, triples in series.items() for _ in triples], MAX_SETS)
    fig, axis = plt.subplots(figsize=(7.5, 4.8))
    for k, label in enumerate(shown):
        triples, color = series[label], f"C{k % 10}"
        for complete in (True, False):
            mine = [(p, m) for p, m, c in triples if c == complete]
            if mine:
                axis.scatter(
                    [p for p, _ in mine],
                    [m for _, m in mine],
                    s=22,
                    facecolors=color if complete else "none",
                    edgecolors=color,
                    label=f"{label} ({len(triples)})" if complete or len(mine) == len(triples) else None,
                )
    axis.set_xlabel("p0 (probability that a mask entry is zero)")
    axis.set_ylabel(metric)
    data = usable(points)
    notes = [selected_label(metric, protocol, mode)]
    if hidden:
        notes.append(f"{hidden} trials of other conv sets not drawn")
    if data.left_out:
        notes.append(f"{data.left_out} trials without p0 or conv set left out")
    if any(not complete for *_, complete in data.points):
        notes.append("hollow: stopped early by ASHA (scored on fewer epochs)")
    axis.set_title((title + "\n" if title else "") + "\n".join(notes), fontsize=8)
    if shown:
        axis.legend(fontsize=7, title="conv set (trials)", title_fontsize=7)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def heat_map(
    points: Sequence[Point],
    metric: str,
    protocol: str,
    path: Path,
    *,
    mode: str = "max",
    bins: int = 8,
    title: str = "",
) -> Path:
    """conv set × p0: the mean selection metric of each cell, its number of trials written in."""
    plt = _pyplot()
    cells = heat_map_cells(points, bins)
    keep, _ = _most_tried(
        [r for r, row in zip(cells.rows, cells.count, strict=True) for _ in range(sum(row))], MAX_ROWS
    )
    index = [cells.rows.index(r) for r in keep]
    grid = [[math.nan if v is None else v for v in cells.mean[i]] for i in index]
    fig, axis = plt.subplots(
        figsize=(max(6.5, 2.5 + 0.9 * len(cells.columns)), 2.2 + 0.35 * max(1, len(keep)))
    )
    if grid:
        image = axis.imshow(grid, aspect="auto", cmap="viridis" if mode == "max" else "viridis_r")
        fig.colorbar(image, ax=axis, label=f"mean {metric}")
        for row, i in enumerate(index):
            for column, n in enumerate(cells.count[i]):
                if n:
                    value = cells.mean[i][column]
                    light = image.norm(value) > 0.6 if mode == "max" else image.norm(value) < 0.4
                    text = f"{value:.1f}\n(n={n})"
                    axis.text(
                        column,
                        row,
                        text,
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="black" if light else "white",
                    )
    axis.set_xticks(range(len(cells.columns)), cells.columns, rotation=45, ha="right", fontsize=7)
    axis.set_yticks(range(len(keep)), keep, fontsize=7)
    axis.set_xlabel("p0")
    hidden = len(cells.rows) - len(keep)
    notes = [selected_label(metric, protocol, mode)]
    if hidden:
        notes.append(f"{hidden} less tried conv sets not shown")
    if cells.left_out:
        notes.append(f"{cells.left_out} trials without p0 or conv set left out")
    early = sum(not complete for *_, complete in usable(points).points)
    if early:
        notes.append(f"{early} of the trials were stopped early by ASHA (scored on fewer epochs)")
    axis.set_title((title + "\n" if title else "") + "\n".join(notes), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def matters_points(
    sweeps: list[Sweep], target: str, protocol: str
) -> tuple[str, str, list[Point], str] | None:
    """(metric, mode, points, title) of what matters for one target under one protocol: every
    sweep selected by it, each ended trial's selection metric at its p0 and convs; None if none."""
    members = [s for s in sweeps if s.protocol == protocol]
    if not members:
        return None
    metric, mode = selection_metric(protocol, target, members[0].metric, members[0].mode)
    points = [
        Point(t.settings, t.record.metrics[metric], t.record.status == COMPLETED)
        for s in members
        for t in s.trials
        if metric in t.record.metrics and t.record.status in (COMPLETED, PRUNED)
    ]
    if not usable(points).points:
        return None
    return metric, mode, points, f"target {target} · {', '.join(dict.fromkeys(s.search for s in members))}"
