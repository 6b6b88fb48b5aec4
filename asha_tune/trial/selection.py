"""Model selection: which images choose a configuration, which are only reported, and their noise.

Four protocols with labels (DomainBed's terms):
- `oracle`: the whole target domain selects and is reported (the paper's protocol). The
  selection metric then equals the reported one, so a sweep's best is biased upward.
- `source_val`: a class-stratified fraction of the source domain is held out, never trained on;
  its accuracy selects, the targets are only reported.
- `target_val`: a class-stratified fraction of each target selects; the target accuracies are
  reported on the remaining images only.
- `lodo`: DomainBed's leave-one-domain-out cross-validation, for two source domains or more.
  The reported model trains on every source image; besides it, one fold model per source domain
  v trains on the other sources (the same configuration and seed) and is evaluated on every
  image of v. val_acc is the mean over the K folds of their accuracy on their left-out domain
  (DomainBed: sum of the folds' accuracies / K); it costs K fold models on top of the reported
  one, about K times the training images of an epoch in all.

Several source domains: a protocol splits each source domain on its own (source_val holds out
the stated fraction of each, per class: DomainBed's training-domain validation) and val_acc is
the mean over the selection sets, one per source domain (DomainBed's mean of env_out_acc).

Three label-free ones, as unsupervised domain adaptation can select (score_info.py): `entropy`,
`im` and `snd` select on a score of the model's predictions for the target images every trial
already evaluates, unlabelled (no second pass, no label read); the targets' accuracies are only
reported. They split the source as `source_val` does, so `val_acc` still measures held-out
source images and a sweep under a label-free protocol records source_val's choice too (the
selection gap, analysis/replicate_stats.py, compares them on the same trials). Every trial logs the
three scores whatever its protocol (`<score>_<target>` and their mean over the targets,
`target_<score>`), so any sweep's records say what each label-free protocol would have chosen.

A split is a pure function of the file names, the fraction and the split seed (never the trial
seed): every trial of a sweep, in any process on any machine, holds out the same images.
Every accuracy comes with its binomial standard error, and every evaluation set with its size
and chance level (the majority-class rate), so a reader can tell signal from noise.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from asha_tune.errors import DataError
from asha_tune.trial.config import SelectionConfig
from asha_tune.trial.registry import SELECTION_PROTOCOLS, lookup, protocol_info
from asha_tune.trial.score_info import SCORE_INFO, ScoreInfo

# Metric names reported by a trial every epoch.
VAL_ACC = "val_acc"  # the selection metric (oracle: equal to target_acc)
TARGET_ACC = "target_acc"  # mean accuracy over the reported target sets
SE_SUFFIX = "_se"  # binomial standard error of an accuracy, in percentage points
ACC_PREFIX = "acc_"  # acc_<target>: the accuracy on one target domain (domain_acc, target_of)
# Constants of a trial, reported with every epoch too: log them once (as params), not per step.
SIZE_PREFIX = "n_"  # n_val, n_<domain>, n_target: images in an evaluation set
CHANCE_PREFIX = "chance_"  # chance_val, ...: majority-class rate of that set, in %
SPLIT_HASH = "split_hash"  # a short hash of the selection images (their file names)
DEVICE_KEY = "device"  # in every epoch's report: devices.describe_device, e.g. "cuda:0 NVIDIA H200"
VAL_SET = "val"
TARGET_SET = "target"  # all reported target images together (the set behind target_acc)
# selection.epoch best: the epoch whose figures a trial reports, and each evaluated figure of the
# epoch itself (before selection) under RAW_PREFIX + its name.
SELECTED_EPOCH = "selected_epoch"
RAW_PREFIX = "raw_"
SCORE_NAMES = tuple(SCORE_INFO)  # entropy, im, snd: logged by every trial


# What the trial read, reported with its constants (params of its run).
CLASSES_KEY = "classes"  # the class names in id order (JSON), as the head numbers them
DATA_PATH_KEY = "data_path"  # memory | stream (streaming.DataPath): where its batches came from
DATA_CONSTANTS = frozenset({CLASSES_KEY, DATA_PATH_KEY})
# A machine's choice, not the experiment's: a resumed trial may take the other path (its run keeps
# the first attempt's).
FIRST_ATTEMPT_CONSTANTS = frozenset({DATA_PATH_KEY})
# MLflow's names: letters, digits, `_ - . / :` and spaces (`acc_Real World` is one); a domain
# whose name holds anything else is reported under its name with those characters as `_`.
_UNSAFE = re.compile(r"[^\w.\- ]")
RESERVED_SET_NAMES = frozenset({VAL_SET, TARGET_SET})


def metric_name(domain: str) -> str:
    """A domain's name as its metric keys hold it (acc_<name>, n_<name>): MLflow-safe, and never
    the name of the val or target set (a domain so named is `<name>_domain`)."""
    name = _UNSAFE.sub("_", domain)
    return f"{name}_domain" if name in RESERVED_SET_NAMES else name


def check_metric_names(domains: Sequence[str]) -> None:
    """Two domains that would report under one metric name (e.g. `a+b` and `a&b`) are an error."""
    seen: dict[str, str] = {}
    for domain in domains:
        name = metric_name(domain)
        if name in seen and seen[name] != domain:
            raise ValueError(f"domains {seen[name]!r} and {domain!r} would both report as acc_{name}")
        seen[name] = domain


def domain_acc(domain: str) -> str:
    return f"{ACC_PREFIX}{metric_name(domain)}"


def se_key(metric: str) -> str:
    return metric + SE_SUFFIX


def target_of(metric: str) -> str | None:
    """The target an `acc_<target>` metric reports (its metric name); None for any other metric,
    the standard error `acc_<target>_se` included. A trial reports acc_ for its targets only."""
    if metric.startswith(ACC_PREFIX) and not metric.endswith(SE_SUFFIX):
        return metric.removeprefix(ACC_PREFIX)
    return None


def size_key(evaluation_set: str) -> str:
    """n_val, n_target, or n_<metric_name(domain)> for a domain's set."""
    return SIZE_PREFIX + evaluation_set


