"""The typed configuration of one trial, validated once at the edge.

`TrialConfig` holds everything that changes a trial's result (domains, shaping, recipe, seed).
Where the data lives and which device runs it are `Runtime` settings, kept apart so that a
configuration means the same experiment on any machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import reprlib
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from asha_tune import defaults
from asha_tune.defaults import DATA_ROOT_ENV
from asha_tune.errors import ConfigError
from asha_tune.trial.datasets import DATASETS, DEFAULT_DATASET, PACS_CLASSES, nfc
from asha_tune.trial.registry import (
    MODES,
    PAPER_PROTOCOL,
    SELECTION_PROTOCOLS,
    SHAPE_FUNCTIONS,
    SOURCE_SAMPLINGS,
    TARGET_PAIRINGS,
    ProtocolInfo,
    one_of,
    target_modes,
)

CLASSES = PACS_CLASSES  # the default dataset's; other datasets' are in datasets.DATASETS

# The paper's conv numbering: the order in which torchvision's resnet18 yields Conv2d.
CONV_NAMES = (
    "conv1",
    "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2",
    "layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv1", "layer2.1.conv2",
    "layer3.0.conv1", "layer3.0.conv2", "layer3.0.downsample.0", "layer3.1.conv1", "layer3.1.conv2",
    "layer4.0.conv1", "layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv1", "layer4.1.conv2",
)  # fmt: skip
DOWNSAMPLING_CONVS = (8, 13, 18)
SHAPEABLE_CONVS = tuple(n for n in range(1, len(CONV_NAMES) + 1) if n not in DOWNSAMPLING_CONVS)


def _not_a_boolean(value: Any) -> Any:
    """YAML 1.1 reads yes, no, on and off as booleans, and pydantic would take them as 1 and 0:
    `epochs: yes` is a mistake, not one epoch."""
    if isinstance(value, bool):
        raise ValueError(
            f"expected a number, got {str(value).lower()} (YAML reads yes/no/on/off as true/false)"
        )
    return value


# Numbers and switches as a configuration means them: a number field refuses true and false, a
# switch refuses 1, 0 and "yes" (YAML's own true and false are booleans already). Strings that
# spell a number stay welcome: `asha-tune trial --epochs 3` passes "3".
Int = Annotated[int, BeforeValidator(_not_a_boolean)]
Float = Annotated[float, BeforeValidator(_not_a_boolean)]
Bool = Annotated[bool, Field(strict=True)]
# Seeds as numpy and Optuna's samplers take them (below 2^32, with room for the trials a resumed
# search adds to its sampler's seed) and as replicates derive them (below 2^31: sweep/replicated.py).
SEED_LIMIT = 2**31
Seed = Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=0, lt=SEED_LIMIT)]
# Every section refuses unknown fields, and infinities and NaN where it takes a number.
MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Strict(BaseModel):
    model_config = MODEL_CONFIG


class P0Schedule(Strict):
    """p0 decreasing geometrically with depth from `first` (shallowest conv) to `last` (deepest)."""

    first: Float = Field(ge=0, lt=1)
    last: Float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _positive(self) -> P0Schedule:
        if self.first != self.last and (self.first == 0 or self.last == 0):
            raise ValueError("a geometric p0 schedule needs both endpoints above 0")
        if self.last > self.first:
            raise ValueError(
                f"a decreasing p0 schedule needs first >= last (got first {self.first}, last {self.last}): "
                "p0 falls from the shallowest conv to the deepest"
            )
        return self


P0 = float | list[float] | P0Schedule


def _check_p0(value: Any) -> None:
    """A p0 (or each of a list) in [0, 1): a probability of zeroing, never the whole map (NaN fails
    the comparison, so it is refused too)."""
    for v in value if isinstance(value, list) else [value]:
        _not_a_boolean(v)
        if isinstance(v, (int, float)) and not 0 <= v < 1:
            raise ValueError(f"p0 {float(v)} is outside [0, 1) (p0=1 would zero the whole map)")


def parse_p0(value: Any) -> Any:
    """Accept the CLI forms `0.7`, `0.7,0.5` and `0.7:0.1` as well as typed values; a value out of
    range is refused here, in one line, rather than once for each type p0 may take."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if ":" in text:
                first, last = text.split(":")
                value = {"first": float(first), "last": float(last)}
            elif "," in text:
                value = [float(v) for v in text.split(",")]
            else:
                value = float(text)
        except ValueError:
            raise ValueError(f"cannot read p0 {value!r}: use 0.7, 0.7,0.5 or 0.7:0.1") from None
    if isinstance(value, dict):  # a schedule: build it here so a bad one gives one message
        try:
            return P0Schedule.model_validate(value)
        except ValidationError as err:
            raise ValueError("; ".join(format_validation_error(err))) from None
    _check_p0(value)
    return value


