"""The trial's quick checks: what it refuses (another configuration, a missing CUDA, bad weights)
and where its weights come from."""

from __future__ import annotations

import pytest
import torch

from asha_tune.errors import AshaTuneError, ConfigError, DivergedError, WeightsError
from asha_tune.trial.model import build_model
from asha_tune.trial.training import run_trial
from tests.helpers.data import tiny_config


def test_resume_refuses_another_configuration(tiny_runtime, tmp_path):
    states = []
    run_trial(tiny_config(train={"epochs": 1}), tiny_runtime, report=lambda m, s: states.append(s))
    with pytest.raises(AshaTuneError, match="different configuration"):
        run_trial(tiny_config(train={"epochs": 1, "seed": 5}), tiny_runtime, resume=states[-1])


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
    assert "cannot fetch ImageNet weights" in text
    assert "--weights none" in text
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


# --- fp16 with a GradScaler and fused SGD (emulated on the CPU) ------------------------------


# --- resuming on another device --------------------------------------------------------------
