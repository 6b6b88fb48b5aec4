"""Label-free selection scores: how a model's predictions on unlabelled target images look.

Unsupervised domain adaptation has no target labels, so `source_val` ignores the target and
`target_val` uses labels UDA has not got. The DA literature selects instead on scores of the
model's outputs for the unlabelled target images; three of them, as pytorch-adapt's validators
compute them (github.com/KevinMusgrave/pytorch-adapt, src/pytorch_adapt/validators/, read at
commit 1366df7c):

- `entropy`: the mean entropy of the softmax predictions, in nats (EntropyValidator returns its
  negative). Confident predictions score low: lower is better.
- `im`: information maximisation, the entropy of the mean prediction minus the mean entropy
  (IMValidator = DiversityValidator + EntropyValidator, equal weights). Confident and diverse
  predictions score high: higher is better. 0 <= im <= ln C.
- `snd`: soft neighbourhood density (Saito, Kim, Teterwak, Sclaroff, Darrell, Saenko, "Tune it
  the Right Way: Unsupervised Validation of Domain Adaptation via Soft Neighborhood Density",
  ICCV 2021, arXiv:2108.10860), as SNDValidator computes it on its default layer `preds`: the
  softmax predictions are L2-normalised, their cosine similarities taken between every pair of
  images, each image's similarity to itself removed, each row turned into a distribution over the
  other N-1 images by a softmax at temperature T = 0.05 (the paper's and pytorch-adapt's
  default), and the entropies of those rows averaged. Not normalised: 0 <= snd <= ln(N-1), so
  it compares trials scored on the same N images (as every trial of a sweep is). Higher is
  better (dense neighbourhoods: predictions that cluster). It rewards density, not
  correctness: a model that predicts the same for every image is densest of all (ln(N-1)).

Each function takes a logits tensor (N x C) of any float dtype and computes in float32 with
log_softmax, so fp16/bf16 outputs of an autocast evaluation neither overflow nor lose the
entropy of near-one-hot rows. Non-finite logits give nan (a diverged model scores nothing).

An evaluation runs in batches: `TargetScores` takes the logits batch by batch. `entropy` and
`im` need only running sums (O(C) memory). `snd` needs every image's prediction: it keeps the
N x C normalised predictions (PACS sketch, the largest target: 3,929 x 7 floats, 110 KB) and
compares them `chunk` rows at a time, so memory is O(chunk x N) instead of the N x N matrix
(3,929² = 15.4 M entries, 62 MB in float32: fine, but the chunked form costs nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from asha_tune.trial.score_info import SND_TEMPERATURE, score_info

SND_CHUNK = 1024  # rows of the similarity matrix at a time: 1024 x N floats (16 MB at N = 3,929)


def _log_probs(logits: Tensor) -> Tensor:
    """log softmax over classes, in float32 whatever the input's dtype."""
    if logits.dim() != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        shape = tuple(logits.shape)
        raise ValueError(f"scores need logits of shape (N images, C classes), N, C >= 1; got {shape}")
    return torch.log_softmax(logits.float(), dim=1)


def _entropy_rows(log_p: Tensor) -> Tensor:
    """-sum p log p per row; a zero probability contributes 0 (its log may be -inf), a nan stays."""
    p = log_p.exp()
    return -torch.where(p == 0, torch.zeros_like(p), p * log_p).sum(dim=1)


def _entropy_of(p: Tensor) -> Tensor:
    """Entropy of one probability vector (the mean prediction)."""
    safe = torch.where(p == 0, torch.ones_like(p), p)
    return -(p * safe.log()).sum()


def entropy(logits: Tensor) -> float:
    """Mean entropy (nats) of the softmax predictions; lower is better. 0 <= entropy <= ln C."""
    return _entropy_rows(_log_probs(logits)).mean().item()


def im(logits: Tensor) -> float:
    """Information maximisation: H(mean prediction) - mean H(prediction); higher is better."""
    log_p = _log_probs(logits)
    return (_entropy_of(log_p.exp().mean(dim=0)) - _entropy_rows(log_p).mean()).item()


