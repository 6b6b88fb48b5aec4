"""What a trial reads: its domains loaded once, split as its selection protocol says, and placed
on its device or left in host memory to be streamed.

Datasets. Every dataset, PACS included, is checked against its layout and listed once
(datasets.list_dataset: the listing the sweep's preflight checked), then each domain is read
from its decode cache (`load_domain`): PACS from the `.pt` file it always had, every other
dataset from the parallel, resumable, memory-mapped cache (cache.py). PACS's class ids are the
authors'. The class order (ids = positions) is reported with the trial's constants
(selection.CLASSES_KEY) and kept in its checkpoints.

Data paths. A trial's images (its training images at the crop base size, the adaptation target
at the same size, every evaluation set at image size, and a fold model's own copies under lodo)
go to the device whole when they fit the budget (Runtime.data_budget, by default
streaming.device_budget: half the device's memory split between the trials sharing it):
the `memory` path, as before. Beyond it they stay in host memory (the page cache of the memory
map) and every batch is gathered and copied ahead of use (streaming.BatchStream): the `stream`
path. Both give the same uint8 batches in the same order, so a trial computes the same with
either; the choice is logged and reported (selection.DATA_PATH_KEY). Labels always live on the
device.

Several source domains. Their images are concatenated in the order of `data.sources` (sorted);
a source image's position (the index pairing of target-map modes) is its position in that
concatenation. An epoch is ceil(N / B) steps for N training images and batch size B, the last
step N - (steps - 1)·B images (a last step of one image joins the one before: BatchNorm cannot
train on a single image), whatever the sampling:
- `union`: one random permutation of all N images, cut into those batches;
- `balanced`: a batch of b images holds floor(b / K) images of each of the K sources and one more
  of b mod K of them, the sources taking that extra image in turn from batch to batch. Each
  source's images come from its own random permutations, a fresh one whenever it runs out within
  the epoch: a small domain is repeated, a large one sampled without repetition. With one source
  this is exactly the permutation `union` draws.
Both draw from the trial's order generator only, so a resumed trial continues bit-for-bit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from asha_tune.errors import DataError
from asha_tune.trial import selection
from asha_tune.trial.cache import PT_CACHE_DATASETS, load_cached_domain, load_pt_cache
from asha_tune.trial.config import CLASSES, Runtime, TrialConfig
from asha_tune.trial.datasets import DatasetFiles, list_dataset
from asha_tune.trial.decoding import DomainImages, train_base_size
from asha_tune.trial.streaming import BatchStream, DataPath, Parts, choose_path, device_budget, images_bytes

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000  # MLflow's longest param value
PROGRESS_EVERY_S = 30.0  # decode progress lines in a log (inside Ray: no progress bar)


@dataclass
class StreamedImages:
    """Images left in host memory (memory-mapped caches), gathered batch by batch to the device.

    `rows[i]` is image i's row in `train`/`test` (the domains read as one); `labels` is on the
    device. The same attributes as decoding.DomainImages where they mean the same (`labels`, len).
    """

    train: Parts
    test: Parts
    rows: Tensor  # CPU, long
    labels: Tensor
    device: torch.device

    def __len__(self) -> int:
        return len(self.labels)

    def stream(self, part: str) -> BatchStream:
        return BatchStream(getattr(self, part), self.rows, self.device)


Images = DomainImages | StreamedImages


@dataclass
class TrialData:
    """Everything a trial reads, split as its selection protocol says, on its device or streamed."""

    source: Images  # the images trained on (source_val: without the held-out ones)
    source_positions: Tensor  # their positions in the (limited) source domains, on the CPU
    targets: dict[str, Images]  # reported (target_val: without the validation images)
    val: dict[str, Images]  # the selection sets (oracle: the reported sets themselves)
    adaptation: Images | None  # unlabelled target images for target batches
    constants: dict[str, float | str]  # sizes, chance levels, split hash, classes, data path
    load_seconds: float
    classes: tuple[str, ...] = CLASSES  # class names in id order: the head's outputs
    source_sizes: tuple[int, ...] = ()  # training images per source domain, in source order
    path: DataPath | None = None
    folds: dict[str, TrialData] = field(default_factory=dict)  # lodo: per left-out source

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# --- batches ---------------------------------------------------------------------------------


def epoch_order(
    sampling: str, sizes: Sequence[int], batch: int, generator: torch.Generator
) -> tuple[Tensor, list[int]]:
    """An epoch's training order (positions, CPU) and its batch sizes (module docstring)."""
    total = sum(sizes)
    steps = math.ceil(total / batch)
    lengths = [batch] * (steps - 1) + [total - (steps - 1) * batch] if steps else []
    if len(lengths) > 1 and lengths[-1] == 1:  # BatchNorm cannot train on one image
        lengths[-2:] = [batch + 1]
    if sampling == "union" or len(sizes) <= 1:
        return torch.randperm(total, generator=generator), lengths
    return _balanced(sizes, lengths, generator), lengths