def chance_key(evaluation_set: str) -> str:
    return CHANCE_PREFIX + evaluation_set


def score_key(score: str, domain: str) -> str:
    """`entropy_cartoon`: a label-free score of one target's predictions (domain names made safe
    for MLflow as for accuracies, metric_name)."""
    return f"{score}_{metric_name(domain)}"


def label_free(protocol: str) -> ScoreInfo | None:
    """The score a label-free protocol selects on (entropy, im, snd), None for the others (and
    for a name no longer registered, as a past sweep's records may hold)."""
    info = SELECTION_PROTOCOLS.get(protocol)
    return SCORE_INFO[info.score] if info is not None and info.score else None


def selection_metric(protocol: str) -> tuple[str, str]:
    """(metric, direction) a trial's epochs are selected on under `protocol` (selection.epoch
    best), and the scheduler's metric by default: `val_acc` (max), or the label-free score over
    the targets (`target_entropy`, min; `target_im`, `target_snd`, max)."""
    info = label_free(protocol)
    return (info.metric, info.direction) if info else (VAL_ACC, "max")


def target_selection(protocol: str, domain: str, metric: str, mode: str) -> tuple[str, str]:
    """(metric, mode) that picks a sweep's winner for one target in an analysis: under oracle the
    target's own accuracy, under a label-free protocol that target's score, else the sweep's own
    selection metric (`metric`, `mode`: val_acc on the held-out images, the same for every target)."""
    info = SELECTION_PROTOCOLS.get(protocol)
    if info is not None and info.selects_on_reported:
        return domain_acc(domain), "max"
    score = label_free(protocol)
    return (score_key(score.name, domain), score.direction) if score else (metric, mode)


def what_selection_saw(protocol: str, source: str, targets: Sequence[str]) -> str:
    """Which images a protocol selects on, and whether it read their labels (a run's tag)."""
    return protocol_info(protocol).images.format(source=source, targets=", ".join(targets))


