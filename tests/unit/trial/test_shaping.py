from __future__ import annotations

import pytest
import torch
from torch import nn

from asha_tune.trial.config import CONV_NAMES, ShapingConfig
from asha_tune.trial.model import build_model
from asha_tune.trial.shaping import (
    MODES,
    SHAPE_FUNCTIONS,
    ActivationShaper,
    attach,
    bernoulli_mask,
    numbered_convs,
    shape_function,
)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("none").eval()


def capture(model: nn.Module, number: int) -> dict[str, torch.Tensor]:
    """A plain forward hook registered after the shaper's: it sees the shaped output."""
    seen: dict[str, torch.Tensor] = {}
    conv = numbered_convs(model)[number]
    handle = conv.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o.detach().clone()))
    return seen, handle


def test_conv_numbering_follows_module_names(model):
    convs = numbered_convs(model)
    names = {id(m): n for n, m in model.named_modules()}
    assert [names[id(convs[i])] for i in range(1, 21)] == list(CONV_NAMES)
    assert names[id(convs[1])] == "conv1"
    assert names[id(convs[8])] == "layer2.0.downsample.0"
    assert names[id(convs[20])] == "layer4.1.conv2"


def test_shape_functions_on_known_inputs():
    a = torch.tensor([[-1.0, 0.0, 2.0, 3.0]])
    m = torch.tensor([[1.0, 1.0, 0.0, 0.5]])
    assert SHAPE_FUNCTIONS["binarize_a"](a, m).tolist() == [[0.0, 0.0, 0.0, 0.5]]
    assert SHAPE_FUNCTIONS["raw"](a, m).tolist() == [[-1.0, 0.0, 0.0, 1.5]]
    assert SHAPE_FUNCTIONS["binarize_both"](a, m).tolist() == [[0.0, 0.0, 0.0, 1.0]]
    # top half of A is {2, 3}; M keeps index 3 only -> A kept there, not binarized.
    assert SHAPE_FUNCTIONS["topk"](a, m, 0.5).tolist() == [[0.0, 0.0, 0.0, 3.0]]


def test_topk_is_per_sample():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [40.0, 30.0, 20.0, 10.0]])
    out = SHAPE_FUNCTIONS["topk"](a, torch.ones_like(a), 0.25)
    assert out.tolist() == [[0, 0, 0, 4.0], [40.0, 0, 0, 0]]


def test_unknown_shape_function_lists_the_valid_ones():
    with pytest.raises(ValueError, match="binarize_a, raw, binarize_both, topk"):
        shape_function("sigmoid")


def test_mask_zero_fraction_matches_p0():
    g = torch.Generator().manual_seed(0)
    like = torch.empty(64, 64, 56, 56)
    for p0 in (0.1, 0.5, 0.7, 0.9):
        mask = bernoulli_mask(like, p0, g)
        assert mask.dtype == torch.bool
        assert mask.shape == like.shape
        assert abs((mask == 0).float().mean().item() - p0) < 0.01


