"""What a space will do, in words: the dry run, the selection line, and what it needs of a machine."""

from __future__ import annotations

from typing import Any

import yaml

from asha_tune.spaces.space import CONFIGURATION_KEY, SearchSpace
from asha_tune.trial.datasets import DATASETS
from asha_tune.trial.selection import label_free, selection_metric


def _names(domains: tuple[str, ...] | None, default: str) -> str:
    return ", ".join(domains) if domains is not None else default


def describe_selection(space: SearchSpace) -> str:
    """One line: which images select the sweep's configurations, and what the scheduler optimises."""
    s, d, scheduler = space.selection, space.data, space.scheduler
    each = " of each source domain" if len(d.sources) > 1 else ""
    held = f"{s.val_fraction:.0%} per class{each}, split seed {s.split_seed}"
    sources = ", ".join(d.sources)
    targets = _names(d.target_domains, "every domain of the data root but the sources")
    score = label_free(s.protocol)
    where = s.info.described.format(
        sources=sources, targets=targets, held=held, score=score.summary if score else ""
    )
    better = "lower" if scheduler.mode == "min" else "higher"
    epoch = (
        f"; each trial reports its best epoch by {selection_metric(s.protocol)[0]} and keeps its weights "
        "(selection.epoch best)"
        if s.epoch == "best"
        else ""
    )
    return (
        f"{s.protocol}: {where}; the scheduler and the search optimise {scheduler.metric} ({better} is "
        f"better){epoch}"
    )


def fold_cost(space: SearchSpace) -> str:
    """What a fold protocol (lodo) adds to a trial: a fold model per source domain (K + 1 models,
    K times the training images of one model on all sources: N + sum over v of (N - N_v) = K·N)."""
    counts = sorted({len(_as_sources(v)) for v in _choices(space, "data.source", space.data.source)})
    k = "/".join(map(str, counts))
    models = "/".join(str(c + 1) for c in counts)
    return (
        f"{space.selection.protocol} trains {models} models per trial (one per source domain, on the "
        f"other sources, besides the reported one): {k}x the training images per epoch of one model on all "
        f"sources, plus each fold's evaluation of its left-out domain"
    )


def _as_sources(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v for v in value.split(",") if v.strip()]
    return list(value)


def describe(space: SearchSpace) -> str:
    """The dry run's text: the resolved space, then what would run."""
    fixed = space.model_dump(mode="json", exclude={"parameters", "configurations"})
    if fixed["train"]["batch_size"] is None:
        fixed["train"]["batch_size"] = "by mode (256 for modes target and bn_only, else 128)"
    lines = [yaml.safe_dump(fixed, sort_keys=False, width=1000).rstrip()]
    lines.append("parameters:")
    for name, param in space.parameters.items():
        when = f"  (when {param.when})" if param.when else ""
        lines.append(f"  {name}: {param.describe()}{when}")
    if space.search.algorithm == "list":
        lines += describe_configurations(space)
    elif space.search.algorithm == "grid":
        points = space.grid()[: space.num_trials]
        lines.append(f"grid: {len(points)} configurations")
        lines += [f"  {i:4d}  " + ", ".join(f"{k}={v}" for k, v in p.items()) for i, p in enumerate(points)]
    else:
        lines.append(
            f"{space.search.algorithm} search: {space.num_trials} trials sampled from the ranges above"
        )
    replicates = space.search.replicates
    if replicates > 1:
        lines.append(
            f"replicated: the whole search {replicates} times, as sweeps NAME.r0 .. NAME.r{replicates - 1}, "
            "each with its own sampler, trial and split seeds (replicate 0 keeps the space's)"
        )
    lines.append(f"needs: {needs(space)}")
    lines.append(f"data: {describe_data(space)}")
    lines.append(f"selection: {describe_selection(space)}")
    if space.selection.info.folds:
        lines.append(f"cost: {fold_cost(space)}")
    if space.search.reproducible:
        lines.append(
            "reproducible: one trial at a time, so a second run gives the same trials, stops and metrics"
        )
    return "\n".join(lines)


