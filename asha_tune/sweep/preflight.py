"""Checks a sweep passes before anything starts: no Ray, nothing written.

A request that cannot succeed (a GPU share on a machine without a GPU, a data root without the
domains, weights that cannot be fetched) otherwise fails inside every trial, or never starts at
all while Ray waits for resources. Each check raises a ConfigError (exit 2) that says what to change.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from asha_tune.display import count, size_text
from asha_tune.errors import ConfigError, DataError, NoSpaceError, WeightsError
from asha_tune.files import folder_problem
from asha_tune.spaces import SearchSpace, domain_choices, weight_choices
from asha_tune.spaces.describe import reads_every_domain
from asha_tune.trial.config import DataConfig, Runtime, TrialConfig
from asha_tune.trial.selection import check_metric_names

if TYPE_CHECKING:
    from asha_tune.trial.datasets import DatasetFiles

# Below this image size a CPU trial takes minutes (the quickstart's 64 px); at 224 px, hours.
CPU_SIZED_PX = 128


def check_address(address: str, timeout_s: float = 10.0) -> None:
    """Something listens at a cluster's `host:port` (Ray itself retries a dead address for
    minutes before it gives up). `auto` and `ray://` client addresses are left to Ray."""
    host, _, port = address.rpartition(":")
    if address == "auto" or "://" in address or not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        reason = "nothing listens there" if isinstance(err, ConnectionRefusedError) else str(err)
        raise ConfigError(
            f"--address {address}: cannot reach a Ray cluster ({reason}); start its head "
            f"(e.g. asha-tune cluster up) or pass the address it printed"
        ) from None


def check_results_dir(results_dir: Path) -> None:
    """Files can be written under --results-dir (a file in the way, /proc, a read-only disk); a
    full disk is left to `check_space`, which says how much the sweep needs there (exit 4)."""
    problem = folder_problem(results_dir)
    if problem is not None and not problem.full:
        raise ConfigError(
            f"--results-dir {results_dir} cannot be written ({problem.text}): choose another --results-dir"
        )


def check_cache_dir(runtime: Runtime) -> None:
    """The decoded-image cache can be written on this machine (a cluster's nodes have their own):
    a trial locks it even when everything is decoded. A full disk is not refused here: a cache
    that holds every image needs no room, and one that does not says so when it is built."""
    folder = runtime.resolved_cache_dir()
    problem = folder_problem(folder)
    if problem is not None and not problem.full:
        raise ConfigError(
            f"--cache-dir {folder} cannot be written ({problem.text}): choose another --cache-dir"
        )


def check_data(space: SearchSpace, runtime: Runtime, fingerprints: dict[str, str] | None = None) -> list[str]:
    """The data root holds every domain a trial of the space can read, as its dataset's layout
    says: one line per problem (a missing domain, a class missing from a domain, domains whose
    class folders differ, an empty class or domain, an unknown `folder` domain). Returns what the
    user should be told all the same (files skipped, and why); `fingerprints` receives each
    domain's fingerprint, for the records."""
    root = runtime.existing_data_root()
    notes: list[str] = []
    named, every = domain_choices(space), reads_every_domain(space)
    problems = data_problems(space.data, root, named, every, notes, fingerprints)
    if problems:
        raise ConfigError(problems)
    return notes


def fingerprint_text(fingerprints: dict[str, str]) -> str:
    """The data a sweep read, for its parent run (DATA_FINGERPRINT_TAG): domain and fingerprint."""
    return ", ".join(f"{domain} {fingerprints[domain]}" for domain in sorted(fingerprints))


def check_trial_data(config: TrialConfig, runtime: Runtime) -> list[str]:
    """check_data for one trial (`asha-tune trial`), before its run is recorded."""
    root = runtime.existing_data_root()
    d = config.data
    targets = d.target_domains
    named = {*d.sources, *(targets or ())}
    notes: list[str] = []
    problems = data_problems(d, root, named, targets is None, notes)
    if problems:
        raise ConfigError(problems)
    return notes


def check_trial_weights(config: TrialConfig) -> None:
    """A trial's weights file loads into its network, before its run is recorded (exit 2). ImageNet
    weights are the trial's to fetch: it says so in one line if it cannot."""
    weights = config.train.weights
    if weights in ("none", "imagenet"):
        return
    from asha_tune.trial.model import build_model

    try:
        build_model(weights)  # a head of another size is replaced, as in the trial
    except WeightsError as err:
        raise ConfigError(f"--weights {weights}: {err}") from None


def data_problems(
    data: DataConfig,
    root: Path,
    named: set[str],
    every_domain: bool,
    notes: list[str] | None = None,
    fingerprints: dict[str, str] | None = None,
) -> list[str]:
    """Every problem of the data root for these domains of data.dataset, one line each; what was
    skipped without being a problem is added to `notes`, each domain's fingerprint to
    `fingerprints`."""
    from asha_tune.trial.datasets import dataset_layout, list_dataset

    layout = dataset_layout(data.dataset)
    if layout.fixed_domains:
        missing = sorted(d for d in named if not (root / d).is_dir())
        if missing:
            return [_missing_domains(root, layout.domains, layout.domainbed_folder, missing)]
    problems: list[str] = []
    found: set[str] = set()
    classes = 0
    wanted: list[str | None] = [None] if every_domain else []
    for domain in [*wanted, *sorted(named)]:
        try:
            files = list_dataset(layout, root, None if domain is None else [domain])
        except DataError as err:
            problems.append(f"data root {root}: {err}")
            continue
        found |= set(files.domains)
        classes = files.num_classes
        _noted(files, notes, fingerprints)
    limit = data.limit_per_domain
    if not problems and limit is not None and limit < classes:
        problems.append(f"data.limit_per_domain {limit} is below the {classes} classes of {root}")
    if not problems and every_domain and not (found - set(data.sources)):
        problems.append(f"data root {root} holds no domain besides the sources {', '.join(data.sources)}")
    if not problems:
        try:
            check_metric_names(sorted(found | named))
        except ValueError as err:
            problems.append(f"data root {root}: {err}")
    return list(dict.fromkeys(problems))


def _noted(files: DatasetFiles, notes: list[str] | None, fingerprints: dict[str, str] | None) -> None:
    """What a listing tells beside its problems: the files it skipped, its domains' fingerprints."""
    skipped = files.skipped_text()
    if notes is not None and skipped and skipped not in notes:
        notes.append(skipped)
    if fingerprints is not None:
        fingerprints.update({d: f.fingerprint() for d, f in files.domains.items()})


def _missing_domains(root: Path, domains: tuple[str, ...], folder: str, missing: list[str]) -> str:
    """Domains not under the data root, and the folder inside it that holds them if one does."""
    inside = [p for p in sorted(root.iterdir()) if p.is_dir() and all((p / d).is_dir() for d in domains)]
    hint = (
        f"; did you mean --data-root {inside[0]}?"
        if inside
        else f" (expected {', '.join(d + '/' for d in domains)} in it)"
    )
    return f"data root {root} does not hold the {folder} domain(s) {', '.join(missing)}{hint}"


def check_local_resources(
    space: SearchSpace, device: str, num_cpus: float | None, num_gpus: float | None
) -> None:
    """A trial must fit on this machine, else a local Ray would wait for it forever."""
    r = space.resources
    if r.gpu > 0 or device == "cuda":  # torch only then (a rehearsal's driver never loads it)
        _check_gpus(space, device, num_gpus)
    cpus = num_cpus if num_cpus is not None else float(os.cpu_count() or 1)
    if r.cpu > cpus:
        raise ConfigError(
            f"space {space.name} asks for {r.cpu:g} CPUs per trial and this machine has "
            f"{cpus:g}: add --set resources.cpu={cpus:g}"
        )


def _check_gpus(space: SearchSpace, device: str, num_gpus: float | None) -> None:
    import torch

    from asha_tune.trial.devices import cuda_problem, has_unusable_gpu

    has_cuda = torch.cuda.is_available()
    unusable = not has_cuda and has_unusable_gpu()  # a GPU is there, torch cannot drive it
    if device == "cuda" and not has_cuda:
        if unusable:
            raise ConfigError(f"--device cuda: this machine has a GPU, but {cuda_problem()}")
        raise ConfigError("--device cuda: this machine has no CUDA device (use --device auto or cpu)")
    r = space.resources
    gpus = num_gpus if num_gpus is not None else (torch.cuda.device_count() if has_cuda else 0)
    if r.gpu > gpus:
        slow = (
            f" (slow: a {space.train.epochs}-epoch trial at {space.data.image_size} px takes hours on a CPU)"
            if space.data.image_size >= CPU_SIZED_PX
            else ""
        )
        if unusable and num_gpus is None:
            raise ConfigError(
                f"space {space.name} asks for {r.gpu:g} GPU per trial and this machine has a GPU, "
                f"but {cuda_problem()}; or add --set resources.gpu=0 to train on the CPU{slow}"
            )
        raise ConfigError(
            f"space {space.name} asks for {r.gpu:g} GPU per trial and this machine has "
            f"{'no GPU' if not gpus else f'{gpus:g}'}: add --set resources.gpu=0 to train on the "
            f"CPU{slow}, or run it on a Ray cluster with GPUs (--address)"
        )


def check_weights(space: SearchSpace) -> None:
    """Fetch or read every set of initial weights the space uses, once, on this machine.

    For a local Ray the trials share this machine's torch.hub cache, so a fetch here serves them.
    """
    from asha_tune.trial.model import build_model

    for weights in sorted(set(weight_choices(space))):
        if weights == "none":
            continue
        if weights != "imagenet" and not Path(weights).expanduser().is_absolute():
            raise ConfigError(f"weights {weights}: give an absolute path (trials run in other folders)")
        try:
            build_model(weights)
        except WeightsError as err:
            raise ConfigError(str(err)) from None


# --- the disk under --results-dir ----------------------------------------------------------------

STATE_OVERHEAD_BYTES = 256 << 10  # a checkpoint's beyond its tensors: RNG states, history, pickling
# Room kept free for Tune's own files (experiment state, per-trial results): a reserve file the
# driver holds while a sweep runs and deletes when the disk fills, so Tune can still save its state.
RESERVE_BYTES = 16 << 20
RESERVE_PER_TRIAL_BYTES = 256 << 10
MARGIN_BYTES = 32 << 20


@dataclass(frozen=True)
class SweepBytes:
    """What a sweep writes under --results-dir at its peak."""

    running: int  # trials at once
    checkpoint: int  # one trial checkpoint (model, optimiser, generators)
    final: int  # one trial's final weights
    reserve: int  # the reserve for Tune's own files
    margin: int

    @property
    def peak(self) -> int:
        """Each running trial holds its last checkpoint while it writes the next (2 each), the best
        trial's final weights are kept, and the reserve and a margin stay free."""
        return self.running * 2 * self.checkpoint + self.final + self.reserve + self.margin

    def text(self) -> str:
        return (
            f"{count(self.running, 'running trial')} x 2 checkpoints of "
            f"{size_text(self.checkpoint)} + final weights of {size_text(self.final)} + "
            f"{size_text(self.reserve + self.margin)} for Tune's files"
        )


def sweep_bytes(space: SearchSpace) -> SweepBytes:
    from asha_tune.trial.model import state_bytes

    state, params = state_bytes()
    return SweepBytes(
        running=min(space.search.concurrency, space.num_trials),
        checkpoint=state + params + STATE_OVERHEAD_BYTES,
        final=state + STATE_OVERHEAD_BYTES,
        reserve=reserve_bytes(space),
        margin=MARGIN_BYTES,
    )


def reserve_bytes(space: SearchSpace) -> int:
    return RESERVE_BYTES + RESERVE_PER_TRIAL_BYTES * space.num_trials


def free_bytes(folder: Path) -> int:
    """Free space for this user on the filesystem that holds `folder` (or would: its nearest
    existing parent)."""
    path = folder
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def folder_bytes(folder: Path) -> int:
    """What the files under `folder` take (0 where it does not exist)."""
    total = 0
    for path in folder.rglob("*") if folder.is_dir() else []:
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass
    return total


def check_space(results_dir: Path, space: SearchSpace, held: int = 0) -> None:
    """The disk under --results-dir has room for the sweep's checkpoints at their peak (`held`:
    bytes the sweep already has there, which count toward that peak: a resumed sweep's checkpoints)."""
    need = sweep_bytes(space)
    free = free_bytes(results_dir) + held
    if free < need.peak:
        own = f" (with the {size_text(held)} the sweep holds there)" if held else ""
        raise NoSpaceError(
            f"--results-dir {results_dir} has {size_text(free)} free{own}; this sweep writes up to "
            f"{size_text(need.peak)} there ({need.text()}): free space, lower "
            f"search.max_concurrent, or choose another --results-dir"
        )
