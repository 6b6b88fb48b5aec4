"""The budget a trial's images get on its device: a share of it per trial that shares it."""

from __future__ import annotations

import pytest
import torch

from asha_tune.spaces import load_space
from asha_tune.sweep.trainable import device_sharing
from asha_tune.trial.config import Runtime
from asha_tune.trial.loading import data_budget


@pytest.mark.parametrize(
    ("overrides", "sharing"),
    [
        (["resources.gpu=0.25", "search.max_concurrent=4"], 4),  # four trials on one GPU
        (["resources.gpu=0.5", "search.max_concurrent=4"], 2),
        (["resources.gpu=0.25", "search.max_concurrent=2"], 2),  # never more than run at once
        (["resources.gpu=0", "search.max_concurrent=3"], 3),  # CPU trials share the host
        (["resources.gpu=0", "search.reproducible=true"], 1),
    ],
)
def test_trials_that_share_a_device_split_its_budget(overrides, sharing):
    assert device_sharing(load_space("quickstart", overrides)) == sharing


def test_a_given_budget_wins_and_the_default_is_split_between_the_trials():
    cpu = torch.device("cpu")
    assert data_budget(Runtime(data_budget="3MiB", trials_per_device=4), cpu) == 3 * 2**20
    one, four = data_budget(Runtime(), cpu), data_budget(Runtime(trials_per_device=4), cpu)
    assert four == pytest.approx(one / 4, rel=0.05)  # of the host's available memory, read twice