def geometric_schedule(first: float, last: float, convs: list[int]) -> list[float]:
    """Interpolate p0 geometrically over conv depth: `0.7:0.1` on convs 1..7 gives Table 8 to two
    decimals (the authors ran rounded values, up to 0.0046 away: docs/differences.md)."""
    lo, hi = min(convs), max(convs)
    if hi == lo or first == last:  # a constant schedule (0:0 included, which has no ratio)
        return [first] * len(convs)
    return [first * (last / first) ** ((c - lo) / (hi - lo)) for c in convs]


def parse_convs(value: Any) -> Any:
    """Accept the CLI form `1,7` and a single int as well as a list."""
    if isinstance(value, str):
        try:
            return [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"cannot read conv list {value!r}: use e.g. 1,7") from None
    if isinstance(value, int):
        return [value]
    return value


def check_convs(convs: list[int]) -> list[int]:
    """Sorted conv numbers, or a ValueError listing the allowed ones."""
    bad = [c for c in convs if c not in SHAPEABLE_CONVS]
    if bad:
        allowed = ",".join(map(str, SHAPEABLE_CONVS))
        why = "downsampling conv" if all(c in DOWNSAMPLING_CONVS for c in bad) else "unknown conv"
        raise ValueError(
            f"{why} {','.join(map(str, bad))}: allowed convs are {allowed} "
            f"(1..20 without the downsampling convs 8, 13, 18)"
        )
    if len(set(convs)) != len(convs):
        raise ValueError(f"conv listed twice in {convs}")
    return sorted(convs)


