"""Whole trials on tiny synthetic data, several epochs each (tens of seconds on 2 cores): resume
bit-for-bit, the recipe, fp16 faults a CPU can show, checkpoints moved between devices."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from asha_tune.errors import AshaTuneError
from asha_tune.trial import training
from asha_tune.trial.training import Trial, load_checkpoint, reseed, run_trial, save_checkpoint
from tests.helpers.data import tiny_config


class KilledError(Exception):
    pass


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "shaping",
    [
        {"mode": "random", "convs": [1, 7], "p0": "0.7:0.1"},
        {"mode": "target", "convs": [4]},
        {"mode": "target", "convs": [4], "target_pairing": "shuffled"},
    ],
)
def test_killed_and_resumed_trial_ends_bit_for_bit_like_an_uninterrupted_one(tiny_runtime, tmp_path, shaping):
    config = tiny_config(shaping=shaping, train={"epochs": 4})
    finals: dict[str, dict] = {}

    def keep_last(name):
        def report(metrics, state):
            finals[name] = {k: v.clone() for k, v in state["model"].items()}

        return report

    full = run_trial(config, tiny_runtime, report=keep_last("full"))

    path = tmp_path / "trial.pt"

    def killed_after_two(metrics, state):
        save_checkpoint(state, path)
        if metrics["epoch"] == 2:
            raise KilledError

    with pytest.raises(KilledError):
        run_trial(config, tiny_runtime, report=killed_after_two)
    state = load_checkpoint(path)
    assert state["epoch"] == 2
    resumed = run_trial(config, tiny_runtime, report=keep_last("resumed"), resume=state)

    assert states_equal(finals["full"], finals["resumed"])
    strip = [{k: v for k, v in m.items() if not k.startswith("time_")} for m in resumed.history]
    assert strip == [{k: v for k, v in m.items() if not k.startswith("time_")} for m in full.history]
    assert len(resumed.history) == 4


def test_reports_every_epoch_for_every_target(tiny_runtime):
    seen = []
    config = tiny_config(
        data={"targets": ["cartoon", "sketch", "photo"]}, shaping={"mode": "random", "convs": [1], "p0": 0.5}
    )
    result = run_trial(config, tiny_runtime, report=lambda m, s: seen.append(m))
    assert [m["epoch"] for m in seen] == [1, 2]
    for m in seen:
        assert {
            "acc_cartoon",
            "acc_sketch",
            "acc_photo",
            "target_acc",
            "train_loss",
            "source_acc",
        } <= m.keys()
        assert m["target_acc"] == pytest.approx((m["acc_cartoon"] + m["acc_sketch"] + m["acc_photo"]) / 3)
    assert result.final == seen[-1]


def test_recipe_learns_a_learnable_synthetic_task(tiny_runtime):
    """Class colour decides the label in the synthetic set: a working loop fits it."""
    config = tiny_config(train={"epochs": 6, "lr": 0.01})
    result = run_trial(config, tiny_runtime)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["source_acc"] > 40


def test_learning_rate_steps_at_80_percent(tiny_runtime):
    result = run_trial(tiny_config(train={"epochs": 5}), tiny_runtime)
    assert [m["lr"] for m in result.history] == pytest.approx([1e-3] * 4 + [1e-4])


# --- fp16 with a GradScaler and fused SGD (emulated on the CPU) ------------------------------


def momentum_buffers(trial: Trial) -> list[torch.Tensor]:
    return [s["momentum_buffer"] for s in trial.optimizer.state.values() if "momentum_buffer" in s]


def test_an_overflowing_first_fp16_step_is_skipped_without_poisoning_momentum(tiny_runtime, fp16_on_cpu):
    """torch's fused SGD made its momentum buffers with empty_like on the first step and kept them
    when the scaler found an inf there: the next steps added garbage (1e38) and the trial diverged."""
    trial = Trial(tiny_config(train={"epochs": 3}), tiny_runtime)
    assert trial.amp == torch.float16
    assert trial.scaler.is_enabled()
    assert trial.optimizer.defaults["fused"]

    def params() -> dict[str, torch.Tensor]:  # not BatchNorm's running statistics: the forward moves those
        return {name: p.detach().clone() for name, p in trial.model.named_parameters()}

    before = params()
    calls = []

    def inf_once(grad):  # the first backward overflows, as fp16 at the scaler's 2**16 often does
        if not calls:
            grad = grad.clone()
            grad[0, 0] = float("inf")
        calls.append(1)
        return grad

    trial.model.fc.weight.register_hook(inf_once)
    first = {}

    def after_step(optimizer, args, kwargs):
        if not first:
            first["params"] = params()
            first["buffers"] = [b.clone() for b in momentum_buffers(trial)]
            first["scale"] = trial.scaler.get_scale()

    trial.optimizer.register_step_post_hook(after_step)
    losses = [trial.run_epoch()["train_loss"] for _ in range(3)]  # diverged in epoch 2 before the fix

    assert all(torch.equal(first["params"][k], before[k]) for k in before)  # the step was skipped
    assert len(first["buffers"]) == len(list(trial.model.parameters()))
    assert all(torch.count_nonzero(b) == 0 for b in first["buffers"])  # zero momentum, not garbage
    assert all(math.isfinite(loss) for loss in losses)
    assert all(torch.isfinite(p).all() for p in trial.model.parameters())
    assert all(torch.isfinite(b).all() for b in momentum_buffers(trial))
    assert any(not torch.equal(p, before[k]) for k, p in params().items())  # later steps trained


def test_zeroed_momentum_gives_torchs_own_first_step_exactly(tiny_runtime, monkeypatch):
    config = tiny_config(shaping={"mode": "random", "convs": [1], "p0": 0.5})
    finals = {}
    for name in ("zeroed", "torch"):
        if name == "torch":
            monkeypatch.setattr(training, "zero_momentum", lambda optimizer: None)
        trial = Trial(config, tiny_runtime)
        trial.run_epoch()
        finals[name] = trial.optimizer.state_dict()["state"], trial.model.state_dict()
    (zeroed_state, zeroed_model), (torch_state, torch_model) = finals["zeroed"], finals["torch"]
    assert states_equal(zeroed_model, torch_model)
    assert set(torch_state) < set(zeroed_state)  # torch makes none for conv 1: no gradient reaches it
    for i, state in zeroed_state.items():
        if i in torch_state:
            assert torch.equal(state["momentum_buffer"], torch_state[i]["momentum_buffer"])
        else:
            assert torch.count_nonzero(state["momentum_buffer"]) == 0


# --- resuming on another device --------------------------------------------------------------


def cuda_generator_state(seed: int, offset: int) -> torch.Tensor:
    """A CUDA (Philox) generator's state as torch saves it: seed and offset, 8 bytes each."""
    return torch.tensor(list(seed.to_bytes(8, "little") + offset.to_bytes(8, "little")), dtype=torch.uint8)


