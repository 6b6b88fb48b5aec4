"""Target pairing: which target images the adaptation sees, on the real PACS files and in a trial."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import Tensor

from asha_tune.trial.augmentation import MEAN, STD
from asha_tune.trial.config import CLASSES, Runtime
from asha_tune.trial.pairing import epoch_pairing
from asha_tune.trial.training import Generators, Trial
from tests.helpers.data import tiny_config


def coloured_pacs(root: Path, per_class: dict[str, int]) -> dict[tuple[int, int, int], int]:
    """PNG images of one flat colour each; returns target colour -> position in the target domain."""
    colours = {}
    for d, (domain, n) in enumerate(per_class.items()):
        position = 0
        for name in CLASSES:
            (root / domain / name).mkdir(parents=True)
            for i in range(n):
                colour = (20 + 10 * (position % 20), 20 + 10 * (position // 20), 60 + 100 * d)
                Image.new("RGB", (40, 40), colour).save(root / domain / name / f"{i:02d}.png")
                if domain == "cartoon":
                    colours[colour] = position
                position += 1
    return colours


@pytest.mark.parametrize(
    ("pairing", "protocol"), [("index", "oracle"), ("index", "source_val"), ("shuffled", "oracle")]
)
def test_a_trial_forwards_the_target_images_its_pairing_names(tmp_path, pairing, protocol):
    colours = coloured_pacs(tmp_path / "pacs", {"art_painting": 5, "cartoon": 3})
    runtime = Runtime(data_root=tmp_path / "pacs", cache_dir=tmp_path / "cache", device="cpu")
    config = tiny_config(
        shaping={"mode": "bn_only", "target_pairing": pairing},
        selection={"protocol": protocol},
        train={"epochs": 1, "seed": 3},
    )
    trial = Trial(config, runtime)
    forwarded: list[Tensor] = []
    trial.model.register_forward_pre_hook(
        lambda m, inputs: forwarded.append(inputs[0]) if m.training else None
    )
    trial.run_epoch()

    # bn_only forwards the target batch, then the source batch: every other training forward.
    mean, std = torch.tensor(MEAN), torch.tensor(STD)
    palette = torch.tensor(list(colours), dtype=torch.float32)
    got = []
    for x in forwarded[0::2]:
        rgb = (x.mean(dim=(2, 3)) * std + mean) * 255  # flat images stay flat through crops and flips
        got += torch.cdist(rgb, palette).argmin(1).tolist()
    got = [colours[tuple(palette[i].int().tolist())] for i in got]

    gens = Generators.seeded(3, torch.device("cpu"))  # the trial's streams, replayed
    order = torch.randperm(len(trial.data.source), generator=gens.order)
    expected = epoch_pairing(pairing, trial.data.source_positions, order, 21, gens.pair).tolist()
    assert got == expected
    if pairing == "index":  # position i of the source domain goes with target image i % 21
        assert got == (trial.data.source_positions[order] % 21).tolist()
        assert len(got) == (35 if protocol == "oracle" else 28)
    else:
        assert sorted(Counter(got).values()) == [1] * 7 + [2] * 14  # 35 = 21 + 14 draws
