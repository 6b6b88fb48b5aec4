"""The names a configuration may use are data (registry.py, no torch); the behaviour behind each
name lives in its own module. Every registry of behaviour holds exactly the registry's names."""

from __future__ import annotations

import pytest

from asha_tune.errors import ConfigError
from asha_tune.trial import pairing, registry, selection, shaping
from asha_tune.trial.config import TrialConfig


@pytest.mark.parametrize(
    ("names", "behaviour"),
    [
        (registry.MODES, shaping.MODES),
        (registry.SHAPE_FUNCTIONS, shaping.SHAPE_FUNCTIONS),
        (registry.SELECTION_PROTOCOLS, selection.PROTOCOLS),
        (registry.TARGET_PAIRINGS, pairing.PAIRINGS),
    ],
)
def test_every_name_has_its_behaviour_and_nothing_else(names, behaviour):
    assert list(names) == list(behaviour)


@pytest.mark.parametrize("mode", list(registry.MODES))
def test_each_mode_class_reads_its_own_entry(mode):
    config = TrialConfig.model_validate(
        {
            "data": {"targets": ["cartoon"]},  # a target mode adapts to one target
            "shaping": {
                "mode": mode,
                **({"convs": [1]} if registry.MODES[mode].shapes else {}),
                **({"p0": 0.5} if mode == "random" else {}),
            },
        }
    )
    instance = shaping.shaping_mode(config.shaping)
    assert instance.name == mode
    assert instance.info is registry.MODES[mode]
    assert config.train.batch_size == registry.MODES[mode].batch_size


def test_the_bn_only_control_trains_with_the_batch_of_the_target_mode_it_controls_for():
    one = {"data": {"targets": ["cartoon"]}}
    control = TrialConfig.model_validate({**one, "shaping": {"mode": "bn_only"}})
    target = TrialConfig.model_validate({**one, "shaping": {"mode": "target", "convs": [4]}})
    assert control.train.batch_size == target.train.batch_size == 256


def test_a_lookup_miss_lists_the_valid_names():
    with pytest.raises(
        ConfigError, match="unknown mode 'rnd': choose one of baseline, random, target, bn_only"
    ):
        registry.lookup(registry.MODES, "rnd", "mode")