def score_metrics(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """`<score>_<domain>` for each target's scores, and `target_<score>`: their mean over the
    targets (each target counts once, as target_acc)."""
    metrics: dict[str, float] = {}
    for domain, values in scores.items():
        metrics.update({score_key(name, domain): value for name, value in values.items()})
    for name in SCORE_NAMES:
        per_target = [values[name] for values in scores.values() if name in values]
        if per_target:
            metrics[SCORE_INFO[name].metric] = sum(per_target) / len(per_target)
    return metrics


def better(value: float, than: float | None, direction: str) -> bool:
    """Strictly better (a tie keeps the earlier epoch); a non-finite value never is."""
    if not math.isfinite(value):
        return False
    if than is None:
        return True
    return value > than if direction == "max" else value < than


def is_constant(key: str) -> bool:
    """True for the per-trial constants (sizes, chance levels, split hash, what the trial read)
    in a trial's report."""
    return key == SPLIT_HASH or key in DATA_CONSTANTS or key.startswith((SIZE_PREFIX, CHANCE_PREFIX))


def constants_of(report: dict) -> dict:
    return {k: v for k, v in report.items() if is_constant(k)}


# --- noise -----------------------------------------------------------------------------------


def binomial_se(acc: float, n: int) -> float:
    """Standard error of an accuracy `acc` (in %) measured on n images, in percentage points."""
    p = acc / 100
    return 100 * math.sqrt(p * (1 - p) / n) if n > 0 else math.nan


def mean_with_se(measures: Sequence[tuple[float, int]]) -> tuple[float, float]:
    """The mean of accuracies measured on independent sets, and its standard error."""
    k = len(measures)
    mean = sum(acc for acc, _ in measures) / k
    return mean, math.sqrt(sum(binomial_se(acc, n) ** 2 for acc, n in measures)) / k


def chance_level(label_sets: Sequence[Sequence[int]]) -> float:
    """The score (in %) of the best constant prediction: the majority-class rate of one set, or of
    the mean accuracy over several sets (max over classes of the mean class rate)."""
    classes = sorted({c for labels in label_sets for c in labels})
    return max(
        sum(100 * list(labels).count(c) / len(labels) for labels in label_sets) / len(label_sets)
        for c in classes
    )


def epoch_metrics(
    reported: dict[str, tuple[float, int]], val: dict[str, tuple[float, int]]
) -> dict[str, float]:
    """val_acc, acc_<domain>, target_acc and the standard error of each, from (accuracy, n) pairs."""
    metrics: dict[str, float] = {}
    metrics[VAL_ACC], metrics[se_key(VAL_ACC)] = mean_with_se(list(val.values()))
    for name, (acc, n) in reported.items():
        metrics[domain_acc(name)] = acc
        metrics[se_key(domain_acc(name))] = binomial_se(acc, n)
    metrics[TARGET_ACC], metrics[se_key(TARGET_ACC)] = mean_with_se(list(reported.values()))
    return metrics


# --- splits ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """A loaded domain as the split sees it, in load order."""

    name: str
    keys: tuple[str, ...]  # file paths relative to the data root, e.g. cartoon/dog/pic_001.jpg
    labels: tuple[int, ...]

    @property
    def everything(self) -> tuple[int, ...]:
        return tuple(range(len(self.keys)))


def _quotas(counts: dict[int, int], fraction: float) -> dict[int, int]:
    """Held-out images per class: fraction·count, rounded so the total is round(fraction·N)
    (largest remainder), leaving at least one image of each class on either side."""
    exact = {c: fraction * n for c, n in counts.items()}
    quota = {c: math.floor(x) for c, x in exact.items()}
    total = round(fraction * sum(counts.values()))
    for c in sorted(counts, key=lambda c: (exact[c] - quota[c], -c), reverse=True):
        if sum(quota.values()) >= total:
            break
        quota[c] += 1
    return {c: min(max(q, 1), counts[c] - 1) if counts[c] > 1 else 0 for c, q in quota.items()}


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()


def stratified_split(domain: Domain, fraction: float, seed: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(kept, held out) positions: per class, the `quota` images whose seeded hash of their file
    name ranks first. Depends on nothing but the names, the fraction and the seed."""
    members: dict[int, list[int]] = {}
    for position, label in enumerate(domain.labels):
        members.setdefault(label, []).append(position)
    quota = _quotas({c: len(m) for c, m in members.items()}, fraction)
    held: set[int] = set()
    for c, positions in members.items():
        held.update(sorted(positions, key=lambda p: _rank(seed, domain.keys[p]))[: quota[c]])
    kept = tuple(p for p in domain.everything if p not in held)
    return kept, tuple(sorted(held))


def split_hash(val_keys: Sequence[str]) -> str:
    """A short name for a set of selection images: equal hashes, equal images."""
    return hashlib.sha256("\n".join(sorted(val_keys)).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SelectionPlan:
    """Which positions of each loaded domain a trial trains on, selects on and reports."""

    protocol: str
    train: tuple[int, ...]  # source positions trained on
    val: dict[str, tuple[int, ...]]  # domain -> positions that select
    reported: dict[str, tuple[int, ...]]  # target -> positions reported
    split_hash: str
    # lodo: left-out source domain -> the positions its fold model trains on; the fold model
    # evaluates val[that domain]. Empty for the other protocols (the reported model selects).
    folds: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def selects_on_reported(self) -> bool:
        """oracle: the selection sets are the reported ones (evaluate them once)."""
        return self.val == self.reported

    def constants(self, domains: dict[str, Domain]) -> dict[str, float | str]:
        """n_ and chance_ of every evaluation set, and the split hash."""

        def labels(name: str, positions: tuple[int, ...]) -> list[int]:
            return [domains[name].labels[p] for p in positions]

        val = [labels(n, p) for n, p in self.val.items()]
        reported = {n: labels(n, p) for n, p in self.reported.items()}
        out: dict[str, float | str] = {
            size_key(VAL_SET): sum(map(len, val)),
            chance_key(VAL_SET): chance_level(val),
        }
        for name, ls in reported.items():
            out[size_key(metric_name(name))] = len(ls)
            out[chance_key(metric_name(name))] = chance_level([ls])
        out[size_key(TARGET_SET)] = sum(map(len, reported.values()))
        out[chance_key(TARGET_SET)] = chance_level(list(reported.values()))
        out[SPLIT_HASH] = self.split_hash
        return out


Sets = tuple[tuple[int, ...], dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]


def _oracle(selection: SelectionConfig, source: Domain, targets: list[Domain]) -> Sets:
    whole = {t.name: t.everything for t in targets}
    return source.everything, whole, dict(whole)


def _split(selection: SelectionConfig, domain: Domain) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """stratified_split, refused in one line where it holds out nothing (every class of the
    domain has one image, which it keeps: a selection set of no image scores nothing)."""
    kept, held = stratified_split(domain, selection.val_fraction, selection.split_seed)
    if not held:
        raise DataError(
            f"selection {selection.protocol} holds out no image of {domain.name}: a class keeps at least "
            f"one image and holds out a fraction of the rest, and each of {domain.name}'s classes has one "
            "image; use more images per class, or selection: oracle"
        )
    return kept, held


def _source_val(selection: SelectionConfig, source: Domain, targets: list[Domain]) -> Sets:
    kept, held = _split(selection, source)
    return kept, {source.name: held}, {t.name: t.everything for t in targets}


def _target_val(selection: SelectionConfig, source: Domain, targets: list[Domain]) -> Sets:
    splits = {t.name: _split(selection, t) for t in targets}
    return (
        source.everything,
        {n: held for n, (_, held) in splits.items()},
        {n: kept for n, (kept, _) in splits.items()},
    )


def _lodo(selection: SelectionConfig, source: Domain, targets: list[Domain]) -> Sets:
    """A source domain trains the reported model whole and is, whole, its fold's selection set
    (evaluated by the fold model that never trained on it: SelectionPlan.folds)."""
    return source.everything, {source.name: source.everything}, {t.name: t.everything for t in targets}


PROTOCOLS: dict[str, Callable[[SelectionConfig, Domain, list[Domain]], Sets]] = {
    "oracle": _oracle,
    "source_val": _source_val,
    "target_val": _target_val,
    "lodo": _lodo,
    # Label-free: the scores select on the reported target images; the source is split as under
    # source_val, so val_acc measures held-out source images (never trained on).
    "entropy": _source_val,
    "im": _source_val,
    "snd": _source_val,
}


def plan_selection(
    selection: SelectionConfig, source: Domain | Sequence[Domain], targets: list[Domain]
) -> SelectionPlan:
    """The protocol applied to each source domain on its own; their training images together
    (positions in the sources' concatenation, in the order given), their selection sets side by
    side (val_acc is their mean)."""
    sources = [source] if isinstance(source, Domain) else list(source)
    split = lookup(PROTOCOLS, selection.protocol, "selection protocol")
    train: list[int] = []
    val: dict[str, tuple[int, ...]] = {}
    reported: dict[str, tuple[int, ...]] = {}
    offset = 0
    for domain in sources:
        kept, selects, reports = split(selection, domain, targets)
        train += [offset + p for p in kept]
        val.update(selects)
        reported.update(reports)
        offset += len(domain.keys)
    domains = {d.name: d for d in (*sources, *targets)}
    keys = [domains[name].keys[p] for name, positions in val.items() for p in positions]
    folds = _folds(sources) if selection.info.folds else {}
    return SelectionPlan(selection.protocol, tuple(train), val, reported, split_hash(keys), folds)


def _folds(sources: Sequence[Domain]) -> dict[str, tuple[int, ...]]:
    """For each source domain, the positions (in the sources' concatenation) its fold trains on:
    every image of the other sources."""
    spans, offset = {}, 0
    for d in sources:
        spans[d.name] = range(offset, offset + len(d.keys))
        offset += len(d.keys)
    return {
        left_out: tuple(p for name, span in spans.items() if name != left_out for p in span)
        for left_out in spans
    }


def adaptation_images(protocol: str, target: str, limit_per_domain: int | None) -> str:
    """What the unlabelled target batches of `target`/`bn_only` come from: every image of the
    target (transductive, as the paper), including the ones that are evaluated."""
    scope = (
        f"the {limit_per_domain}-image subset of {target}" if limit_per_domain else f"all images of {target}"
    )
    split = protocol_info(protocol).split
    included = "validation and reported images alike" if split == "target" else "the reported images included"
    return f"transductive: {scope}, unlabelled, {included} (as the paper)"