def _normalised_predictions(logits: Tensor) -> Tensor:
    return torch.nn.functional.normalize(_log_probs(logits).exp(), dim=1)


def snd_of_predictions(unit: Tensor, temperature: float = SND_TEMPERATURE, chunk: int = SND_CHUNK) -> float:
    """SND of L2-normalised predictions (N x C), `chunk` rows of the similarity matrix at a time."""
    n = unit.shape[0]
    if n < 2:
        raise ValueError(f"snd compares each image with the others: it needs at least 2 images, got {n}")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    total = torch.zeros((), dtype=torch.float64, device=unit.device)
    for begin in range(0, n, chunk):
        rows = unit[begin : begin + chunk]
        sim = rows @ unit.T / temperature  # (rows x N)
        own = torch.arange(rows.shape[0], device=unit.device)
        sim[own, own + begin] = -math.inf  # an image is not its own neighbour (removed, not zeroed)
        total += _entropy_rows(torch.log_softmax(sim, dim=1)).sum().double()
    return (total / n).item()


def snd(logits: Tensor, temperature: float = SND_TEMPERATURE, chunk: int = SND_CHUNK) -> float:
    """Soft neighbourhood density (Saito et al., ICCV 2021; pytorch-adapt's SNDValidator): the
    mean entropy of each image's softmax(cosine similarity / T) over the other N-1 images, the
    similarities taken between softmax predictions; higher is better. N >= 2."""
    return snd_of_predictions(_normalised_predictions(logits), temperature, chunk)


SCORES: dict[str, Callable[[Tensor], float]] = {"entropy": entropy, "im": im, "snd": snd}  # as SCORE_INFO


def score(name: str, logits: Tensor) -> float:
    """One score by name (score_info.SCORE_INFO lists them), on the whole logits tensor."""
    score_info(name)  # a ConfigError that lists the valid names
    return SCORES[name](logits)


class TargetScores:
    """The scores of one evaluation, fed batch by batch (`add`), read once at the end (`result`).

    `entropy` and `im` keep running sums; `snd` keeps the normalised predictions of every image
    (N x C float32 on the logits' device) and compares them at the end, `chunk` rows at a time.
    """

    def __init__(self, names: Iterable[str], temperature: float = SND_TEMPERATURE, chunk: int = SND_CHUNK):
        self.names = list(dict.fromkeys(names))
        for name in self.names:
            score_info(name)
        self.temperature, self.chunk = temperature, chunk
        self.count = 0
        self._entropy_sum: Tensor | None = None  # float64 sums: 4k images lose nothing
        self._p_sum: Tensor | None = None
        self._unit: list[Tensor] = []

    def add(self, logits: Tensor) -> None:
        log_p = _log_probs(logits.detach())
        p = log_p.exp()
        entropies = _entropy_rows(log_p).double().sum()
        p_sum = p.double().sum(dim=0)
        self._entropy_sum = entropies if self._entropy_sum is None else self._entropy_sum + entropies
        self._p_sum = p_sum if self._p_sum is None else self._p_sum + p_sum
        if "snd" in self.names:
            self._unit.append(torch.nn.functional.normalize(p, dim=1))
        self.count += logits.shape[0]

    def result(self) -> dict[str, float]:
        """{name: score} for every name asked for."""
        if self.count == 0 or self._entropy_sum is None or self._p_sum is None:
            raise ValueError("no logits were added: a score needs at least one image")
        mean_entropy = (self._entropy_sum / self.count).item()
        out: dict[str, float] = {}
        for name in self.names:
            if name == "entropy":
                out[name] = mean_entropy
            elif name == "im":
                out[name] = _entropy_of(self._p_sum / self.count).item() - mean_entropy
            else:
                out[name] = snd_of_predictions(torch.cat(self._unit), self.temperature, self.chunk)
        return out