def _balanced(sizes: Sequence[int], lengths: Sequence[int], generator: torch.Generator) -> Tensor:
    k = len(sizes)
    shares, first = [], 0
    for b in lengths:
        extra = b % k
        favoured = {(first + j) % k for j in range(extra)}
        shares.append([b // k + (s in favoured) for s in range(k)])
        first = (first + extra) % k
    offsets = [0, *torch.tensor(list(sizes)).cumsum(0).tolist()]
    streams = []
    for s, n in enumerate(sizes):
        need = sum(share[s] for share in shares)
        draws = [torch.randperm(n, generator=generator) for _ in range(math.ceil(need / n))]
        streams.append((torch.cat(draws)[:need] if draws else torch.zeros(0, dtype=torch.long)) + offsets[s])
    taken = [0] * k
    order = []
    for share in shares:
        for s, count in enumerate(share):
            order.append(streams[s][taken[s] : taken[s] + count])
            taken[s] += count
    return torch.cat(order)


def spans(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """(begin, length) of each batch in an epoch's order."""
    begins = [0, *torch.tensor(list(lengths)).cumsum(0).tolist()[:-1]] if lengths else []
    return list(zip(begins, lengths, strict=True))


def train_batches(
    images: Images, cpu_order: Tensor, order: Tensor, cuts: Sequence[tuple[int, int]]
) -> Generator[Tensor, None, None]:
    """uint8 batches at the crop base size, on the device, for the positions of each cut of the
    epoch's order (`order` on the device, `cpu_order` the same on the CPU)."""
    if isinstance(images, StreamedImages):
        yield from images.stream("train").iterate(cpu_order[b : b + n] for b, n in cuts)
        return
    for b, n in cuts:
        yield images.train[order[b : b + n]]


def test_batches(images: Images, step: int) -> Generator[tuple[Tensor, Tensor], None, None]:
    """(uint8 batch at image size, its labels), in order, `step` images at a time."""
    n = len(images)
    if isinstance(images, StreamedImages):
        index = torch.arange(n).split(step)
        for begin, x in zip(range(0, n, step), images.stream("test").iterate(index), strict=True):
            yield x, images.labels[begin : begin + step]
        return
    for begin in range(0, n, step):
        yield images.test[begin : begin + step], images.labels[begin : begin + step]


# --- loading ---------------------------------------------------------------------------------


@dataclass
class _Domain:
    """A loaded domain: the whole cached domain (host) and the rows the trial keeps of it."""

    whole: DomainImages
    rows: Tensor  # rows of `whole` in the trial's (limited) domain, CPU
    split: selection.Domain


@dataclass
class _Loaded:
    classes: tuple[str, ...]
    domains: dict[str, _Domain]
    targets: tuple[str, ...]


def _progress_logger(domain: str) -> Callable[[int, int], None]:
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            log.info("decoded %d of %d images of %s (%.0f%%)", done, total, domain, 100 * done / total)

    return report


def stratified_subset(labels: Tensor, limit: int | None) -> Tensor:
    """A deterministic subset of `limit` indices keeping the class proportions (evenly spaced)."""
    n = len(labels)
    if limit is None or limit >= n:
        return torch.arange(n)
    classes = labels.unique().tolist()
    counts = {c: int((labels == c).sum()) for c in classes}
    # Largest-remainder quotas, at least one image per class.
    exact = {c: max(1.0, limit * counts[c] / n) for c in classes}
    quota = {c: min(counts[c], math.floor(exact[c])) for c in classes}
    for c in sorted(classes, key=lambda c: exact[c] - quota[c], reverse=True):
        if sum(quota.values()) >= limit:
            break
        if quota[c] < counts[c]:
            quota[c] += 1
    picked = []
    for c in classes:
        members = (labels == c).nonzero().flatten()
        step = counts[c] / quota[c]
        picked += [members[int((j + 0.5) * step)] for j in range(quota[c])]
    return torch.stack(picked).sort().values


def _limited(name: str, whole: DomainImages, keys: Sequence[str], limit: int | None) -> _Domain:
    rows = stratified_subset(whole.labels, limit)
    labels = whole.labels[rows].tolist()
    return _Domain(whole, rows, selection.Domain(name, tuple(keys[i] for i in rows.tolist()), tuple(labels)))


def _load_dataset(config: TrialConfig, root: Path, cache: Path, progress: bool | None) -> _Loaded:
    """The data root checked against the dataset's layout, each domain read from its cache."""
    d = config.data
    wanted = d.target_domains
    files = list_dataset(d.dataset, root, None if wanted is None else [*d.sources, *wanted])
    targets = d.targets_among(files.domains)
    if not targets:
        raise DataError(f"data root {root} holds no domain besides the sources {', '.join(d.sources)}")
    classes = files.classes
    if d.limit_per_domain is not None and d.limit_per_domain < len(classes):
        raise DataError(
            f"data.limit_per_domain {d.limit_per_domain} is below the {len(classes)} classes of {root}"
        )
    domains = {}
    for name in (*d.sources, *targets):
        whole = load_domain(files, name, d.image_size, cache, progress)
        domains[name] = _limited(name, whole, files[name].keys(), d.limit_per_domain)
    return _Loaded(classes, domains, targets)


def load_domain(
    files: DatasetFiles, domain: str, image_size: int, cache: Path, progress: bool | None = None
) -> DomainImages:
    """One whole domain of a listed data root, decoded first if its cache lacks it: PACS into
    its `.pt` file (cache.load_pt_cache), every other dataset in parallel into the folder cache,
    with a progress bar (`progress` None: on a terminal) or else log lines."""
    if files.dataset in PT_CACHE_DATASETS:
        return load_pt_cache(files[domain], image_size, cache, files.dataset)
    logged = None if progress else _progress_logger(domain)  # a bar shows it, else the log does
    whole, built = load_cached_domain(
        files[domain], image_size, cache, files.dataset, progress=progress, on_progress=logged
    )
    if built.decoded:
        log.info(
            "decoded %d images of %s in %.1f s (%d workers)",
            built.decoded,
            domain,
            built.seconds,
            built.workers,
        )
    return whole


def load_domains(config: TrialConfig, runtime: Runtime, progress: bool | None = None) -> _Loaded:
    """Every domain the trial reads, each limited as configured, its class order and targets."""
    root, cache = runtime.resolved_data_root(), runtime.resolved_cache_dir()
    loaded = _load_dataset(config, root, cache, progress)
    try:
        selection.check_metric_names(list(loaded.domains))
    except ValueError as err:
        raise DataError(f"data root {root}: {err}") from None
    return loaded


# --- placing: on the device, or left for streaming --------------------------------------------

Pieces = list[tuple[str, Sequence[int]]]  # (domain, positions in its limited domain), concatenated


def _pieces(positions: Sequence[int], names: Sequence[str], sizes: Sequence[int]) -> Pieces:
    """Positions in the concatenation of `names` (sizes given), as per-domain positions."""
    out: Pieces = []
    start = 0
    for name, size in zip(names, sizes, strict=True):
        local = [p - start for p in positions if start <= p < start + size]
        if local:
            out.append((name, local))
        start += size
    return out


class _Placer:
    """Image sets built from positions of the loaded domains: copied to the device (memory) or
    left in host memory with their rows (stream)."""

    def __init__(self, loaded: _Loaded, device: torch.device, stream: bool):
        self.domains, self.device, self.stream = loaded.domains, device, stream

    def images(self, pieces: Pieces, parts: tuple[str, ...]) -> Images:
        rows = [
            (name, self.domains[name].rows[torch.tensor(list(p), dtype=torch.long)]) for name, p in pieces
        ]
        if self.stream:
            return self._streamed(rows)
        if len(rows) == 1:
            name, r = rows[0]
            return _take(self.domains[name].whole, r, parts, self.device)
        train, test = (self._joined(rows, a, a in parts) for a in ("train", "test"))
        return DomainImages(train, test, self._labels(rows))

    def _joined(self, rows: list[tuple[str, Tensor]], part: str, needed: bool) -> Tensor:
        """Several domains' images in one device tensor, copied in place piece by piece (a
        concatenation on the device would hold them twice for a moment)."""
        first = getattr(self.domains[rows[0][0]].whole, part)
        if not needed:
            return first[:0].to(self.device)
        shape = (sum(len(r) for _, r in rows), *first.shape[1:])
        out = torch.empty(shape, dtype=first.dtype, device=self.device)
        begin = 0
        for name, r in rows:
            out[begin : begin + len(r)].copy_(getattr(self.domains[name].whole, part)[r], non_blocking=True)
            begin += len(r)
        return out

    def _labels(self, rows: list[tuple[str, Tensor]]) -> Tensor:
        return torch.cat([self.domains[name].whole.labels[r] for name, r in rows]).to(self.device)

    def _streamed(self, rows: list[tuple[str, Tensor]]) -> StreamedImages:
        names = list(dict.fromkeys(name for name, _ in rows))
        wholes = [self.domains[name].whole for name in names]
        train, test = Parts([w.train for w in wholes]), Parts([w.test for w in wholes])
        index = torch.cat([train.starts[names.index(name)] + r for name, r in rows])
        labels = torch.cat([self.domains[name].whole.labels[r] for name, r in rows])
        return StreamedImages(train, test, index, labels.to(self.device), self.device)


def _take(images: DomainImages, rows: Tensor, parts: tuple[str, ...], device: torch.device) -> DomainImages:
    """The images at `rows`, only the parts needed, on the device (no copy for all of them)."""
    index = None if torch.equal(rows, torch.arange(len(images))) else rows

    def pick(t: Tensor, needed: bool = True) -> Tensor:
        if not needed:
            return t[:0].to(device)
        return (t if index is None else t[index]).to(device, non_blocking=True)

    return DomainImages(
        pick(images.train, "train" in parts), pick(images.test, "test" in parts), pick(images.labels)
    )


def _bytes_needed(
    plan: selection.SelectionPlan, loaded: _Loaded, image_size: int, adaptation: str | None
) -> int:
    """What the memory path would put on the device (module docstring)."""
    base = train_base_size(image_size)
    train = len(plan.train) + sum(len(p) for p in plan.folds.values())
    if adaptation is not None:
        train += len(loaded.domains[adaptation].rows)
        train += sum(len(loaded.domains[v].rows) for v in plan.folds)
    tested = sum(map(len, plan.reported.values()))
    if not plan.selects_on_reported:
        tested += sum(map(len, plan.val.values()))
    return images_bytes(train, base) + images_bytes(tested, image_size)


def data_budget(runtime: Runtime, device: torch.device) -> int:
    if runtime.data_budget is not None:
        return runtime.data_budget
    return device_budget(device, sharing=runtime.trials_per_device)


def classes_param(classes: Sequence[str]) -> str:
    """The class order as a run's param: JSON, or its size and hash where MLflow's limit cuts it."""
    text = json.dumps(list(classes), ensure_ascii=False)
    if len(text) <= MAX_PARAM_CHARS:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{len(classes)} classes, sha256 {digest} (too long for a param; the checkpoint lists them)"


def load_trial_data(
    config: TrialConfig,
    runtime: Runtime,
    device: torch.device,
    need_target_train: bool,
    progress: bool | None = None,
) -> TrialData:
    """Load the trial's domains and split them into training, selection and reported images."""
    start = time.perf_counter()
    loaded = load_domains(config, runtime, progress)
    sources = config.data.sources
    plan = selection.plan_selection(
        config.selection,
        [loaded.domains[s].split for s in sources],
        [loaded.domains[t].split for t in loaded.targets],
    )
    adapt = loaded.targets[0] if need_target_train else None  # every target image, unlabelled
    needed = _bytes_needed(plan, loaded, config.data.image_size, adapt)
    path = choose_path(needed, data_budget(runtime, device))
    log.info("data path: %s", path)
    place = _Placer(loaded, device, path.kind == "stream")
    sizes = [len(loaded.domains[s].rows) for s in sources]

    targets = {t: place.images([(t, plan.reported[t])], ("test",)) for t in loaded.targets}
    val = (
        targets
        if plan.selects_on_reported
        else {name: place.images([(name, positions)], ("test",)) for name, positions in plan.val.items()}
    )
    adaptation = place.images(_whole(loaded, adapt), ("train",)) if adapt else None
    source = place.images(_pieces(plan.train, sources, sizes), ("train",))
    folds = _lodo_folds(plan, loaded, place, sources, val, adapt is not None, path)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    trained = [
        sum(1 for p in plan.train if begin <= p < begin + n)
        for begin, n in zip(_starts(sizes), sizes, strict=True)
    ]
    return TrialData(
        source,
        torch.tensor(plan.train, dtype=torch.long),
        targets,
        val,
        adaptation,
        _constants(plan, loaded, path),
        time.perf_counter() - start,
        loaded.classes,
        tuple(trained),
        path,
        folds,
    )


def _whole(loaded: _Loaded, name: str) -> Pieces:
    """Every image of one loaded domain."""
    return [(name, range(len(loaded.domains[name].rows)))]


def _lodo_folds(
    plan: selection.SelectionPlan,
    loaded: _Loaded,
    place: _Placer,
    sources: Sequence[str],
    val: dict[str, Images],
    adapts: bool,
    path: DataPath,
) -> dict[str, TrialData]:
    """lodo's fold models, one per left-out source domain: each trains on every image of the
    other sources and evaluates its left-out domain's selection set (adapting on that domain's
    images where the mode adapts). Empty for the other protocols."""
    sizes = [len(loaded.domains[s].rows) for s in sources]
    folds = {}
    for left_out, positions in plan.folds.items():
        others = [s for s in sources if s != left_out]
        evaluation = {left_out: val[left_out]}
        folds[left_out] = TrialData(
            place.images(_pieces(positions, sources, sizes), ("train",)),
            torch.arange(len(positions)),  # the fold trains on every image of its sources
            evaluation,
            evaluation,
            place.images(_whole(loaded, left_out), ("train",)) if adapts else None,
            {},
            0.0,
            loaded.classes,
            tuple(sizes[sources.index(s)] for s in others),
            path,
        )
    return folds


def _constants(plan: selection.SelectionPlan, loaded: _Loaded, path: DataPath) -> dict[str, float | str]:
    """The trial's constants (sizes, chance levels, split hash; see SelectionPlan.constants), its
    class order and its data path."""
    constants = plan.constants({name: d.split for name, d in loaded.domains.items()})
    constants[selection.CLASSES_KEY] = classes_param(loaded.classes)
    constants[selection.DATA_PATH_KEY] = path.kind
    return constants


def _starts(sizes: Sequence[int]) -> list[int]:
    return [sum(sizes[:i]) for i in range(len(sizes))]
