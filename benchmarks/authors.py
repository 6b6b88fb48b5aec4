"""The authors' trial loop, re-implemented faithfully for timing only (from their published code).

What makes it slow is kept as they had it: PIL decoding and torchvision's transforms in a
DataLoader with 5 workers, and for every forward a Bernoulli mask drawn on the CPU with
`numpy.random.choice`, copied to the device, at each shaped conv (also at evaluation, where their
hooks stayed on). Training uses AMP fp16 with a grad scaler on CUDA, as theirs did.

Only a few steps are timed; `extrapolate` scales them to a full trial, and every figure built
that way is labelled extrapolated.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from asha_tune.trial.augmentation import MEAN, STD
from asha_tune.trial.datasets import list_dataset
from asha_tune.trial.decoding import train_base_size
from asha_tune.trial.model import build_model
from asha_tune.trial.shaping import numbered_convs


class PacsFolder(Dataset):
    def __init__(self, root: Path, domain: str, transform: transforms.Compose, length: int | None = None):
        files = list_dataset("pacs", root, [domain])[domain]
        self.items = list(zip(files.paths, files.labels, strict=True))
        self.length = length or len(self.items)  # longer than the folder: files are reused
        self.transform = transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        path, label = self.items[i % len(self.items)]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), label


def paper_transforms(image_size: int) -> tuple[transforms.Compose, transforms.Compose]:
    normalize = transforms.Normalize(MEAN, STD)
    train = transforms.Compose(
        [
            transforms.Resize(train_base_size(image_size)),
            transforms.RandomResizedCrop(image_size, scale=(0.7, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    test = transforms.Compose([transforms.Resize(image_size), transforms.ToTensor(), normalize])
    return train, test


def numpy_mask_hook(p0: float):
    """Their random-map hook: a numpy mask per forward, on the CPU, then (A > 0) * M."""

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        mask = np.random.choice([0, 1], size=output.shape, p=[p0, 1 - p0])
        mask = torch.from_numpy(mask).to(output.device, output.dtype)
        return (output > 0).to(output.dtype) * mask

    return hook


@dataclass
class AuthorsTiming:
    seconds_per_train_step: float
    seconds_per_eval_batch: float
    train_steps_timed: int
    eval_batches_timed: int

    def extrapolate(self, epochs: int, source_images: int, target_images: int, batch: int) -> float:
        """Seconds for a full trial: every epoch trains on the source and evaluates the target."""
        steps = math.ceil(source_images / batch)
        evals = math.ceil(target_images / batch)
        return epochs * (steps * self.seconds_per_train_step + evals * self.seconds_per_eval_batch)


def time_authors(
    root: Path,
    source: str,
    target: str,
    image_size: int,
    batch: int,
    convs: list[int],
    p0: float,
    device: torch.device,
    train_steps: int = 10,
    eval_batches: int = 5,
    warmup: int = 2,
    workers: int = 5,
    source_length: int | None = None,
) -> AuthorsTiming:
    train_tf, test_tf = paper_transforms(image_size)
    train_loader = DataLoader(
        PacsFolder(root, source, train_tf, source_length),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    test_loader = DataLoader(
        PacsFolder(root, target, test_tf),
        batch_size=batch,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    torch.manual_seed(0)
    model = build_model("none").to(device)
    modules = numbered_convs(model)
    for n in convs:
        modules[n].register_forward_hook(numpy_mask_hook(p0))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    loss_fn = nn.CrossEntropyLoss()

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    model.train()
    batches = iter(train_loader)
    for step in range(warmup + train_steps):
        if step == warmup:
            start = sync()
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    train_time = (sync() - start) / train_steps

    model.eval()
    batches = iter(test_loader)
    with torch.no_grad():
        for step in range(1 + eval_batches):
            if step == 1:
                start = sync()
            x, _ = next(batches)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                model(x.to(device, non_blocking=True)).argmax(1).cpu()
    eval_time = (sync() - start) / eval_batches
    return AuthorsTiming(train_time, eval_time, train_steps, eval_batches)