class ShapingConfig(Strict):
    mode: str = "baseline"  # a name in registry.MODES
    convs: list[Int] = []
    p0: P0 | None = None
    shape_fn: str | None = None  # a name in registry.SHAPE_FUNCTIONS
    topk_fraction: Float | None = Field(default=None, gt=0, le=1)
    shape_at_eval: Bool | None = None
    target_updates_bn: Bool = True
    # index: the authors' pairing of source image i with target image i % len(target).
    target_pairing: str = "index"  # a name in registry.TARGET_PAIRINGS

    @model_validator(mode="before")
    @classmethod
    def _p0_follows_its_conv(cls, data: Any) -> Any:
        """`--convs 7,1 --p0 0.1,0.7` gives conv 7 p0 0.1: a p0 list is sorted with its convs."""
        if not isinstance(data, dict) or "convs" not in data or "p0" not in data:
            return data
        try:
            convs, p0 = parse_convs(data["convs"]), parse_p0(data["p0"])
        except ValueError:
            return data  # the field validators report it
        if (
            isinstance(convs, list)
            and isinstance(p0, list)
            and len(convs) == len(p0)
            and all(isinstance(c, int) for c in convs)
        ):
            pairs = sorted(zip(convs, p0, strict=True), key=lambda pair: pair[0])
            data = {**data, "convs": [c for c, _ in pairs], "p0": [v for _, v in pairs]}
        return data

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        return one_of(value, MODES)

    @field_validator("shape_fn")
    @classmethod
    def _known_shape_fn(cls, value: str | None) -> str | None:
        return value if value is None else one_of(value, SHAPE_FUNCTIONS)

    @field_validator("target_pairing")
    @classmethod
    def _known_pairing(cls, value: str) -> str:
        return one_of(value, TARGET_PAIRINGS)

    @field_validator("p0", mode="before")
    @classmethod
    def _parse_p0(cls, value: Any) -> Any:
        return parse_p0(value)

    @field_validator("convs", mode="before")
    @classmethod
    def _parse_convs(cls, value: Any) -> Any:
        return parse_convs(value)

    @field_validator("convs")
    @classmethod
    def _check_convs(cls, convs: list[int]) -> list[int]:
        return check_convs(convs)

    @model_validator(mode="after")
    def _consistent(self) -> ShapingConfig:
        mode, kind = self.mode, MODES[self.mode]
        if self.target_pairing != "index" and not kind.uses_target_batches:
            raise ValueError(
                f"target_pairing applies to the modes that use target batches "
                f"({', '.join(target_modes())}), not to mode {mode}"
            )
        if not kind.shapes:
            for name in ("convs", "p0", "shape_fn", "topk_fraction"):
                if getattr(self, name) not in (None, []):
                    raise ValueError(f"{name} does not apply to mode {mode} (nothing is shaped)")
            if self.shape_at_eval:
                raise ValueError(f"shape_at_eval does not apply to mode {mode}")
            return self
        if not self.convs:
            raise ValueError(f"mode {mode} needs at least one conv to shape")
        self._check_p0()
        fn = self.resolved_shape_fn
        if fn == "topk" and self.topk_fraction is None:
            raise ValueError("shape_fn topk needs topk_fraction in (0, 1]")
        if fn != "topk" and self.topk_fraction is not None:
            raise ValueError("topk_fraction only applies to shape_fn topk")
        return self

    def _check_p0(self) -> None:
        """Mode random draws its masks with p0 (one, or one per conv); mode target takes none."""
        if self.mode == "random":
            if self.p0 is None:
                raise ValueError("mode random needs p0")
            if isinstance(self.p0, list) and len(self.p0) != len(self.convs):
                raise ValueError(
                    f"p0 lists {len(self.p0)} values for {len(self.convs)} convs: give one per conv"
                )
        elif self.p0 is not None:
            raise ValueError("p0 does not apply to mode target (masks come from target maps)")

    @property
    def resolved_shape_fn(self) -> str | None:
        return self.shape_fn or MODES[self.mode].default_shape_fn

    @property
    def resolved_shape_at_eval(self) -> bool:
        if self.shape_at_eval is None:
            return MODES[self.mode].default_shape_at_eval
        return self.shape_at_eval

    def p0_per_conv(self) -> dict[int, float]:
        """p0 for every shaped conv, resolving a scalar, a list or a schedule."""
        if self.p0 is None:
            return {}
        if isinstance(self.p0, P0Schedule):
            values = geometric_schedule(self.p0.first, self.p0.last, self.convs)
        elif isinstance(self.p0, list):
            values = self.p0
        else:
            values = [self.p0] * len(self.convs)
        return dict(zip(self.convs, values, strict=True))


