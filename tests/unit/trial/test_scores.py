"""Label-free selection scores (entropy, IM, SND) on small prediction matrices whose values are
worked out by hand in the comments, their edge cases and invariances, and the batched form."""

from __future__ import annotations

import math

import pytest
import torch

from asha_tune.errors import ConfigError
from asha_tune.trial import score_info, scores

LN2, LN3 = math.log(2), math.log(3)
INF = math.inf


def logits_of(probabilities: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is exactly these rows (log p; log 0 = -inf)."""
    return torch.tensor(probabilities, dtype=torch.float64).log().float()


# --- hand-computed values ----------------------------------------------------------------------

# Rows p1 = (1/2, 1/2), p2 = (3/4, 1/4):
#   H(p1) = ln 2                                  = 0.6931472
#   H(p2) = 3/4 ln(4/3) + 1/4 ln 4                = 0.2157616 + 0.3465736 = 0.5623351
#   mean entropy                                  = (0.6931472 + 0.5623351) / 2 = 0.6277412
#   mean prediction (5/8, 3/8): H = 5/8 ln(8/5) + 3/8 ln(8/3) = 0.2937523 + 0.3678110 = 0.6615632
#   im = 0.6615632 - 0.6277412                    = 0.0338221
TWO_BY_TWO = [[0.5, 0.5], [0.75, 0.25]]


def test_entropy_and_im_of_two_predictions_by_hand():
    x = logits_of(TWO_BY_TWO)
    assert scores.entropy(x) == pytest.approx(0.6277412, abs=1e-6)
    assert scores.im(x) == pytest.approx(0.0338221, abs=1e-6)
    # The same rows as raw logits (ln 3 against 0 is 3/4 : 1/4): softmax is applied, not assumed.
    raw = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]])
    assert scores.entropy(raw) == pytest.approx(0.6277412, abs=1e-6)


# Three rows over three classes, each a half on its own class and a quarter on the others:
#   H = 1/2 ln 2 + 2 · 1/4 ln 4 = 1.5 ln 2       = 1.0397208 (every row)
#   mean prediction uniform: H = ln 3            = 1.0986123;  im = ln 3 - 1.5 ln 2 = 0.0588915
#   snd: |p| = sqrt(1/4 + 1/16 + 1/16) = sqrt(6)/4; p_i·p_j = 1/8 + 1/8 + 1/16 = 5/16, so every
#   cosine is (5/16)/(6/16) = 5/6: each image's two neighbours are equally close, its
#   neighbourhood distribution is (1/2, 1/2) at any temperature: snd = ln 2 = 0.6931472
THREE_BY_THREE = [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]]


def test_three_by_three_by_hand():
    x = logits_of(THREE_BY_THREE)
    assert scores.entropy(x) == pytest.approx(1.0397208, abs=1e-6)
    assert scores.im(x) == pytest.approx(0.0588915, abs=1e-6)
    assert scores.snd(x) == pytest.approx(LN2, abs=1e-6)
    assert scores.snd(x, temperature=1.0) == pytest.approx(LN2, abs=1e-6)


# SND's temperature, on a = b = (1, 0) and c = (0, 1): cos(a, b) = 1, cos(a, c) = cos(b, c) = 0.
#   row a: its neighbours b, c at similarities (1, 0); softmax((1, 0) / T):
#     T = 1:    q = (e, 1) / (1 + e); H = ln(1 + e) - e / (1 + e) = 1.3132617 - 0.7310586 = 0.5822031
#     T = 0.05: logits (20, 0): H = ln(1 + e^-20) + 20 e^-20 / (1 + e^-20) = 4.33e-8
#   row b: the same; row c: neighbours a, b at (0, 0): H = ln 2 = 0.6931472
#   snd(T = 1)    = (2 · 0.5822031 + 0.6931472) / 3 = 0.6191845
#   snd(T = 0.05) = (2 · 4.33e-8 + 0.6931472) / 3   = 0.2310491
TWO_CLUSTERS = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]


def test_snd_by_hand_at_two_temperatures():
    x = logits_of(TWO_CLUSTERS)  # exact zeros: -inf logits are handled (p log p = 0)
    assert scores.snd(x, temperature=1.0) == pytest.approx(0.6191845, abs=1e-6)
    assert scores.snd(x) == pytest.approx(0.2310491, abs=1e-6)  # the default T = 0.05
    assert score_info.SND_TEMPERATURE == 0.05
    # Large finite logits instead of -inf: the same within float precision.
    near = torch.tensor([[60.0, 0.0], [60.0, 0.0], [0.0, 60.0]])
    assert scores.snd(near) == pytest.approx(0.2310491, abs=1e-6)


# --- edge cases ----------------------------------------------------------------------------------


def test_uniform_predictions():
    # Every row (1/3, 1/3, 1/3): entropy ln 3; the mean is uniform too, so im = ln 3 - ln 3 = 0;
    # all four predictions coincide (cosine 1), so each image's 3 neighbours are equally close:
    # snd = ln 3, its maximum ln(N - 1): SND rewards density, and a collapsed model is dense.
    x = torch.zeros(4, 3)
    assert scores.entropy(x) == pytest.approx(LN3, abs=1e-6)
    assert scores.im(x) == pytest.approx(0.0, abs=1e-6)
    assert scores.snd(x) == pytest.approx(LN3, abs=1e-6)


def test_one_hot_predictions():
    # Confident and spread over the classes: entropy 0, im = H(uniform mean) - 0 = ln 3 (its
    # maximum); the three predictions are orthogonal, so each image's two neighbours are
    # equally far: snd = ln 2.
    x = torch.eye(3) * 100
    assert scores.entropy(x) == pytest.approx(0.0, abs=1e-6)
    assert scores.im(x) == pytest.approx(LN3, abs=1e-6)
    assert scores.snd(x) == pytest.approx(LN2, abs=1e-6)
    # Confident but all the same class: the mean prediction is one-hot too, im = 0.
    same = torch.tensor([[100.0, 0, 0]] * 3)
    assert scores.im(same) == pytest.approx(0.0, abs=1e-6)


def test_a_single_image():
    # p = (3/4, 1/4): entropy 0.5623351 (as above); the mean prediction is p itself, im = 0.
    x = logits_of([[0.75, 0.25]])
    assert scores.entropy(x) == pytest.approx(0.5623351, abs=1e-6)
    assert scores.im(x) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 images"):
        scores.snd(x)


def test_two_images_have_one_neighbour_each():
    # One neighbour: its softmax weight is 1, entropy 0, whatever the predictions.
    assert scores.snd(torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])) == pytest.approx(0.0, abs=1e-7)


def test_bad_shapes_and_nonfinite_logits():
    for bad in (torch.zeros(3), torch.zeros(0, 3), torch.zeros(2, 0)):
        with pytest.raises(ValueError, match="shape"):
            scores.entropy(bad)
    assert math.isnan(scores.entropy(torch.tensor([[math.nan, 0.0], [0.0, 0.0]])))


# --- invariances, precision, the batched form ------------------------------------------------------


def random_logits(n: int = 50, c: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("name", list(scores.SCORES))
def test_row_and_class_order_do_not_matter(name):
    x = random_logits()
    rows = torch.randperm(50, generator=torch.Generator().manual_seed(1))
    classes = torch.randperm(7, generator=torch.Generator().manual_seed(2))
    assert scores.score(name, x[rows]) == pytest.approx(scores.score(name, x), abs=1e-5)
    assert scores.score(name, x[:, classes]) == pytest.approx(scores.score(name, x), abs=1e-5)


def reference_snd(logits: torch.Tensor, temperature: float) -> float:
    """SND written out the long way, in float64: the whole similarity matrix, the diagonal
    dropped by a mask (N x N-1), a softmax per row, the mean of the rows' entropies."""
    p = torch.softmax(logits.double(), dim=1)
    p = p / p.norm(dim=1, keepdim=True)
    n = p.shape[0]
    sim = (p @ p.T)[~torch.eye(n, dtype=torch.bool)].view(n, n - 1)
    q = torch.softmax(sim / temperature, dim=1)
    return (-(q * q.log()).sum(dim=1)).mean().item()


@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_snd_agrees_with_the_long_way_on_random_predictions(temperature):
    x = random_logits(60, 7)
    assert scores.snd(x, temperature) == pytest.approx(reference_snd(x, temperature), abs=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 49, 50, 1024])
