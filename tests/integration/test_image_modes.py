"""Decoding images as real folders hold them (decoding.decode / decoding.to_rgb): every mode ends as RGB
uint8, by a stated rule, and PACS decodes exactly as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from asha_tune.trial import decoding

# --- real PACS: every file is plain RGB, so the rules leave its pixels as they were -----------


def pacs_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_every_pacs_file_is_rgb_without_alpha_or_orientation(pacs_root):
    odd = []
    for path in pacs_files(pacs_root):
        with Image.open(path) as im:
            if im.mode != "RGB" or "transparency" in im.info or im.getexif().get(0x0112, 1) != 1:
                odd.append(path)
    assert odd == []


def decode_as_before(path: Path, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """decoding.decode before image modes: convert("RGB"), nothing else."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        return [decoding._resize_square(image, s) for s in sizes]


def test_pacs_decodes_bit_for_bit_as_before(pacs_root):
    sample = pacs_files(pacs_root)[::40]  # 250 files over every domain, JPEG and PNG
    assert {p.suffix for p in sample} == {".jpg", ".png"}
    for path in sample:
        for new, old in zip(decoding.decode(path, (73, 64)), decode_as_before(path, (73, 64)), strict=True):
            assert np.array_equal(new, old), path