def test_masks_are_fresh_each_forward_and_follow_the_generator(model):
    x = torch.randn(2, 3, 32, 32)

    def two_forwards(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        shaper = ActivationShaper(model, [1], "binarize_a", {1: 0.5}, generator=g)
        seen, handle = capture(model, 1)
        with shaper.acting("random"):
            model(x)
            first = seen["out"]
            model(x)
            second = seen["out"]
        handle.remove()
        shaper.remove()
        return first, second

    a1, a2 = two_forwards(0)
    b1, _ = two_forwards(0)
    assert not torch.equal(a1, a2)  # a new mask every forward
    assert torch.equal(a1, b1)  # drawn from the given generator


def test_p0_zero_gives_exactly_the_binarized_map(model):
    x = torch.randn(2, 3, 32, 32)
    seen, handle = capture(model, 3)
    model(x)
    plain = seen["out"]
    handle.remove()
    shaper = ActivationShaper(model, [3], "binarize_a", {3: 0.0}, generator=torch.Generator())
    seen, handle = capture(model, 3)
    with shaper.acting("random"):
        model(x)
    handle.remove()
    shaper.remove()
    assert torch.equal(seen["out"], (plain > 0).float())


def test_random_mode_zero_fraction_at_conv(model):
    config = ShapingConfig(mode="random", convs=[1], p0=0.7, shape_fn="raw")
    mode, shaper = attach(model, config, torch.Generator().manual_seed(1))
    x = torch.rand(8, 3, 64, 64) + 0.1
    seen, handle = capture(model, 1)
    model(x)
    unshaped = seen["out"]
    mode.train_logits(model, shaper, x, None)
    handle.remove()
    shaper.remove()
    nonzero = unshaped != 0
    dropped = (seen["out"][nonzero] == 0).float().mean().item()
    assert abs(dropped - 0.7) < 0.01


def test_target_mode_multiplies_by_the_recorded_target_map():
    torch.manual_seed(0)
    model = build_model("none").train()
    config = ShapingConfig(mode="target", convs=[4])
    mode, shaper = attach(model, config)
    x_s, x_t = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)

    # What conv 4 outputs on each batch without shaping (BN in train mode, as in training).
    probe = build_model("none").train()
    probe.load_state_dict(model.state_dict())
    seen, handle = capture(probe, 4)
    with torch.no_grad():
        probe(x_t)
        target_map = seen["out"]
        probe(x_s)
        source_map = seen["out"]
    handle.remove()

    seen, handle = capture(model, 4)
    mode.train_logits(model, shaper, x_s, x_t)
    handle.remove()
    assert torch.allclose(shaper.recorded[4], target_map)
    assert torch.allclose(seen["out"], source_map * target_map, atol=1e-6)
    shaper.remove()


def test_target_mode_gradient_flows_through_a():
    torch.manual_seed(0)
    model = build_model("none").train()
    mode, shaper = attach(model, ShapingConfig(mode="target", convs=[1]))
    logits = mode.train_logits(model, shaper, torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32))
    logits.sum().backward()
    assert model.conv1.weight.grad is not None
    assert model.conv1.weight.grad.abs().sum() > 0
    shaper.remove()


def test_binarized_random_maps_give_the_shaped_conv_no_gradient():
    torch.manual_seed(0)
    model = build_model("none").train()
    mode, shaper = attach(model, ShapingConfig(mode="random", convs=[1], p0=0.5), torch.Generator())
    mode.train_logits(model, shaper, torch.randn(2, 3, 32, 32), None).sum().backward()
    assert model.conv1.weight.grad is None or model.conv1.weight.grad.abs().sum() == 0
    assert model.layer1[0].conv1.weight.grad.abs().sum() > 0
    shaper.remove()


def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("updates_bn", [True, False])
def test_bn_only_changes_batchnorm_statistics_and_nothing_else(updates_bn):
    torch.manual_seed(0)
    model = build_model("none").train()
    reference = build_model("none").train()
    reference.load_state_dict(model.state_dict())
    mode, shaper = attach(model, ShapingConfig(mode="bn_only", target_updates_bn=updates_bn))
    assert shaper is None
    x_s, x_t = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32) * 3 + 1
    before = bn_buffers(model)
    logits = mode.train_logits(model, shaper, x_s, x_t)
    expected = reference(x_s)  # same weights, source only: outputs must match exactly
    assert torch.allclose(logits, expected, atol=1e-6)
    after, ref_after = bn_buffers(model), bn_buffers(reference)
    changed = [k for k in after if not torch.equal(after[k], ref_after[k])]
    if updates_bn:  # the extra target forward moved the running statistics
        assert any("running_mean" in k for k in changed)
    else:
        assert changed == []
        assert all(torch.equal(after[k], ref_after[k]) for k in before)
    params = dict(model.named_parameters())
    assert all(torch.equal(p, params[k]) for k, p in reference.named_parameters())


