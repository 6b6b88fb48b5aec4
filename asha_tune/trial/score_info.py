"""What the label-free selection scores are, as data: no torch, so config validation, `--help`
and reports can list and describe them without importing the trial (scores.py computes them).

Every one is computed on the model's predictions for target images the trial already evaluates,
and none reads a target label: a run selected on one has seen unlabelled target images only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from asha_tune.errors import ConfigError

SND_TEMPERATURE = 0.05  # Saito et al. (ICCV 2021) and pytorch-adapt's SNDValidator default


@dataclass(frozen=True)
class ScoreInfo:
    name: str
    summary: str  # what it is, in one line
    direction: Literal["max", "min"]  # which way is better
    metric: str  # the per-epoch metric a trial logs it as
    range: str  # its bounds, so a reader can tell a value from noise
    reference: str
    needs_target_images: bool = True  # computed on the target images' predictions
    uses_target_labels: bool = False  # never: these are the protocols UDA can use


SCORE_INFO: dict[str, ScoreInfo] = {
    "entropy": ScoreInfo(
        "entropy",
        "mean entropy of the softmax predictions on the target images (nats; confident is low)",
        "min",
        "target_entropy",
        "0 to ln C (C classes: ln 7 = 1.95 on PACS)",
        "pytorch-adapt EntropyValidator (reports its negative)",
    ),
    "im": ScoreInfo(
        "im",
        "information maximisation: entropy of the mean target prediction minus the mean entropy",
        "max",
        "target_im",
        "0 to ln C (confident and spread over the classes is high)",
        "pytorch-adapt IMValidator (Diversity + Entropy validators)",
    ),
    "snd": ScoreInfo(
        "snd",
        f"soft neighbourhood density of the target predictions (temperature {SND_TEMPERATURE})",
        "max",
        "target_snd",
        "0 to ln(N-1) for N target images: compare trials on the same images only",
        "Saito et al., ICCV 2021 (arXiv:2108.10860); pytorch-adapt SNDValidator",
    ),
}


def score_info(name: str) -> ScoreInfo:
    """A score's description, or a ConfigError that lists the valid names."""
    try:
        return SCORE_INFO[name]
    except KeyError:
        raise ConfigError(
            f"unknown label-free selection score {name!r}: choose one of {', '.join(SCORE_INFO)}"
        ) from None