def describe_configurations(space: SearchSpace) -> list[str]:
    """Every listed configuration that will run, its settings and its published figures (marked as
    such: reference data, not results), then the total budget."""
    lines = []
    points = space.grid()[: space.num_trials]
    for i, point in enumerate(points):
        listed = space.configuration(point[CONFIGURATION_KEY])
        extra = {k: v for k, v in point.items() if k != CONFIGURATION_KEY}
        settings = ", ".join(f"{k}={v}" for k, v in {**listed.values, **extra}.items())
        settings = settings or "the fixed sections"
        note = f"  [{listed.note}]" if listed.note else ""
        lines.append(f"  {i:4d}  {listed.id}: {settings}{note}")
        if listed.published:
            figures = ", ".join(f"{k} {v:g}" for k, v in listed.published.items())
            lines.append(f"        published: {figures}" + (f" ({listed.source})" if listed.source else ""))
    epochs = space.train.epochs
    lines.insert(
        0,
        f"configurations: {len(points)} listed, each to full budget: {len(points)} trials x "
        f"{epochs} epochs = {len(points) * epochs} epochs",
    )
    return lines


def needs(space: SearchSpace) -> str:
    """What running a space asks of a machine: `asha-tune spaces` and the dry run print it."""
    r = space.resources
    per_trial = f"{r.gpu:g} GPU + {r.cpu:g} CPU per trial" if r.gpu else f"{r.cpu:g} CPU per trial, no GPU"
    weights = sorted({str(v) for v in weight_choices(space)})
    budget = f"{space.num_trials} trials x {space.train.epochs} epochs"
    if space.selection.info.folds:
        counts = sorted({len(_as_sources(v)) for v in _choices(space, "data.source", space.data.source)})
        budget += f" x {'/'.join(str(c + 1) for c in counts)} models ({space.selection.protocol})"
    if space.search.replicates > 1:
        budget = f"{space.search.replicates} replicates x {budget}"
    if space.scheduler.kind == "asha":
        budget += " (ASHA stops weak ones early)"
    return (
        f"{per_trial}, {space.search.concurrency} at once; weights {'/'.join(weights)}; "
        f"{budget}; {space.data.image_size} px"
    )


def _choices(space: SearchSpace, path: str, fixed: Any) -> list[Any]:
    """Every value a trial setting can take: the fixed one, the listed configurations', or an
    enumerable parameter's."""
    listed = [c.values[path] for c in space.active_configurations if path in c.values]
    if len(listed) < len(space.active_configurations):  # some configurations keep the fixed value
        listed.append(fixed)
    param = space.parameters.get(path)
    if param is None:
        return listed or [fixed]
    try:
        return param.choices()
    except ValueError:
        return [fixed]


def weight_choices(space: SearchSpace) -> list[str]:
    return [str(w) for w in _choices(space, "train.weights", space.train.weights)]


def describe_data(space: SearchSpace) -> str:
    """One line: the dataset, its sources and targets, how batches are drawn."""
    d = space.data
    layout = DATASETS[d.dataset]
    targets = _names(d.target_domains, "every other domain of the data root")
    sampling = f", {d.source_sampling} batches" if len(d.sources) > 1 else ""
    return (
        f"dataset {d.dataset} ({layout.origin}); source {', '.join(d.sources)}{sampling}; targets {targets}"
    )


def domain_choices(space: SearchSpace) -> set[str]:
    """Every domain a trial of this space names (defaults resolved where the dataset names its
    domains; `folder`'s default targets are every domain of the data root: reads_every_domain)."""
    domains: set[str] = set()
    layout = DATASETS[space.data.dataset]
    sources = [_as_sources(v) for v in _choices(space, "data.source", space.data.source)]
    for chosen in sources:
        domains |= set(chosen)
    for targets in _choices(space, "data.targets", space.data.targets):
        if targets is None:
            if layout.fixed_domains:
                domains |= {d for d in layout.domains if not all(d in s for s in sources)}
            continue
        domains |= {targets} if isinstance(targets, str) else set(targets)
    return domains


def reads_every_domain(space: SearchSpace) -> bool:
    """`folder` with default targets: a trial reads every domain its data root holds."""
    return not DATASETS[space.data.dataset].fixed_domains and any(
        t is None for t in _choices(space, "data.targets", space.data.targets)
    )
