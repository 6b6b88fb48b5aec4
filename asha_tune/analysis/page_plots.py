"""The report page's interactive figures (Plotly), from the numbers compare computes.

Each function takes compare's own results (a comparison Group, GridRows, matters' HeatMap, ...)
and returns a Plotly figure as JSON text; it computes nothing new. Every title says what was
selected on what, and published figures are drawn as the paper's, never as ours. Figures carry no
template: the page applies one, once (page_html.TEMPLATE), so a 1,000-trial page stays small.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from asha_tune.analysis import matters
from asha_tune.analysis.curves import CurvePoint, GridRow, Group
from asha_tune.analysis.render import selection_note

BUDGETS = (
    ("budget_epochs", "epochs trained (whole sweep)"),
    ("budget_device_s", "device-seconds (time_train + time_eval)"),
)
PUBLISHED_STYLE = {"color": "black", "dash": "dash", "width": 1.5}
GRID_STYLE = {"color": "grey", "dash": "dot", "width": 1.5}


def _go() -> Any:
    import plotly.graph_objects as go

    return go


def to_json(figure: Any) -> str:
    """A figure as JSON (NaN as null), without a template (the page brings one)."""
    import plotly.io as pio

    figure.update_layout(template=None)
    return str(pio.to_json(figure, validate=False, remove_uids=True))


def _layout(figure: Any, title: str, height: int = 420) -> None:
    figure.update_layout(
        title={"text": title, "font": {"size": 14}, "x": 0.01, "xanchor": "left"},
        height=height,
        margin={"l": 60, "r": 20, "t": 70, "b": 55},
        legend={"font": {"size": 11}},
        hoverlabel={"namelength": -1},
    )


def best_so_far(group: Group) -> str:
    """Each sweep's best reported accuracy so far against epochs and device-seconds spent, with
    the paper's published best and the grid's best as lines (plots.best_so_far, interactive)."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06)
    widest = {attr: 0.0 for attr, _ in BUDGETS}
    for k, (name, points) in enumerate(group.curves.items()):
        shown = [p for p in points if p.best_acc is not None]
        if not shown:
            continue
        for attr, _ in BUDGETS:
            widest[attr] = max(widest[attr], max(float(getattr(p, attr)) for p in shown))
        _add_curve(figure, group, name, shown, f"hsl({(k * 67) % 360}, 65%, 42%)")
    for value, label, style in _reference_lines(group):
        _add_level(figure, value, label, style, widest)
    for col, (_, label) in enumerate(BUDGETS, 1):
        figure.update_xaxes(title_text=label, row=1, col=col)
    figure.update_yaxes(title_text=f"acc_{group.target} (%) of the best trial so far", row=1, col=1)
    _layout(figure, f"best so far · target {group.target} · {selection_note(group.protocol)}", 460)
    figure.update_layout(legend={"orientation": "h", "y": -0.22, "x": 0})
    return to_json(figure)


def _add_curve(figure: Any, group: Group, name: str, shown: list[CurvePoint], color: str) -> None:
    """One sweep's best-so-far steps, one panel per budget, its legend entry once."""
    go = _go()
    for col, (attr, _) in enumerate(BUDGETS, 1):
        figure.add_trace(
            go.Scatter(
                x=[getattr(p, attr) for p in shown],
                y=[p.best_acc for p in shown],
                mode="lines+markers",
                line={"shape": "hv", "color": color},
                marker={"size": 5},
                name=f"{name} (selection {group.protocol})",
                legendgroup=name,
                showlegend=col == 1,
                customdata=[
                    [p.completed, p.trial, p.best_trial, p.best_acc_se or math.nan, p.best_selection]
                    for p in shown
                ],
                hovertemplate=(
                    f"{name}<br>after %{{customdata[0]}} trials (trial %{{customdata[1]}} ended), "
                    f"%{{x}}<br>best so far: trial %{{customdata[2]}}, acc_{group.target} "
                    f"%{{y:.2f}} ± %{{customdata[3]:.2f}}<br>{shown[0].selection_metric} "
                    "%{customdata[4]:.4g}<extra></extra>"
                ),
            ),
            row=1,
            col=col,
        )


def _reference_lines(group: Group) -> list[tuple[float, str, dict[str, Any]]]:
    """(value, label, style) of the paper's published best and the grid's best, where known."""
    lines = []
    if group.published_best:
        config, value = group.published_best
        lines.append(
            (value, f"published best (paper, oracle-selected): {value:.2f} ({config})", PUBLISHED_STYLE)
        )
    if group.grid_best is not None:
        lines.append((group.grid_best, f"grid's best (ours): {group.grid_best:.2f}", GRID_STYLE))
    return lines


