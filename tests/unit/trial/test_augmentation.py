"""The paper's train transform on the device (asha_tune/trial/augmentation.py)."""

from __future__ import annotations

import pytest
import torch

from asha_tune.trial import augmentation


def test_crop_boxes_follow_random_resized_crop():
    from torchvision.transforms import RandomResizedCrop

    g = torch.Generator().manual_seed(0)
    boxes = augmentation.random_crop_boxes(20000, 256, g, torch.device("cpu"))
    w, h = boxes[:, 3] - boxes[:, 1], boxes[:, 4] - boxes[:, 2]
    area = w * h / 256**2
    assert area.min() >= 0.69
    assert area.max() <= 1.0
    assert (w / h).min() >= 0.74
    assert (w / h).max() <= 1.34
    assert boxes[:, 1].min() >= 0
    assert boxes[:, 3].max() <= 256
    assert boxes[:, 4].max() <= 256
    # Same distribution as torchvision's own sampler (rejection biases the area below 0.85).
    torch.manual_seed(0)
    image = torch.zeros(3, 256, 256)
    ref = torch.tensor(
        [
            RandomResizedCrop.get_params(image, augmentation.CROP_SCALE, augmentation.CROP_RATIO)
            for _ in range(20000)
        ],
        dtype=torch.float32,
    )
    ref_area = ref[:, 2] * ref[:, 3] / 256**2
    assert area.mean() == pytest.approx(ref_area.mean().item(), abs=0.003)
    assert area.std() == pytest.approx(ref_area.std().item(), abs=0.003)
    assert boxes[:, 1].mean() == pytest.approx(ref[:, 1].mean().item(), abs=0.5)


def test_augment_shapes_and_normalisation():
    g = torch.Generator().manual_seed(0)
    batch = torch.full((4, 3, 73, 73), 128, dtype=torch.uint8)
    out = augmentation.augment(batch, 64, g)
    assert out.shape == (4, 3, 64, 64)
    expected = (128 / 255 - torch.tensor(augmentation.MEAN)) / torch.tensor(augmentation.STD)
    assert torch.allclose(out[:, :, 10, 10], expected.expand(4, 3), atol=1e-4)


def test_augment_flips_about_half():
    g = torch.Generator().manual_seed(0)
    ramp = torch.arange(40, dtype=torch.uint8).repeat(200, 3, 40, 1)  # brightness grows to the right
    out = augmentation.augment(ramp, 32, g)
    flipped = (out[:, 0, 16, 0] > out[:, 0, 16, -1]).float().mean().item()
    assert 0.4 < flipped < 0.6
