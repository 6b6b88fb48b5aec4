"""Activation shaping: forward hooks on numbered convs, the shaping functions and the modes.

A hook replaces a conv's output A (before its BatchNorm) by f(A, M). What M is depends on the
mode: a fresh Bernoulli mask (`random`), the same conv's output recorded on a target batch
(`target`), or nothing at all (`baseline`, `bn_only`). The README lists where this differs from
the authors' code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from asha_tune.trial import registry
from asha_tune.trial.config import CONV_NAMES, ShapingConfig
from asha_tune.trial.registry import lookup


def numbered_convs(model: nn.Module) -> dict[int, nn.Conv2d]:
    """The model's convs by the paper's numbers 1..20 (named_modules order)."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    names = tuple(name for name, _ in convs)
    if names != CONV_NAMES:
        raise ValueError(f"not a torchvision resnet18 conv layout: {names}")
    return {i + 1: m for i, (_, m) in enumerate(convs)}


# --- shaping functions f(A, M) -------------------------------------------------------------


def binarize_a(a: Tensor, m: Tensor, k: float | None = None) -> Tensor:
    """(A > 0) * M: the authors' random maps. No gradient reaches the shaped conv."""
    if m.dtype == torch.bool:  # a random mask: one fused logical op
        return ((a > 0) & m).to(a.dtype)
    return (a > 0).to(a.dtype) * m


def raw(a: Tensor, m: Tensor, k: float | None = None) -> Tensor:
    """A * M: the authors' domain adaptation with target maps.

    Two fp16 activations can multiply past fp16's 65,504 (inf, which BatchNorm then spreads over
    the whole batch), so under fp16 the product is computed and returned in float32: the
    BatchNorm after the conv takes float32 as it is, and the next conv casts back to fp16 after
    BatchNorm, where values are small. (Measured from random initialisation the product stays
    below 120 at every conv: benchmarks/RESULTS.md; ImageNet weights could not be measured.)
    """
    if a.dtype == torch.float16 or m.dtype == torch.float16:
        return a.float() * m.float()
    return a * m


def binarize_both(a: Tensor, m: Tensor, k: float | None = None) -> Tensor:
    """(A > 0) * (M > 0): the assignment's definition."""
    return ((a > 0) & (m > 0)).to(a.dtype)


def topk(a: Tensor, m: Tensor, k: float | None = None) -> Tensor:
    """Keep the largest fraction k of A in each sample, times binarized M."""
    if k is None:
        raise ValueError("topk needs a fraction k")
    flat = a.flatten(1)
    keep = max(1, round(k * flat.shape[1]))
    threshold = flat.float().topk(keep, dim=1, sorted=False).values.min(dim=1).values
    kept = a >= threshold.to(a.dtype).view(-1, *([1] * (a.dim() - 1)))
    return a * (kept & (m > 0)).to(a.dtype)


ShapeFunction = Callable[[Tensor, Tensor, "float | None"], Tensor]
SHAPE_FUNCTIONS: dict[str, ShapeFunction] = {
    "binarize_a": binarize_a,
    "raw": raw,
    "binarize_both": binarize_both,
    "topk": topk,
}


def shape_function(name: str) -> ShapeFunction:
    return lookup(SHAPE_FUNCTIONS, name, "shaping function")


def bernoulli_mask(like: Tensor, p0: float, generator: torch.Generator | None) -> Tensor:
    """A boolean mask shaped like `like` with P(False) = p0, drawn on like's device.

    `uniform >= p0` is the same Bernoulli draw as `bernoulli_(1 - p0)` and about three times as
    fast on the CPU (benchmarks/RESULTS.md); a boolean mask also saves memory traffic on the GPU.
    """
    uniform = torch.empty_like(like, dtype=torch.float32)  # keeps channels_last
    return uniform.uniform_(generator=generator) >= p0


# --- hooks ---------------------------------------------------------------------------------

Action = Literal["off", "random", "record", "apply"]