def _add_level(
    figure: Any, value: float, label: str, style: dict[str, Any], widest: dict[str, float]
) -> None:
    """A horizontal line across both panels, to the widest budget a sweep reached."""
    go = _go()
    for col, (attr, _) in enumerate(BUDGETS, 1):
        figure.add_trace(
            go.Scatter(
                x=[0, widest[attr] or 1],
                y=[value, value],
                mode="lines",
                line=style,
                name=label,
                legendgroup=label,
                showlegend=col == 1,
                hovertemplate=f"{label}<extra></extra>",
            ),
            row=1,
            col=col,
        )


def grid_vs_published(rows: Sequence[GridRow]) -> str:
    """Ours against published for every replayed grid configuration, ± 2 SE of the difference."""
    go = _go()
    figure = go.Figure()
    several = len({r.sweep for r in rows}) > 1
    for target in sorted({r.target for r in rows}):
        mine = [r for r in rows if r.target == target]
        figure.add_trace(
            go.Scatter(
                x=[r.published for r in mine],
                y=[r.ours for r in mine],
                error_y={"type": "data", "array": [2 * r.se_difference for r in mine], "thickness": 1},
                mode="markers",
                name=target,
                text=[f"{r.configuration} ({r.sweep})" if several else r.configuration for r in mine],
                customdata=[[r.difference, "yes" if r.within_noise else "no"] for r in mine],
                hovertemplate=(
                    "%{text} · " + target + "<br>ours %{y:.2f}, published (paper) %{x:.2f}<br>"
                    "difference %{customdata[0]:+.2f}, within noise: %{customdata[1]}<extra></extra>"
                ),
            )
        )
    low = min(min(r.published for r in rows), min(r.ours for r in rows)) - 5
    high = max(max(r.published for r in rows), max(r.ours for r in rows)) + 5
    figure.add_trace(
        go.Scatter(
            x=[low, high],
            y=[low, high],
            mode="lines",
            line={"color": "black", "width": 1},
            name="ours = published",
        )
    )
    figure.update_xaxes(title_text="published accuracy (%) (paper)")
    figure.update_yaxes(title_text="our accuracy (%), single run, ± 2 SE of the difference")
    _layout(figure, "replayed grid: ours against published (both oracle protocol)", 480)
    return to_json(figure)


NOT_SAMPLED = "not sampled"  # a conditional parameter a trial did not have (p0 of a target map)


