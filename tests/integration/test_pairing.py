"""Target pairing: which target images the adaptation sees, on the real PACS files and in a trial."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from asha_tune.trial import selection
from asha_tune.trial.config import CLASSES, SelectionConfig
from asha_tune.trial.datasets import IMAGE_SUFFIXES
from asha_tune.trial.pairing import epoch_pairing
from asha_tune.trial.training import Generators
from tests.helpers.data import pacs_domain


def counted_by_hand(root: Path, domain: str) -> list[int]:
    """Images per class, in class order, straight from the folders (no asha_tune code)."""
    return [
        sum(1 for f in os.listdir(root / domain / c) if Path(f).suffix.lower() in IMAGE_SUFFIXES)
        for c in CLASSES
    ]


def index_coverage_by_hand(source_count: int, target_counts: list[int]) -> tuple[dict[str, int], int]:
    """Target images of each class that position i % n_target reaches, and how many twice."""
    n_target = sum(target_counts)
    hits = Counter(i % n_target for i in range(source_count))
    starts = np.cumsum([0, *target_counts])
    seen = {CLASSES[c]: sum(1 for p in hits if starts[c] <= p < starts[c + 1]) for c in range(len(CLASSES))}
    return {k: v for k, v in seen.items() if v}, sum(1 for n in hits.values() if n > 1)


def pairing_coverage(root: Path, target: str, pairing: str, epochs: int = 1) -> tuple[Counter, Counter]:
    """(images seen per class, uses per target image) over `epochs` epochs, with asha_tune's code."""
    files = {d: pacs_domain(root, d) for d in ("art_painting", target)}
    domains = {d: selection.Domain(d, tuple(map(str, f.paths)), f.labels) for d, f in files.items()}
    plan = selection.plan_selection(SelectionConfig(), domains["art_painting"], [domains[target]])
    positions = torch.tensor(plan.train)
    gens = Generators.seeded(0, torch.device("cpu"))
    uses: Counter = Counter()
    for _ in range(epochs):
        order = torch.randperm(len(positions), generator=gens.order)
        uses.update(epoch_pairing(pairing, positions, order, len(files[target].labels), gens.pair).tolist())
    labels = files[target].labels
    return Counter(CLASSES[labels[p]] for p in uses), uses


@pytest.mark.parametrize("target", ["cartoon", "sketch", "photo"])
def test_index_pairing_coverage_matches_an_independent_count(pacs_root, target):
    expected, twice = index_coverage_by_hand(
        sum(counted_by_hand(pacs_root, "art_painting")), counted_by_hand(pacs_root, target)
    )
    seen, uses = pairing_coverage(pacs_root, target, "index", epochs=3)
    assert dict(seen) == expected  # the same images every epoch
    assert sum(1 for n in uses.values() if n > 3) == twice
    # The facts docs/selection.md states.
    if target == "sketch":
        assert set(seen) == {"dog", "elephant", "giraffe"}
    if target == "cartoon":
        assert seen["person"] == 109
        assert counted_by_hand(pacs_root, "cartoon")[CLASSES.index("person")] == 405
    if target == "photo":
        assert len(seen) == 7
        assert twice == 2048 - 1670


@pytest.mark.parametrize("target", ["cartoon", "sketch", "photo"])
def test_shuffled_pairing_draws_from_the_whole_target_domain(pacs_root, target):
    counts = counted_by_hand(pacs_root, target)
    n_source, n_target = sum(counted_by_hand(pacs_root, "art_painting")), sum(counts)
    seen, uses = pairing_coverage(pacs_root, target, "shuffled")
    assert len(seen) == 7
    # One epoch: every target image used equally often, to within one.
    low, high = n_source // n_target, -(-n_source // n_target)
    assert set(uses.values()) <= {low, high}
    assert sum(uses.values()) == n_source
    if n_target <= n_source:
        assert len(uses) == n_target
    # Class shares follow the domain's (a uniform draw: within 5 standard deviations).
    for c, name in enumerate(CLASSES):
        share = counts[c] / n_target
        expected = sum(uses.values()) * share
        assert abs(seen[name] - expected) <= 5 * max(1.0, np.sqrt(expected * (1 - share))), name
    # Over the paper's 30 epochs, every target image was seen.
    _, over_run = pairing_coverage(pacs_root, target, "shuffled", epochs=30)
    assert len(over_run) == n_target
