"""Which target images go with each source batch, in the modes that forward target batches.

The authors pair source image i with target image i % len(target), over files sorted by class.
The pairing is then fixed for the whole run, and it decides which target classes the adaptation
ever sees: with art_painting (2,048 images) as source, sketch's first 2,048 images are dogs,
elephants and giraffes only (README.md). `shuffled` draws the target images of every epoch from
the whole target domain instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from asha_tune.trial.registry import lookup


def index_pairing(source_positions: Tensor, n_target: int, generator: torch.Generator) -> Tensor:
    """The authors' pairing: each source image's position in its domain, modulo the target size."""
    return source_positions % n_target


def shuffled_pairing(source_positions: Tensor, n_target: int, generator: torch.Generator) -> Tensor:
    """Target images in a fresh random order per pass over the target domain: each source batch
    gets a uniform draw from the whole domain, and within an epoch every target image is used
    equally often (to within one)."""
    n = len(source_positions)
    passes = -(-n // n_target)
    draws = [torch.randperm(n_target, generator=generator) for _ in range(passes)]
    return torch.cat(draws)[:n]


Pairing = Callable[[Tensor, int, torch.Generator], Tensor]
PAIRINGS: dict[str, Pairing] = {"index": index_pairing, "shuffled": shuffled_pairing}


def target_pairing(name: str) -> Pairing:
    return lookup(PAIRINGS, name, "target pairing")


def epoch_pairing(
    name: str, source_positions: Tensor, order: Tensor, n_target: int, generator: torch.Generator
) -> Tensor:
    """The target position paired with each source image of an epoch, in training order (CPU)."""
    return target_pairing(name)(source_positions[order], n_target, generator)
