"""Data for tests: the real PACS (integration tests), tiny synthetic PACS trees (unit tests) and
configurations small enough to train in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from asha_tune.trial.config import CLASSES, TrialConfig
from asha_tune.trial.datasets import PACS_DOMAINS, DomainFiles, list_dataset

REPO = Path(__file__).resolve().parents[2]


def real_pacs_root() -> Path:
    """$ASHA_TUNE_DATA_ROOT, else the PACS copy beside the checkout (as CI has it)."""
    return Path(os.environ.get("ASHA_TUNE_DATA_ROOT", REPO.parent / "shared" / "PACS"))


def pacs_domain(root: Path, domain: str) -> DomainFiles:
    """One PACS domain as the preflight and the trial list it."""
    return list_dataset("pacs", root, [domain])[domain]


def load_pacs_domain(root: Path, domain: str, image_size: int, cache_dir: Path):  # -> DomainImages
    """One whole PACS domain as a trial reads it (its `.pt` decode cache, built if missing)."""
    from asha_tune.trial.loading import load_domain  # torch: only where a test loads images

    return load_domain(list_dataset("pacs", root, [domain]), domain, image_size, cache_dir)


def make_synthetic_pacs(
    root: Path, per_class: int = 3, size: int = 40, domains: tuple[str, ...] = PACS_DOMAINS
) -> Path:
    """A PACS-shaped tree of tiny images whose colour depends on the class (learnable)."""
    rng = np.random.default_rng(0)
    for d, domain in enumerate(domains):
        for c, name in enumerate(CLASSES):
            folder = root / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = np.array([30 * c, 255 - 30 * c, 60 * d], dtype=np.float64)
                pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
                suffix = ".png" if domain == "sketch" else ".jpg"
                Image.fromarray(pixels).save(folder / f"{name}_{i}{suffix}")
    return root


def tiny_config(**sections: dict) -> TrialConfig:
    """A trial small enough for unit tests: 32 px, random init, a few images."""
    base: dict[str, dict] = {
        "data": {"image_size": 32, "targets": ["cartoon"]},
        "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 16, "weights": "none"},
    }
    for key, values in sections.items():
        base[key] = {**base.get(key, {}), **values}
    return TrialConfig.model_validate(base)


def make_folder_dataset(root: Path, per_class: int = 20, classes: int = 3) -> Path:
    """One domain `d` of noisy JPEGs and PNGs (distinct pixels, so a misplaced image shows)."""
    rng = np.random.default_rng(1)
    for c in range(classes):
        folder = root / "d" / f"class {c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}{'.png' if i % 5 == 0 else '.JPG'}")
    return root


def mapped_files(address: int) -> set[str]:
    """The files mapped into this process at `address` (/proc/self/maps)."""
    found = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        begin, end = (int(v, 16) for v in fields[0].split("-"))
        if begin <= address < end and len(fields) > 5:
            found.add(fields[5])
    return found


# Odd but real shapes: a domain name with a space and one with an accent, class names with a
# space and non-ASCII letters, unbalanced classes and domains.
ODD_DOMAINS = ("Real World", "clipart", "réel", "sketch")
ODD_CLASSES = ("bird", "chien à poils", "grand chat")


def _odd_file(pixels: np.ndarray, folder: Path, i: int) -> None:
    """One image in one of the modes real folders hold, by i: RGB with an upper-case .JPG,
    grayscale, RGBA and palette PNGs, a CMYK JPEG."""
    image = Image.fromarray(pixels)
    kind = i % 5
    if kind == 0:
        image.save(folder / f"{i:03d}.JPG", quality=95)
    elif kind == 1:
        image.convert("L").convert("RGB").convert("L").save(folder / f"{i:03d}.png")
    elif kind == 2:
        rgba = image.convert("RGBA")
        rgba.putalpha(255)
        rgba.save(folder / f"{i:03d}.png")
    elif kind == 3:
        image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(folder / f"{i:03d}.png")
    else:
        image.convert("CMYK").save(folder / f"{i:03d}.jpeg", quality=95)


def make_domains(
    root: Path,
    domains: tuple[str, ...] = ODD_DOMAINS,
    classes: tuple[str, ...] = ODD_CLASSES,
    per_class: tuple[int, ...] = (6, 4, 5),
    size: int = 40,
) -> Path:
    """A `folder` dataset of several domains: learnable (the colour follows the class; each domain
    shifts it), in every odd shape above; domain d holds d more images of its first class."""
    rng = np.random.default_rng(2)
    for d, domain in enumerate(domains):
        for c, name in enumerate(classes):
            folder = root / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class[c % len(per_class)] + (d if c == 0 else 0)):
                base = np.array([40 + 80 * c, 220 - 80 * c, 40 + 50 * d], dtype=np.float64)
                pixels = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                _odd_file(pixels, folder, i)
    return root


def folder_config(**sections: dict) -> TrialConfig:
    """A tiny trial on make_domains' dataset (32 px, random init, two epochs)."""
    base: dict[str, dict] = {
        "data": {"dataset": "folder", "source": ["Real World", "clipart"], "image_size": 32},
        "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 16, "weights": "none"},
    }
    for key, values in sections.items():
        base[key] = {**base.get(key, {}), **values} if isinstance(values, dict) else values
    return TrialConfig.model_validate(base)
