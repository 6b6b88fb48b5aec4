"""The names a trial configuration may use, and what each one implies, as data.

DomainBed keeps names and defaults (`hparams_registry`) apart from behaviour (`algorithms`): so
does asha-tune. This module imports no torch, so validating a configuration or a space (the CLI's
`spaces`, `launch --dry-run`, `compare`) never loads the network code. The behaviour behind each
name lives in shaping.py (modes, shaping functions), pairing.py and selection.py, whose registries
must hold exactly these names (tests/unit/trial/test_registry.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from asha_tune.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class ModeInfo:
    """A shaping mode's defaults: what a configuration of that mode takes and fills in."""

    summary: str
    uses_target_batches: bool = False  # forwards unlabelled target batches (transductive)
    shapes: bool = False  # shapes convs: takes convs, shape_fn, topk_fraction
    default_shape_fn: str | None = None
    default_shape_at_eval: bool = False
    batch_size: int = 128  # the authors' training batch for this mode


MODES: dict[str, ModeInfo] = {
    "baseline": ModeInfo("no shaping"),
    "random": ModeInfo(
        "f(A, M) with a fresh Bernoulli mask, P(M=0) = p0, at each chosen conv",
        shapes=True,
        default_shape_fn="binarize_a",  # the authors' binarized A for random maps
        default_shape_at_eval=True,  # their random maps stay on at evaluation
    ),
    "target": ModeInfo(
        "each step records the convs' outputs on a target batch, then trains the source with f(A, M_t)",
        uses_target_batches=True,
        shapes=True,
        default_shape_fn="raw",  # A * M_t, off at evaluation, as the authors
        batch_size=256,  # the authors' domain-adaptation runs
    ),
    "bn_only": ModeInfo(
        "the target forwards of `target`, nothing shaped: the effect of target data on BatchNorm alone",
        uses_target_batches=True,
        batch_size=256,  # the batch of the `target` mode it controls for, so the control is matched
    ),
}

SHAPE_FUNCTIONS: dict[str, str] = {
    "binarize_a": "(A > 0) * M: the authors' random maps; no gradient reaches the shaped conv",
    "raw": "A * M: the authors' domain adaptation with target maps",
    "binarize_both": "(A > 0) * (M > 0): the assignment's definition",
    "topk": "the largest fraction k of A in each sample, times binarized M",
}

SELECTION_PROTOCOLS: dict[str, str] = {
    "oracle": "the whole target domain selects and is reported (the paper's protocol)",
    "source_val": "a held-out part of the source selects; the targets are only reported",
    "target_val": "a held-out part of each target selects; the rest of it is reported",
    "lodo": "leave one source domain out: a model per left-out source, trained on the other "
    "sources, selects on it (DomainBed); the model on all sources is reported",
    # Label-free (score_info.py): the reported target images, unlabelled, select; a held-out part
    # of the source is kept out of training as under source_val (val_acc reports on it).
    "entropy": "the lowest mean entropy of the predictions on the unlabelled target images selects",
    "im": "the highest information maximisation of the predictions on the unlabelled target images selects",
    "snd": "the highest soft neighbourhood density of the unlabelled target images' predictions selects",
}

# lodo (DomainBed's leave-one-domain-out cross-validation) trains a fold model per source domain
# besides the reported one: it needs two sources at least, and costs about K times the training.
FOLD_PROTOCOLS = frozenset({"lodo"})

SOURCE_SAMPLINGS: dict[str, str] = {
    "union": "batches drawn from all source images together (each domain in proportion to its size)",
    "balanced": "every batch holds the same number of images of each source domain (DomainBed's "
    "one minibatch per domain)",
}

TARGET_PAIRINGS: dict[str, str] = {
    "index": "the authors': source image i with target image i % len(target), fixed for the run",
    "shuffled": "a fresh random order of the whole target domain per pass",
}


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """A registry entry, or a ConfigError that lists the valid names."""
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(f"unknown {kind} {name!r}: choose one of {', '.join(registry)}") from None


def one_of(value: object, names: Iterable[str]) -> str:
    """pydantic's wording for a Literal, so that a registry's names validate like one."""
    names = list(names)
    if isinstance(value, str) and value in names:
        return value
    quoted = [repr(n) for n in names]
    raise ValueError(f"Input should be {', '.join(quoted[:-1])} or {quoted[-1]} (got {value!r})")


def target_modes() -> tuple[str, ...]:
    """The modes that forward unlabelled target batches."""
    return tuple(name for name, mode in MODES.items() if mode.uses_target_batches)
