"""The names a trial configuration may use, and what each one implies, as data.

DomainBed keeps names and defaults (`hparams_registry`) apart from behaviour (`algorithms`): so
does asha-tune. This module imports no torch, so validating a configuration or a space (the CLI's
`spaces`, `launch --dry-run`, `compare`) never loads the network code. The behaviour behind each
name lives in shaping.py (modes, shaping functions), pairing.py and selection.py, whose registries
must hold exactly these names (tests/unit/trial/test_registry.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

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

SplitKind = Literal["", "source", "target"]


@dataclass(frozen=True)
class ProtocolInfo:
    """A selection protocol: what selects, what is reported, what it holds out and reads, and how
    every output names it. Each text is the one home of its wording (tests/unit/test_protocols.py
    finds them in the outputs); the split itself is selection.PROTOCOLS'.

    Templates: `images` takes {source} (the source domains, joined) and {targets}; `described`
    takes {sources}, {targets}, {held} (the held-out fraction and seed) and {score} (a label-free
    protocol's score, in words)."""

    summary: str  # what selects and what is reported, in one line
    selected_on: str  # after "selected on": every figure's label (`<name>: selected on ...`)
    note: str  # a table's footnote (`<name>: <note>.`)
    images: str  # which images select and whether their labels are read: a run's tag
    val_acc: str  # what val_acc measures: the selection metric's tag
    described: str  # the dry run's selection line (`launch --dry-run`)
    reads_target_labels: bool  # a target label decides the selection
    # Selects on the very images it reports (oracle): its figures are optimistic, marked as
    # such wherever shown, and the scheduler may optimise a reported target accuracy.
    selects_on_reported: bool = False
    caveat: str = ""  # beside its figures in compare's text, after the label: "optimistic"
    split: SplitKind = ""  # where a seeded class-stratified split holds images out (val_fraction)
    folds: bool = False  # a fold model per left-out source domain selects (two sources at least)
    score: str | None = None  # label-free: the score_info.SCORE_INFO score it selects on

    @property
    def holds_out(self) -> bool:
        """Images are kept apart to select on (a split held out of training or of the reported
        targets, or lodo's left-out source domains): a replicate reseeds its split."""
        return bool(self.split) or self.folds


_LABEL_FREE = ProtocolInfo(
    "",
    selected_on="unlabelled target images",
    note="",
    images="unlabelled target images ({targets}): predictions only, no target label",
    val_acc="accuracy on held-out source images",
    described="the unlabelled images of {targets} select by {score} (no target label is read); held-out "
    "{sources} images ({held}) are kept out of training, val_acc reports on them; the targets' "
    "accuracies are only reported",
    reads_target_labels=False,
    # The source is split as under source_val, so val_acc measures held-out source images.
    split="source",
)

SELECTION_PROTOCOLS: dict[str, ProtocolInfo] = {
    "oracle": ProtocolInfo(
        "the whole target domain selects and is reported (the paper's protocol)",
        selected_on="the data it reports",
        note="selected on the data it reports (the paper's protocol; optimistic)",
        images="labelled target images ({targets}): the reported ones themselves",
        val_acc="accuracy on the whole target domain, the reported images themselves",
        described="the whole target domain ({targets}) selects and is reported, as the paper "
        "(optimistic: selected on the test data)",
        reads_target_labels=True,
        selects_on_reported=True,
        caveat="optimistic",
    ),
    "source_val": ProtocolInfo(
        "a held-out part of the source selects; the targets are only reported",
        selected_on="held-out source images",
        note="selected on held-out source images; the targets are only reported",
        images="labelled held-out source images ({source}); no target image",
        val_acc="accuracy on held-out source images",
        described="held-out {sources} images ({held}, never trained on) select; the targets are only "
        "reported",
        reads_target_labels=False,
        split="source",
    ),
    "target_val": ProtocolInfo(
        "a held-out part of each target selects; the rest of it is reported",
        selected_on="labelled held-out target images",
        note="selected on labelled held-out target images; reported on the other target images",
        images="labelled held-out target images ({targets}); reported on the others",
        val_acc="accuracy on held-out labelled target images",
        described="held-out target images ({held}) select; the targets are reported on the rest",
        reads_target_labels=True,
        split="target",
    ),
    "lodo": ProtocolInfo(
        "leave one source domain out: a model per left-out source, trained on the other sources, "
        "selects on it (DomainBed); the model on all sources is reported",
        selected_on="left-out source domains by fold models",
        note="selected by leave-one-source-domain-out models (DomainBed); the targets are only reported",
        images="labelled left-out source domains ({source}), each scored by a fold model trained on "
        "the others; no target image",
        val_acc="mean accuracy of the fold models, each on the source domain it left out",
        described="leave one source domain out: for each of {sources}, a fold model trained on the "
        "other sources is scored on it, val_acc the mean of those scores (DomainBed's "
        "leave-one-domain-out); the model trained on all sources is reported on the targets",
        reads_target_labels=False,
        folds=True,  # a fold model per source besides the reported one: about K times the training
    ),
    # Label-free (score_info.py): the reported target images, unlabelled, select; a held-out part
    # of the source is kept out of training as under source_val (val_acc reports on it).
    "entropy": replace(
        _LABEL_FREE,
        summary="the lowest mean entropy of the predictions on the unlabelled target images selects",
        note="selected on the entropy of the predictions for unlabelled target images (no target label)",
        score="entropy",
    ),
    "im": replace(
        _LABEL_FREE,
        summary="the highest information maximisation of the predictions on the unlabelled target "
        "images selects",
        note="selected on information maximisation over unlabelled target images (no target label)",
        score="im",
    ),
    "snd": replace(
        _LABEL_FREE,
        summary="the highest soft neighbourhood density of the unlabelled target images' predictions selects",
        note="selected on the soft neighbourhood density of unlabelled target images (no target label)",
        score="snd",
    ),
}

# The protocol the paper selected every published figure by, and a trial's default.
PAPER_PROTOCOL = "oracle"


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


def protocol_info(name: str) -> ProtocolInfo:
    """A protocol's record, or a ConfigError that lists the valid names."""
    return lookup(SELECTION_PROTOCOLS, name, "selection protocol")


def selects_on_reported(name: str) -> bool:
    """Whether a protocol's figures were selected on the data they report (False for a name no
    longer registered, as a past sweep's records may hold)."""
    info = SELECTION_PROTOCOLS.get(name)
    return info is not None and info.selects_on_reported


def selection_label(name: str, caveat: bool = False) -> str:
    """`source_val: selected on held-out source images`: how figures of `name` were selected;
    with `caveat`, what to keep in mind of them too (`oracle: ... (optimistic)`)."""
    info = SELECTION_PROTOCOLS.get(name)
    if info is None:
        return f"{name}: selected as its sweep records"
    return f"{name}: selected on {info.selected_on}" + (f" ({info.caveat})" if caveat and info.caveat else "")


def scored_by(score: str) -> str | None:
    """The protocol that selects on a label-free score, if one does."""
    return next((name for name, info in SELECTION_PROTOCOLS.items() if info.score == score), None)


def val_acc_protocol(name: str) -> str | None:
    """The protocol whose choice val_acc makes under `name`: its own where a labelled split
    selects (source_val, target_val), source_val's under a label-free protocol (which holds out
    the source as it does); None where val_acc is not a held-out split's accuracy."""
    info = SELECTION_PROTOCOLS.get(name)
    if info is None or not info.split:
        return None
    return next(
        (n for n, i in SELECTION_PROTOCOLS.items() if i.split == info.split and i.score is None), None
    )


def protocols_with_split() -> tuple[str, ...]:
    """The protocols that hold out a seeded split (selection.val_fraction, split_seed)."""
    return tuple(name for name, info in SELECTION_PROTOCOLS.items() if info.split)