def _domain_list(value: Any) -> Any:
    """`a,b` (the CLI's form) as a list; other values as given."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def _domain_item(name: str, info: ValidationInfo) -> str:
    name = nfc(name)
    _check_domain(name, info)
    return name


class DataConfig(Strict):
    """Which images a trial reads. Domains are checked against the dataset's layout here when it
    names them (every dataset but `folder`), else against the data root before a sweep starts."""

    dataset: str = DEFAULT_DATASET  # a name in datasets.DATASETS
    # One domain, or several trained on together (kept sorted: the order means nothing).
    source: str | list[str] = "art_painting"
    # None: every domain of the dataset that is not a source (`folder`: of the data root).
    targets: list[Annotated[str, AfterValidator(_domain_item)]] | None = None
    source_sampling: str = "union"  # a name in registry.SOURCE_SAMPLINGS
    image_size: Int = Field(default=224, ge=32, le=512)
    limit_per_domain: Int | None = Field(default=None, ge=1)  # at least one image per class

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        return one_of(value, DATASETS)

    @field_validator("source_sampling")
    @classmethod
    def _known_sampling(cls, value: str) -> str:
        return one_of(value, SOURCE_SAMPLINGS)

    @field_validator("source", mode="before")
    @classmethod
    def _split_source(cls, value: Any) -> Any:
        if not isinstance(value, (str, list, tuple)):
            raise ValueError(f"give a source domain or a list of them (got {value!r})")
        return _domain_list(value)

    @field_validator("targets", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _domain_list(value)

    @field_validator("source")
    @classmethod
    def _sources(cls, value: str | list[str], info: ValidationInfo) -> str | list[str]:
        names = [nfc(n) for n in ([value] if isinstance(value, str) else value)]
        if not names:
            raise ValueError("at least one source domain is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"source domain listed twice in {names}")
        for name in names:
            _check_domain(name, info)
        names = sorted(names, key=nfc)
        return names[0] if len(names) == 1 else names

    @field_validator("targets")
    @classmethod
    def _targets(cls, targets: list[str] | None) -> list[str] | None:
        if targets is None:
            return None
        if not targets:
            raise ValueError("at least one target domain is needed")
        if len(set(targets)) != len(targets):
            raise ValueError(f"target domain listed twice in {targets}")
        return targets

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        both = [s for s in self.sources if s in (self.targets or ())]
        if both:
            raise ValueError(f"source {', '.join(both)} is also a target")
        layout = DATASETS[self.dataset]
        if layout.fixed_domains and not self.target_domains:
            raise ValueError(f"data.source lists every domain of {self.dataset}: no target is left")
        classes = layout.num_classes
        if classes is not None and self.limit_per_domain is not None and self.limit_per_domain < classes:
            raise ValueError(
                f"data.limit_per_domain {self.limit_per_domain} is below the {classes} classes of "
                f"{self.dataset} (a subset keeps one image of each class at least)"
            )
        return self

    @property
    def sources(self) -> tuple[str, ...]:
        """The source domains, sorted (one for a single-source trial)."""
        return (self.source,) if isinstance(self.source, str) else tuple(self.source)

    @property
    def target_domains(self) -> tuple[str, ...] | None:
        """The targets, the defaults resolved; None where only the data root can say (`folder`)."""
        if self.targets is not None:
            return tuple(self.targets)
        layout = DATASETS[self.dataset]
        if not layout.fixed_domains:
            return None
        return tuple(d for d in layout.domains if d not in self.sources)

    def targets_among(self, domains: Collection[str]) -> tuple[str, ...]:
        """The targets once the data root's domains are known (`folder`'s default: all others)."""
        found = self.target_domains
        return found if found is not None else tuple(d for d in domains if d not in self.sources)


def _check_domain(name: str, info: ValidationInfo) -> None:
    """A domain of a dataset that names its domains (`folder` is checked against its data root)."""
    dataset = info.data.get("dataset")
    layout = DATASETS.get(dataset) if isinstance(dataset, str) else None
    if layout is not None and layout.fixed_domains:
        one_of(name, layout.domains)
    elif not name.strip() or "/" in name or name in (".", ".."):
        raise ValueError(f"{name!r} cannot be a domain folder's name")


class TrainConfig(Strict):
    """The paper's recipe by default, as the authors' code runs it."""

    epochs: Int = Field(default=30, ge=1)
    # None: the paper's batch size for the trial's mode (its `batch_size` in shaping.MODES),
    # filled in by TrialConfig, so a trial's config always holds the number it trains with.
    batch_size: Int | None = Field(default=None, ge=1)
    eval_batch_size: Int = Field(default=512, ge=1)
    lr: Float = Field(default=1e-3, gt=0)
    momentum: Float = Field(default=0.9, ge=0, lt=1)
    nesterov: Bool = True
    weight_decay: Float = Field(default=5e-4, ge=0)
    lr_step_fraction: Float = Field(default=0.8, gt=0, le=1)
    lr_gamma: Float = Field(default=0.1, gt=0, le=1)
    weights: str = "imagenet"
    seed: Seed = 0
    # auto: fp16 autocast + grad scaler on CUDA (as the authors), fp32 on the CPU.
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"


class SelectionConfig(Strict):
    """How a configuration is selected (selection.py). Fixed for a whole sweep, never searched."""

    # A name in registry.SELECTION_PROTOCOLS, whose ProtocolInfo says what it selects on and
    # reports. A trial's default is the paper's (a space's is source_val: spaces/space.py).
    protocol: str = PAPER_PROTOCOL
    # Held out, per class, by a protocol that splits (ProtocolInfo.split: source_val, target_val
    # and the label-free ones); the split's own seed: it never follows the trial seed.
    val_fraction: Float = Field(default=0.2, gt=0, lt=1)
    split_seed: Seed = 0
    # Which epoch of a trial counts. last: its last one (the paper's). best: the epoch whose
    # selection metric (selection.selection_metric: the protocol's) is best; its figures are the
    # trial's, and its weights are the ones kept.
    epoch: Literal["last", "best"] = "last"

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        return one_of(value, SELECTION_PROTOCOLS)

    @property
    def info(self) -> ProtocolInfo:
        """The protocol's record: what selects, what is reported, what it holds out."""
        return SELECTION_PROTOCOLS[self.protocol]

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """`selection: source_val` means the protocol with the default fraction and seed."""
        return {"protocol": value} if isinstance(value, str) else value