def test_target_updates_bn_false_keeps_running_stats_in_target_mode():
    torch.manual_seed(0)
    model = build_model("none").train()
    mode, shaper = attach(model, ShapingConfig(mode="target", convs=[4], target_updates_bn=False))
    reference = bn_buffers(model)
    with torch.no_grad():
        mode.train_logits(model, shaper, torch.zeros(2, 3, 32, 32), torch.randn(2, 3, 32, 32))
    # Only the source forward updated statistics: exactly one batch counted.
    assert int(model.bn1.num_batches_tracked) == int(reference["bn1.num_batches_tracked"]) + 1
    shaper.remove()


def test_eval_shaping_options(model):
    x = torch.randn(2, 3, 32, 32)
    plain = model(x)
    on, shaper = attach(model, ShapingConfig(mode="random", convs=[1], p0=0.9), torch.Generator())
    assert not torch.allclose(on.eval_logits(model, shaper, x), plain)
    shaper.remove()
    off_cfg = ShapingConfig(mode="random", convs=[1], p0=0.9, shape_at_eval=False)
    off, shaper = attach(model, off_cfg, torch.Generator())
    assert torch.equal(off.eval_logits(model, shaper, x), plain)
    shaper.remove()
    target, shaper = attach(model, ShapingConfig(mode="target", convs=[4]))
    assert torch.equal(target.eval_logits(model, shaper, x), plain)  # authors: off at eval
    shaper.remove()


def test_every_mode_trains_one_step():
    """Contract over the mode registry: each mode yields logits that train the head."""
    configs = {
        "baseline": ShapingConfig(),
        "random": ShapingConfig(mode="random", convs=[1, 7], p0="0.7:0.1"),
        "target": ShapingConfig(mode="target", convs=[4], shape_fn="topk", topk_fraction=0.5),
        "bn_only": ShapingConfig(mode="bn_only"),
    }
    assert set(configs) == set(MODES)
    for name, config in configs.items():
        torch.manual_seed(0)
        model = build_model("none").train()
        mode, shaper = attach(model, config, torch.Generator())
        logits = mode.train_logits(model, shaper, torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32))
        assert logits.shape == (2, 7), name
        logits.sum().backward()
        assert model.fc.weight.grad.abs().sum() > 0, name


def test_raw_shaping_cannot_overflow_fp16():
    a = torch.tensor([300.0, -400.0, 2.0], dtype=torch.float16)
    m = torch.tensor([300.0, 500.0, 0.5], dtype=torch.float16)
    assert torch.isinf(a * m).any()  # what fp16 makes of 90,000 and -200,000
    out = shape_function("raw")(a, m)
    assert out.dtype == torch.float32
    assert out.tolist() == [90000.0, -200000.0, 1.0]
    assert shape_function("raw")(a.float(), m.float()).dtype == torch.float32  # fp32 stays fp32
    # topk multiplies A by a 0/1 mask: never more than A itself, so fp16 holds it.
    big = torch.full((1, 4), 60000.0, dtype=torch.float16)
    assert torch.isfinite(shape_function("topk")(big, big, 0.5)).all()


def test_target_maps_with_large_activations_train_under_fp16_autocast():
    """Activations of about 400 at conv 4 (A * M_t about 160,000): the step stays finite."""
    torch.manual_seed(0)
    model = build_model("none").train()
    conv = numbered_convs(model)[4]
    mode, shaper = attach(model, ShapingConfig(mode="target", convs=[4]))
    x, x_target = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out = {}
        handle = conv.register_forward_hook(lambda m, i, o: out.__setitem__("a", o))
        model(x)
        handle.remove()
        conv.weight *= 400 / out["a"].abs().max()
    with torch.autocast("cpu", dtype=torch.float16):
        logits = mode.train_logits(model, shaper, x, x_target)
        loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    assert shaper.recorded[4].dtype == torch.float16
    assert shaper.recorded[4].abs().max() > 256
    assert torch.isfinite(logits).all()
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