def _axis(values: Sequence[Any]) -> tuple[list[Any], list[str] | None]:
    """Numbers stay numbers (None where a trial lacks the parameter); anything else (lists,
    strings, booleans) becomes categories in a stable order: (values to plot, categories or None)."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return list(values), None
    labels = [
        NOT_SAMPLED
        if v is None
        else v
        if isinstance(v, str)
        else matters.conv_label(v).removeprefix("convs ")
        for v in values
    ]
    if all(re.fullmatch(r"\d+(,\d+)*", label) for label in labels if label != NOT_SAMPLED):
        # conv sets: by size, then by their convs
        order = sorted(
            set(labels) - {NOT_SAMPLED}, key=lambda c: (c.count(","), [int(x) for x in c.split(",")])
        )
        return labels, order + [NOT_SAMPLED] * (NOT_SAMPLED in labels)
    return labels, sorted(set(labels))


def _numeric_dimension(key: str, column: Sequence[float | None]) -> dict[str, Any]:
    """A numeric axis; trials without the parameter sit on a `not sampled` tick below it."""
    present = [float(v) for v in column if v is not None]
    if len(present) == len(column):
        return {"label": key, "values": list(column)}
    low, high = (min(present), max(present)) if present else (0.0, 1.0)
    step = (high - low) / 4 or 1.0
    below = low - step
    ticks = [low + i * step for i in range(5)] if high > low else [low]
    return {
        "label": key,
        "values": [below if v is None else v for v in column],
        "range": [below, high],
        "tickvals": [below, *ticks],
        "ticktext": [NOT_SAMPLED, *(f"{t:.3g}" for t in ticks)],
    }


def parallel(
    values: Sequence[Mapping[str, Any]],
    metric: Sequence[float],
    epochs: Sequence[int],
    name: str,
    label: str,
    mode: str,
) -> str:
    """Parallel coordinates over the searched parameters, the epochs each trial ran and its
    selection metric (the line colour)."""
    go = _go()
    dimensions = []
    for key in sorted({k for v in values for k in v}):
        plotted, categories = _axis([v.get(key) for v in values])
        if categories is None:
            dimensions.append(_numeric_dimension(key, plotted))
        else:
            index = {c: i for i, c in enumerate(categories)}
            dimensions.append(
                {
                    "label": key,
                    "values": [index[c] for c in plotted],
                    "tickvals": list(range(len(categories))),
                    "ticktext": categories,
                }
            )
    dimensions.append({"label": "epochs run", "values": list(epochs)})
    dimensions.append({"label": label.split(" ")[0], "values": list(metric)})
    figure = go.Figure(
        go.Parcoords(
            line={
                "color": list(metric),
                "colorscale": "Viridis",
                "reversescale": mode == "min",
                "showscale": True,
                "colorbar": {"title": {"text": label.split(" ")[0]}},
            },
            dimensions=dimensions,
        )
    )
    _layout(figure, f"{name}: parallel coordinates, {len(metric)} trials · {label}", 440)
    figure.update_layout(margin={"l": 70, "r": 40, "t": 90, "b": 40})
    return to_json(figure)


def slices(
    values: Sequence[Mapping[str, Any]],
    metric: Sequence[float],
    complete: Sequence[bool],
    trials: Sequence[str],
    name: str,
    label: str,
) -> str:
    """The selection metric against each searched parameter, one panel a parameter (hollow:
    stopped early by ASHA, scored on fewer epochs)."""
    go = _go()
    from plotly.subplots import make_subplots

    keys = sorted({k for v in values for k in v})
    figure = make_subplots(rows=1, cols=max(1, len(keys)), shared_yaxes=True, subplot_titles=keys)
    for col, key in enumerate(keys, 1):
        plotted, categories = _axis([v.get(key) for v in values])
        for full in (True, False):
            index = [i for i, c in enumerate(complete) if c == full]
            if not index:
                continue
            figure.add_trace(
                go.Scatter(
                    x=[plotted[i] for i in index],
                    y=[metric[i] for i in index],
                    mode="markers",
                    marker={"size": 7, "symbol": "circle" if full else "circle-open", "color": "#3b6ea8"},
                    name="full budget" if full else "stopped early (fewer epochs)",
                    legendgroup=str(full),
                    showlegend=col == 1,
                    text=[trials[i] for i in index],
                    hovertemplate=f"%{{text}}<br>{key} %{{x}}<br>%{{y:.4g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        if categories is not None:
            figure.update_xaxes(
                type="category", categoryorder="array", categoryarray=categories, row=1, col=col
            )
    figure.update_yaxes(title_text=label.split(" ")[0], row=1, col=1)
    _layout(figure, f"{name}: the metric against each searched parameter · {label}", 400)
    return to_json(figure)


def heat_map(cells: matters.HeatMap, metric: str, protocol: str, mode: str, title: str) -> str:
    """conv set × p0 (matters.heat_map_cells): the mean selection metric of each cell, its
    number of trials written in."""
    go = _go()
    text = [
        [f"{m:.1f}<br>n={n}" if m is not None else "" for m, n in zip(mr, cr, strict=True)]
        for mr, cr in zip(cells.mean, cells.count, strict=True)
    ]
    figure = go.Figure(
        go.Heatmap(
            z=[list(row) for row in cells.mean],
            x=list(cells.columns),
            y=list(cells.rows),
            text=text,
            texttemplate="%{text}",
            customdata=[list(row) for row in cells.count],
            colorscale="Viridis",
            reversescale=mode == "min",
            colorbar={"title": {"text": f"mean {metric}"}},
            hovertemplate="%{y} · p0 %{x}<br>mean %{z:.2f} over %{customdata} trials<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    figure.update_xaxes(title_text="p0", type="category")
    figure.update_yaxes(type="category", autorange="reversed")
    _layout(
        figure,
        f"{title}<br><sub>{matters.selected_label(metric, protocol, mode)}</sub>",
        180 + 34 * max(1, len(cells.rows)),
    )
    return to_json(figure)


def importances(values: Mapping[str, float], name: str, objective: str) -> str:
    """A search's parameter importances (what compare computed with Optuna), largest on top."""
    go = _go()
    ranked = sorted(values.items(), key=lambda kv: kv[1])
    figure = go.Figure(
        go.Bar(
            x=[v for _, v in ranked],
            y=[k for k, _ in ranked],
            orientation="h",
            marker={"color": "#3b6ea8"},
            hovertemplate="%{y}: %{x:.3g}<extra></extra>",
        )
    )
    figure.update_xaxes(title_text="importance (Optuna's evaluator, as compare ran it)", rangemode="tozero")
    _layout(figure, f"{name}: parameter importances · objective {objective}", 140 + 40 * max(1, len(ranked)))
    return to_json(figure)