class TrialConfig(Strict):
    data: DataConfig = DataConfig()
    shaping: ShapingConfig = ShapingConfig()
    train: TrainConfig = TrainConfig()
    selection: SelectionConfig = SelectionConfig()

    @model_validator(mode="before")
    @classmethod
    def _mode_batch_size(cls, data: Any) -> Any:
        """The paper's batch size for the mode (registry.MODES: 256 for target maps and their
        control) unless one is given."""
        if not isinstance(data, dict):
            return data
        shaping, train = data.get("shaping") or {}, data.get("train") or {}
        if isinstance(train, TrainConfig):
            train = train.model_dump()
        if not isinstance(train, dict) or train.get("batch_size") is not None:
            return data
        mode = shaping.get("mode") if isinstance(shaping, dict) else getattr(shaping, "mode", None)
        kind = MODES.get(mode if isinstance(mode, str) else "baseline")
        if kind is None:
            return data  # an unknown mode: the field validator reports it
        return {**data, "train": {**train, "batch_size": kind.batch_size}}

    @model_validator(mode="after")
    def _domains(self) -> TrialConfig:
        d, mode = self.data, self.shaping.mode
        targets = d.target_domains
        if mode in target_modes() and targets is None:
            raise ValueError(
                f"mode {mode} adapts to one target domain per trial: name it in data.targets "
                f"(dataset {d.dataset} finds its domains only in the data root)"
            )
        if mode in target_modes() and targets is not None and len(targets) != 1:
            default = "" if d.targets is not None else " (every domain but the sources, by default)"
            raise ValueError(
                f"mode {mode} adapts to one target domain per trial, got {','.join(targets)}{default}"
            )
        protocol = self.selection.protocol
        if self.selection.info.folds and len(d.sources) < 2:
            raise ValueError(
                f"selection {protocol} leaves one source domain out in turn: it needs two source "
                f"domains at least (got source {d.source})"
            )
        return self

    def resolved_dump(self) -> dict[str, Any]:
        """The config as a run logs it: what the mode fills in (shape_fn, shape_at_eval) and the
        default targets resolved, so a run's params say what the trial used, not `None`
        (fingerprint keeps the raw form). `folder`'s default targets stay None: the run's
        n_<domain> params name them."""
        tree = self.model_dump(mode="json")
        tree["shaping"].update(
            shape_fn=self.shaping.resolved_shape_fn or "none",
            shape_at_eval=self.shaping.resolved_shape_at_eval,
        )
        targets = self.data.target_domains
        tree["data"]["targets"] = list(targets) if targets is not None else None
        return tree

    def fingerprint(self) -> str:
        """A short stable hash, so a trial's files can be named by what it computes.

        Settings added after trials were first named by it are left out at their defaults, so a
        configuration that could be written before keeps its name (checkpoints, resumed sweeps).
        """
        tree = self.model_dump(mode="json")
        for section, later in _LATER_DEFAULTS.items():
            for name, default in later.items():
                if tree[section].get(name) == default:
                    del tree[section][name]
        text = json.dumps(tree, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


_LATER_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"dataset": DEFAULT_DATASET, "source_sampling": "union"},
    "selection": {"epoch": "last"},
}


