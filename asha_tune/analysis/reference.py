"""What others measured about the paper's numbers, as data.

Published figures per configuration live in `search_spaces/paper_grid.yaml`; this module holds
what judging a difference from them needs. All of it is reference material, never our results.
"""

from __future__ import annotations

from pathlib import Path

from asha_tune.trial.registry import PAPER_PROTOCOL

# How far repeating one configuration moves a target's accuracy (percentage points): GPU
# nondeterminism alone, same code and seed (repeats of the authors' code). Photo: unknown.
SEED_SPREAD_PP = {"cartoon": 0.8, "sketch": 1.5}
SEED_SPREAD_SOURCE = (
    "repeats of the authors' code: one configuration moves cartoon by up to ~0.8, sketch by ~1.5 points"
)
# The whole test domains the paper reports on (a target's size when a run did not log it).
DOMAIN_SIZES = {"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929}
PUBLISHED_SELECTION = PAPER_PROTOCOL  # every published best was picked on the test domain itself


def paper_grid_path() -> Path:
    """The shipped paper grid (its published figures), never a user's space of the same name."""
    from asha_tune.spaces import PACKAGE_SPACES

    return PACKAGE_SPACES / "paper_grid.yaml"


def paper_best(domain: str) -> tuple[str, float] | None:
    """The paper's best published figure on a target, and its configuration (from paper_grid)."""
    from asha_tune.spaces import load_space

    space = load_space(paper_grid_path())
    figures = [
        (c.id, c.published[f"acc_{domain}"]) for c in space.configurations if f"acc_{domain}" in c.published
    ]
    return max(figures, key=lambda f: f[1]) if figures else None
