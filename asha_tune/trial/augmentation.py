"""The paper's train transform on the trial's device: whole uint8 batches at the crop base size
(decoding.train_base_size) cropped, flipped and normalised at once.

Their transform is Resize(256) -> RandomResizedCrop(224, scale=(0.7, 1)) -> RandomHorizontalFlip
-> ToTensor -> Normalize; the Resize happened when the images were decoded. Here each image
gets its own crop box (torchvision's sampler, vectorised), resized by `roi_align`, then a flip
and the ImageNet normalisation. Evaluation batches are only normalised.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor
from torchvision.ops import roi_align

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.7, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


@functools.lru_cache(maxsize=8)
def _normalizer(device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-device constants, made once: a host-to-GPU copy per batch would stall the stream."""
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return 1 / (255 * std), mean / std


def normalize(batch: Tensor) -> Tensor:
    """uint8 NCHW -> float, ImageNet-normalised (ToTensor + Normalize)."""
    scale, shift = _normalizer(batch.device)
    return batch.float() * scale - shift


def random_crop_boxes(n: int, size: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """torchvision RandomResizedCrop.get_params for n square images, vectorised (10 tries each)."""
    tries = 10
    u = torch.rand((4, n, tries), generator=generator, device=device)
    area = size * size * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[0])
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[1])
    w = torch.sqrt(area * ratio).round()
    h = torch.sqrt(area / ratio).round()
    ok = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = ok.int().argmax(dim=1, keepdim=True)
    found = ok.gather(1, first).squeeze(1)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    top = torch.floor(u[2].gather(1, first).squeeze(1) * (size - h + 1))
    left = torch.floor(u[3].gather(1, first).squeeze(1) * (size - w + 1))
    # No valid try: torchvision falls back to a centre crop, the whole image for a square.
    # (Python scalars, not new device tensors: nothing here waits for the GPU.)
    w, h = torch.where(found, w, float(size)), torch.where(found, h, float(size))
    top, left = torch.where(found, top, 0.0), torch.where(found, left, 0.0)
    index = torch.arange(n, device=device, dtype=torch.float32)
    return torch.stack([index, left, top, left + w, top + h], dim=1)


def augment(batch: Tensor, image_size: int, generator: torch.Generator) -> Tensor:
    """The paper's train transform on a uint8 batch at the crop base size, on its device."""
    n, _, base, _ = batch.shape
    boxes = random_crop_boxes(n, base, generator, batch.device)
    x = roi_align(
        batch.float(), boxes, output_size=image_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
    )
    flip = torch.rand(n, generator=generator, device=batch.device) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    scale, shift = _normalizer(batch.device)
    return x * scale - shift
