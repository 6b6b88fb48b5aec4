"""The dataset registry and layout checks (asha_tune/trial/datasets.py) on tiny synthetic trees."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from asha_tune.trial import config


def image(path: Path, colour: tuple[int, int, int] = (10, 20, 30), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path, format=fmt)
    return path


def tree(root: Path, domains: tuple[str, ...], classes: tuple[str, ...], per_class: int = 1) -> Path:
    """Every domain holding every class, `per_class` copies of one tiny PNG each."""
    png = image(root / ".template.png", fmt="PNG").read_bytes()
    for domain in domains:
        for name in classes:
            (root / domain / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (root / domain / name / f"{i}.png").write_bytes(png)
    return root


def pacs(root: Path) -> Path:
    return tree(root, config.DOMAINS, config.CLASSES)
