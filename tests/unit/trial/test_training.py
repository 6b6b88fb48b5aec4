from __future__ import annotations

import pytest
import torch

from asha_tune.errors import AshaTuneError, ConfigError, DivergedError, WeightsError
from asha_tune.trial.model import build_model
from asha_tune.trial.training import load_checkpoint, run_trial, save_checkpoint
from tests.helpers.data import tiny_config


class Killed(Exception):
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
            raise Killed

    with pytest.raises(Killed):
        run_trial(config, tiny_runtime, report=killed_after_two)
    state = load_checkpoint(path)
    assert state["epoch"] == 2
    resumed = run_trial(config, tiny_runtime, report=keep_last("resumed"), resume=state)

    assert states_equal(finals["full"], finals["resumed"])
    strip = [{k: v for k, v in m.items() if not k.startswith("time_")} for m in resumed.history]
    assert strip == [{k: v for k, v in m.items() if not k.startswith("time_")} for m in full.history]
    assert len(resumed.history) == 4


def test_resume_refuses_another_configuration(tiny_runtime, tmp_path):
    states = []
    run_trial(tiny_config(train={"epochs": 1}), tiny_runtime, report=lambda m, s: states.append(s))
    with pytest.raises(AshaTuneError, match="different configuration"):
        run_trial(tiny_config(train={"epochs": 1, "seed": 5}), tiny_runtime, resume=states[-1])


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


def test_divergence_is_a_clear_error(tiny_runtime):
    with pytest.raises(DivergedError, match="training loss became nan in epoch 1"):
        run_trial(tiny_config(train={"lr": 1e12, "epochs": 1}), tiny_runtime)


def test_cuda_request_without_cuda_is_an_error(tiny_runtime):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="no CUDA device"):
        run_trial(tiny_config(), tiny_runtime.model_copy(update={"device": "cuda"}))


def test_weights_from_a_state_dict_file(tmp_path):
    torch.manual_seed(3)
    source = build_model("none", num_classes=1000)  # an ImageNet-shaped file: head is replaced
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = build_model(str(path))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 7
    seven = build_model("none")
    torch.save(seven.state_dict(), path)
    assert torch.equal(build_model(str(path)).fc.weight, seven.fc.weight)


def test_bad_weights_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        build_model(str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="cannot load weights file"):
        build_model(str(tmp_path / "junk.pth"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="do not fit resnet18"):
        build_model(str(tmp_path / "other.pth"))


def test_imagenet_weights_unreachable_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # Point the download at a closed loopback port so the test never leaves this machine.
    from asha_tune.trial import model as model_module

    monkeypatch.setattr(model_module, "IMAGENET", _Unreachable())
    with pytest.raises(WeightsError) as err:
        build_model("imagenet")
    text = str(err.value)
    assert "cannot fetch ImageNet weights" in text and "--weights none" in text
    assert "hub/checkpoints/resnet18-f37072fd.pth" in text


class _Unreachable:
    url = "http://127.0.0.1:9/resnet18-f37072fd.pth"

    def get_state_dict(self, **kwargs):
        return torch.hub.load_state_dict_from_url(self.url, **kwargs)


def test_imagenet_weights_come_from_torchvision_cache(tmp_path, monkeypatch):
    """With the file in torch.hub's cache (as after a download), no network is needed."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from asha_tune.trial.model import IMAGENET

    torch.manual_seed(1)
    fake = build_model("none", num_classes=1000)
    target = tmp_path / "torch" / "hub" / "checkpoints" / IMAGENET.url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    torch.save(fake.state_dict(), target)
    model = build_model("imagenet")
    assert torch.equal(model.conv1.weight, fake.conv1.weight)
    assert model.fc.out_features == 7