_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_UNITS |= {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_bytes(value: Any) -> Any:
    """`8GiB`, `512MB`, `1.5g` or a number of bytes."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower().replace(" ", "")
    number = text.rstrip("kmgtib")
    unit = text[len(number) :]
    try:
        return int(float(number) * _UNITS[unit])
    except (ValueError, KeyError):
        raise ValueError(f"cannot read a size from {value!r}: use e.g. 8GiB, 512MiB or 2GB") from None


class Runtime(Strict):
    """Where a trial runs: not part of what it computes."""

    data_root: Path | None = None
    cache_dir: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Bytes of images a trial may keep on its device; beyond them it streams batches from the
    # disk cache. None: streaming.device_budget, half the device's memory split between the
    # trials that share it (`trials_per_device`: a sweep sets it from the space's resources).
    data_budget: Int | None = Field(default=None, ge=0)
    trials_per_device: Int = Field(default=1, ge=1)

    @field_validator("data_budget", mode="before")
    @classmethod
    def _parse_budget(cls, value: Any) -> Any:
        return parse_bytes(value)

    def resolved_data_root(self) -> Path:
        root = self.data_root or os.environ.get(DATA_ROOT_ENV)
        if not root:
            raise ConfigError(f"no data root: pass --data-root or set {DATA_ROOT_ENV} to the PACS folder")
        return Path(root).expanduser()

    def existing_data_root(self, named: str = "data root") -> Path:
        """The data root, or a ConfigError naming it (as `named`: the flag or variable that set it)."""
        root = self.resolved_data_root()
        if not root.is_dir():
            raise ConfigError(f"{named} {root}: no such folder (it should hold PACS' domain folders)")
        return root

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else defaults.cache_dir()


class Problem(NamedTuple):
    path: str  # the field's dotted path; "" or a section for a cross-field rule
    kind: str  # pydantic's error type, e.g. value_error, missing, extra_forbidden
    message: str  # pydantic's message, with the offending value where it is not already named


def validation_problems(
    err: ValidationError, hidden: Collection[str] = (), keep_indices: bool = False
) -> list[Problem]:
    """The one reading of a pydantic report that every one-line message is built from.

    Pydantic adds to a location the union member it tried (`hidden`, besides this module's own
    unions) and list indices (dropped unless `keep_indices`: a space's configurations keep them).
    """
    skip = _UNION_MEMBERS | set(hidden)
    problems = []
    for problem in err.errors():
        parts = [
            str(p)
            for p in problem["loc"]
            if (keep_indices or not isinstance(p, int))
            and str(p) not in skip
            and not str(p).startswith("function-")
        ]
        message = problem["msg"].removeprefix("Value error, ")
        value = problem.get("input")
        if problem["type"] not in _NAMES_ITS_VALUE and not isinstance(value, dict):
            message += f" (got {_SHORT.repr(value)})"
        problems.append(Problem(".".join(parts), problem["type"], message))
    return problems


def is_cross_field(path: str) -> bool:
    return path in _MODELS


def format_validation_error(err: ValidationError, names: dict[str, str] | None = None) -> list[str]:
    """One line per problem, naming the field (or the flag that set it), the value and the rule."""
    lines = []
    for path, _, message in validation_problems(err):
        if is_cross_field(path):
            lines.append(message)  # a cross-field rule: the message names its fields
        else:
            label = (names or {}).get(path, path)
            lines.append(f"{label}: {message}")
    return list(dict.fromkeys(lines))


# A value as a one-line message quotes it: a 50,000-item list is named by its first items.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 8
_SHORT.maxlong = 40
_UNION_MEMBERS = {"float", "list[float]", "P0Schedule", "int", "str", "list[str]"}
# Errors whose message already says what was wrong with the value (or there is none).
_NAMES_ITS_VALUE = {"value_error", "missing", "union_tag_invalid", "union_tag_not_found"}
_MODELS = {"", "data", "shaping", "train", "selection"}


def trial_config(data: dict[str, Any], names: dict[str, str] | None = None) -> TrialConfig:
    """Validate a nested dict into a TrialConfig, turning pydantic's report into ConfigError."""
    try:
        return TrialConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, names)) from None