def test_snd_in_chunks_equals_the_whole_matrix(chunk):
    x = random_logits()
    assert scores.snd(x, chunk=chunk) == pytest.approx(scores.snd(x, chunk=10_000), abs=1e-6)


def test_batched_scores_equal_the_whole_tensor():
    x = random_logits(53)
    batched = scores.TargetScores(["entropy", "im", "snd"], chunk=8)
    for begin in range(0, 53, 16):  # 16, 16, 16, 5: as an evaluation's batches
        batched.add(x[begin : begin + 16])
    got = batched.result()
    assert batched.count == 53
    assert got == pytest.approx(
        {"entropy": scores.entropy(x), "im": scores.im(x), "snd": scores.snd(x)}, abs=1e-6
    )
    only = scores.TargetScores(["im"])
    only.add(x)
    # no predictions kept without snd
    assert list(only.result()) == ["im"]
    assert not only._unit
    with pytest.raises(ValueError, match="no logits"):
        scores.TargetScores(["entropy"]).result()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_are_scored_in_float32(dtype):
    # Logits near fp16's largest value (65,504): in fp32 the softmax is exact, the first row is
    # one-hot (entropy 0) and the second uniform (ln 2): mean entropy ln 2 / 2 = 0.3465736.
    big = torch.tensor([[60000.0, 0.0], [0.0, 0.0]], dtype=dtype)
    assert scores.entropy(big) == pytest.approx(LN2 / 2, abs=1e-6)
    x = random_logits().to(dtype)
    for name in scores.SCORES:
        assert scores.score(name, x) == scores.score(name, x.float())


def test_score_info_describes_every_score_without_labels():
    assert set(score_info.SCORE_INFO) == set(scores.SCORES) == {"entropy", "im", "snd"}
    assert {n: i.direction for n, i in score_info.SCORE_INFO.items()} == {
        "entropy": "min",
        "im": "max",
        "snd": "max",
    }
    for info in score_info.SCORE_INFO.values():
        assert info.needs_target_images
        assert not info.uses_target_labels
        assert info.summary
        assert "\n" not in info.summary
    with pytest.raises(
        ConfigError, match="unknown label-free selection score 'acc': choose one of entropy, im, snd"
    ):
        score_info.score_info("acc")
    with pytest.raises(ConfigError, match="choose one of"):
        scores.TargetScores(["entropy", "bogus"])


def test_score_info_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, asha_tune.trial.score_info; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
