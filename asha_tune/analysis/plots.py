"""The comparison's figures (matplotlib, headless): every label says what was selected on what,
in the protocol's record's words (registry.selection_label), and published figures are drawn as
the paper's, never as ours. The labels come from functions of their own, so they can be tested
without reading pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asha_tune.analysis import reference
from asha_tune.analysis.curves import GridRow, Group
from asha_tune.trial.registry import selection_label

GRID_TITLE = f"replayed grid: ours against published (both {reference.PUBLISHED_SELECTION} protocol)"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_label(sweep: str, group: Group) -> str:
    """A sweep's curve in the legend: `opt (selection oracle)`."""
    return f"{sweep} (selection {group.protocol})"


def published_label(config: str, value: float) -> str:
    return f"published best (paper, {reference.PUBLISHED_SELECTION}-selected): {value:.2f} ({config})"


def best_so_far_title(group: Group) -> str:
    """`target cartoon · oracle: selected on the data it reports`."""
    return f"target {group.target} · {selection_label(group.protocol)}"


def best_so_far(group: Group, path: Path) -> None:
    """Best-so-far reported accuracy of each sweep's selected trial against epochs and
    device-seconds spent, with the paper's published best as a horizontal line."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, (attr, label) in zip(
        axes,
        (
            ("budget_epochs", "epochs trained (whole sweep)"),
            ("budget_device_s", "device-seconds (time_train + time_eval)"),
        ),
        strict=True,
    ):
        for name, points in group.curves.items():
            shown = [p for p in points if p.best_acc is not None]
            if shown:
                axis.step(
                    [getattr(p, attr) for p in shown],
                    [p.best_acc for p in shown],
                    where="post",
                    marker="o",
                    markersize=3,
                    label=curve_label(name, group),
                )
        if group.published_best:
            config, value = group.published_best
            axis.axhline(
                value,
                color="black",
                linestyle="--",
                label=published_label(config, value),
            )
        if group.grid_best is not None:
            axis.axhline(
                group.grid_best,
                color="grey",
                linestyle=":",
                label=f"grid's best (ours): {group.grid_best:.2f}",
            )
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(f"acc_{group.target} (%) of the best trial so far")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(best_so_far_title(group), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def grid_vs_published(rows: list[GridRow], path: Path) -> None:
    """Ours against published for every replayed grid configuration, ± 2 binomial SE."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 6))
    for target in sorted({r.target for r in rows}):
        mine = [r for r in rows if r.target == target]
        axis.errorbar(
            [r.published for r in mine],
            [r.ours for r in mine],
            yerr=[2 * r.se_difference for r in mine],
            fmt="o",
            markersize=4,
            capsize=2,
            label=target,
        )
    low = min(min(r.published for r in rows), min(r.ours for r in rows)) - 5
    high = max(max(r.published for r in rows), max(r.ours for r in rows)) + 5
    axis.plot([low, high], [low, high], color="black", linewidth=0.8, label="ours = published")
    axis.set_xlabel("published accuracy (%) (paper)")
    axis.set_ylabel("our accuracy (%), single run, ± 2 SE of the difference")
    axis.set_title(GRID_TITLE, fontsize=10)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