def test_a_cuda_checkpoint_resumes_on_the_cpu_from_reseeded_device_streams(tiny_runtime, tmp_path, caplog):
    config = tiny_config(shaping={"mode": "random", "convs": [1], "p0": 0.5}, train={"epochs": 3})
    path = tmp_path / "trial.pt"
    full = run_trial(
        config, tiny_runtime, report=lambda m, s: save_checkpoint(s, path) if m["epoch"] == 1 else None
    )
    state = load_checkpoint(path)
    # What a CUDA trial writes: 16-byte device streams, a CUDA RNG, an enabled fp16 scaler.
    state["rng"]["augment"] = cuda_generator_state(2000, 4 * 96)
    state["rng"]["mask"] = cuda_generator_state(3000, 4 * 512)
    state["rng"]["cuda"] = cuda_generator_state(0, 8)
    state["scaler"] = torch.amp.GradScaler("cpu", init_scale=4096.0).state_dict()
    assert state["scaler"]["scale"] == 4096.0
    state["device"] = "cuda"
    save_checkpoint(state, path)

    trial = Trial(config, tiny_runtime)
    with caplog.at_level(logging.WARNING, logger="asha_tune.training"):
        trial.load(load_checkpoint(path))
    assert "resumed a cuda checkpoint on cpu" in caplog.text
    # The documented re-seeding: a hash of the saved state, the same for the same checkpoint.
    assert trial.gens.augment.initial_seed() == reseed(state["rng"]["augment"])
    assert trial.gens.mask.initial_seed() == reseed(state["rng"]["mask"])
    assert trial.gens.augment.initial_seed() != trial.gens.mask.initial_seed()
    assert not trial.scaler.is_enabled()  # fp32 on the CPU: the fp16 scaler's state is dropped
    assert states_equal(trial.model.state_dict(), state["model"])  # the weights carry over exactly
    assert torch.equal(trial.gens.order.get_state(), state["rng"]["order"])  # CPU streams too

    finals = []
    for _ in range(2):
        resumed = run_trial(
            config,
            tiny_runtime,
            resume=load_checkpoint(path),
            report=lambda m, s: finals.append({k: v.clone() for k, v in s["model"].items()}),
        )
        assert [m["epoch"] for m in resumed.history] == [1, 2, 3]
        assert all(math.isfinite(m["train_loss"]) for m in resumed.history)
    assert states_equal(finals[1], finals[3])  # deterministic: the same checkpoint, the same run
    assert resumed.history[0] == full.history[0]
    assert resumed.history[1]["train_loss"] != full.history[1]["train_loss"]  # new crops and masks


def test_a_cpu_checkpoint_resumes_under_an_enabled_fp16_scaler(tiny_runtime, tmp_path, monkeypatch):
    """CPU -> CUDA's scaler half: the fp32 run saved a disabled scaler ({}), which an enabled
    scaler's load_state_dict refuses; the resumed trial starts a fresh one."""
    config = tiny_config(train={"epochs": 2})
    path = tmp_path / "trial.pt"
    run_trial(config, tiny_runtime, report=lambda m, s: save_checkpoint(s, path) if m["epoch"] == 1 else None)
    state = load_checkpoint(path)
    assert state["scaler"] == {}
    assert state["device"] == "cpu"
    monkeypatch.setattr(training, "autocast_dtype", lambda precision, device: torch.float16)
    trial = Trial(config, tiny_runtime)
    trial.load(state)
    # fresh, initial scale
    assert trial.scaler.is_enabled()
    assert trial.scaler.get_scale() == 2.0**16
    resumed = run_trial(config, tiny_runtime, resume=state)
    assert [m["epoch"] for m in resumed.history] == [1, 2]
    assert math.isfinite(resumed.final["train_loss"])


def test_a_checkpoint_whose_cpu_stream_does_not_fit_is_refused_in_one_line(tiny_runtime, tmp_path):
    states = []
    run_trial(tiny_config(train={"epochs": 1}), tiny_runtime, report=lambda m, s: states.append(s))
    states[0]["rng"]["order"] = cuda_generator_state(1, 0)
    with pytest.raises(
        AshaTuneError,
        match=r"^checkpoint's order generator state \(16 bytes\) is not a CPU generator's \(5056 bytes\): not resuming$",
    ):
        Trial(tiny_config(train={"epochs": 1}), tiny_runtime).load(states[0])


def test_every_epoch_says_which_device_it_used(tiny_runtime):
    result = run_trial(tiny_config(), tiny_runtime)
    assert [m["device"] for m in result.history] == ["cpu", "cpu"]
