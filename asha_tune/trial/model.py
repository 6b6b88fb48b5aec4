"""The network: torchvision's ResNet-18 with a 7-way head, and where its weights come from."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from asha_tune.errors import WeightsError, first_line
from asha_tune.trial.config import CLASSES

IMAGENET = ResNet18_Weights.IMAGENET1K_V1  # the authors' weights


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights, downloaded once into torch.hub's cache ($TORCH_HOME)."""
    try:
        return IMAGENET.get_state_dict(progress=False, check_hash=True, map_location="cpu", weights_only=True)
    except Exception as err:  # URLError, HTTPError, timeouts, a corrupt partial file
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET.url).name
        reason = first_line(err)
        raise WeightsError(
            f"cannot fetch ImageNet weights from {IMAGENET.url} ({reason}); put that file at "
            f"{cache}, or pass --weights PATH to a local state dict, or --weights none"
        ) from None


def file_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist (use imagenet, none or a path)")
    not_torch = WeightsError(f"cannot load weights file {path}: it is not a file torch.save wrote")
    with path.open("rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # a zip, or a legacy pickle
        raise not_torch
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (KeyError, EOFError):  # torch's unpickler meeting bytes of another format (KeyError: 105)
        raise not_torch from None
    except Exception as err:
        raise WeightsError(f"cannot load weights file {path}: {first_line(err)}") from None
    if isinstance(state, dict) and isinstance(state.get("selected"), dict) and "model" in state["selected"]:
        state = state["selected"]["model"]  # a checkpoint of selection.epoch best: its selected epoch
    elif isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # an asha-tune checkpoint
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {path} does not hold a state dict")
    return state


def build_model(weights: str = "imagenet", num_classes: int = len(CLASSES)) -> nn.Module:
    """ResNet-18 with `fc` 512 -> num_classes; `weights` is imagenet, none or a state-dict path."""
    model = resnet18(weights=None, num_classes=num_classes)
    if weights == "none":
        return model
    state = imagenet_state_dict() if weights == "imagenet" else file_state_dict(Path(weights))
    head = {k for k in ("fc.weight", "fc.bias") if k in state}
    if head and state["fc.weight"].shape != model.fc.weight.shape:
        state = {k: v for k, v in state.items() if k not in head}  # an ImageNet head: new fc
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches: torch's first line names the model, the next what
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else first_line(err)
        raise WeightsError(f"weights {weights} do not fit resnet18: {detail}") from None
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise WeightsError(
            f"weights {weights} do not fit resnet18: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model


def state_bytes(num_classes: int = len(CLASSES)) -> tuple[int, int]:
    """(bytes of the model's state dict, bytes of its trainable parameters), counted on a model
    built on the meta device (no memory, no weights read). A trial's final weights hold the
    first; its checkpoint holds both (the model, and SGD's momentum: one buffer per parameter)."""
    with torch.device("meta"):
        model = resnet18(weights=None, num_classes=num_classes)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return state, params