class ActivationShaper:
    """Forward hooks on the chosen convs whose behaviour is switched per forward pass.

    `off` leaves outputs alone; `random` multiplies in fresh Bernoulli masks; `record` stores
    the outputs (detached) as masks; `apply` shapes with the recorded masks.
    """

    def __init__(
        self,
        model: nn.Module,
        convs: list[int],
        shape_fn: str,
        p0: dict[int, float] | None = None,
        topk_fraction: float | None = None,
        generator: torch.Generator | None = None,
    ):
        self.fn = shape_function(shape_fn)
        self.p0 = p0 or {}
        self.k = topk_fraction
        self.generator = generator
        self.action: Action = "off"
        self.recorded: dict[int, Tensor] = {}
        modules = numbered_convs(model)
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in convs]

    def _hook(self, n: int) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
            if self.action == "off":
                return None
            if self.action == "record":
                self.recorded[n] = output.detach()
                return None
            if self.action == "random":
                mask = bernoulli_mask(output, self.p0[n], self.generator)
            else:
                mask = self.recorded[n]
                if mask.shape != output.shape:
                    raise RuntimeError(
                        f"target map {tuple(mask.shape)} at conv {n} does not "
                        f"match the source activation {tuple(output.shape)}"
                    )
            return self.fn(output, mask, self.k)

        return hook

    @contextmanager
    def acting(self, action: Action) -> Iterator[None]:
        previous, self.action = self.action, action
        try:
            yield
        finally:
            self.action = previous

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@contextmanager
def frozen_bn_stats(model: nn.Module, frozen: bool = True) -> Iterator[None]:
    """Let a train-mode forward normalise with batch statistics without updating running ones."""
    if not frozen:
        yield
        return
    saved = [
        (m, {b: getattr(m, b).clone() for b in _BN_BUFFERS if getattr(m, b, None) is not None})
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in saved:
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)


# --- modes ---------------------------------------------------------------------------------


class ShapingMode:
    """How a mode forwards a training batch and an evaluation batch.

    What a mode takes and fills in (its defaults) is data, in registry.MODES under the same name;
    a new mode is one class here and one entry there.
    """

    name = "baseline"

    @property
    def info(self) -> registry.ModeInfo:
        return registry.MODES[self.name]

    @property
    def uses_target_batches(self) -> bool:
        return self.info.uses_target_batches

    def __init__(self, config: ShapingConfig):
        self.config = config

    def train_logits(
        self, model: nn.Module, shaper: ActivationShaper | None, x: Tensor, x_target: Tensor | None
    ) -> Tensor:
        return model(x)

    def eval_logits(self, model: nn.Module, shaper: ActivationShaper | None, x: Tensor) -> Tensor:
        return model(x)


class Baseline(ShapingMode):
    name = "baseline"


class RandomMaps(ShapingMode):
    name = "random"

    def train_logits(
        self, model: nn.Module, shaper: ActivationShaper | None, x: Tensor, x_target: Tensor | None
    ) -> Tensor:
        assert shaper is not None  # a mode that shapes always has its hooks
        with shaper.acting("random"):
            return model(x)

    def eval_logits(self, model: nn.Module, shaper: ActivationShaper | None, x: Tensor) -> Tensor:
        assert shaper is not None
        with shaper.acting("random" if self.config.resolved_shape_at_eval else "off"):
            return model(x)


class TargetMaps(ShapingMode):
    """The authors' domain adaptation: record target maps in train mode, shape the source."""

    name = "target"

    def train_logits(
        self, model: nn.Module, shaper: ActivationShaper | None, x: Tensor, x_target: Tensor | None
    ) -> Tensor:
        assert shaper is not None
        with torch.no_grad(), frozen_bn_stats(model, not self.config.target_updates_bn):
            with shaper.acting("record"):
                model(x_target)
        with shaper.acting("apply"):
            return model(x)

    def eval_logits(self, model: nn.Module, shaper: ActivationShaper | None, x: Tensor) -> Tensor:
        if not self.config.resolved_shape_at_eval:
            return model(x)
        assert shaper is not None
        # At test time the batch is itself target data: its own maps are the masks.
        with shaper.acting("record"):
            model(x)
        with shaper.acting("apply"):
            return model(x)


class TargetBatchNormOnly(ShapingMode):
    """Control for `target`: the same target forward, nothing shaped (isolates BatchNorm)."""

    name = "bn_only"

    def train_logits(
        self, model: nn.Module, shaper: ActivationShaper | None, x: Tensor, x_target: Tensor | None
    ) -> Tensor:
        with torch.no_grad(), frozen_bn_stats(model, not self.config.target_updates_bn):
            model(x_target)
        return model(x)


MODES: dict[str, type[ShapingMode]] = {
    "baseline": Baseline,
    "random": RandomMaps,
    "target": TargetMaps,
    "bn_only": TargetBatchNormOnly,
}


def shaping_mode(config: ShapingConfig) -> ShapingMode:
    return lookup(MODES, config.mode, "mode")(config)


def attach(
    model: nn.Module, config: ShapingConfig, generator: torch.Generator | None = None
) -> tuple[ShapingMode, ActivationShaper | None]:
    """The mode object and, where the mode shapes anything, the hooks on `model`."""
    mode = shaping_mode(config)
    if not config.convs:
        return mode, None
    shaper = ActivationShaper(
        model,
        config.convs,
        config.resolved_shape_fn or "binarize_a",  # a mode that shapes always names one
        p0=config.p0_per_conv(),
        topk_fraction=config.topk_fraction,
        generator=generator,
    )
    return mode, shaper
