"""Image files to pixels: each image decoded once, resized as the authors' PIL `Resize` does, to
uint8 arrays; a domain's images as uint8 tensors (`DomainImages`).

JPEG decoding is the slow part of the authors' pipeline, so a trial never decodes: each domain is
decoded once per image size into a cache (cache.py), at two sizes: the crop base size its
training images are augmented from on the device (augmentation.py), and the image size it is
evaluated at. Every dataset, PACS included, decodes through `decode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError
from torch import Tensor

from asha_tune.errors import DataError
from asha_tune.trial.datasets import DomainFiles, shown

# The paper's train transform begins Resize(256) for 224 px; the crop base size scales alike.
RESIZE_RATIO = 256 / 224
# Image modes (decode): those with an alpha channel, and 16-bit grey.
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
SIXTEEN_BIT_GRAY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
WHITE = (255, 255, 255, 255)


def train_base_size(image_size: int) -> int:
    """The Resize before RandomResizedCrop: 256 for 224 px, scaled alike for other sizes."""
    return round(image_size * RESIZE_RATIO)


def _resize_square(image: Image.Image, size: int) -> np.ndarray:
    """torchvision's Resize(size) on a PIL image (bilinear, antialiased), centre-cropped square."""
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    if (new_w, new_h) != (size, size):  # PACS is square (227 px); other data is centre-cropped
        left, top = (new_w - size) // 2, (new_h - size) // 2
        resized = resized.crop((left, top, left + size, top + size))
    return np.array(resized)  # a writable copy, so torch can take it


def _over_white(image: Image.Image) -> Image.Image:
    """Transparent pixels as a viewer shows them on a white page (their hidden colour is noise)."""
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")


def _sixteen_bit_gray(image: Image.Image) -> Image.Image:
    """A 16-bit grey image to 8 bits by its high byte, as Pillow reads 16-bit RGB PNGs
    (`convert("RGB")` would clip every value above 255 to white)."""
    values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
    return Image.fromarray(values.astype(np.uint8), "L").convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded image as 8-bit RGB, upright as its EXIF orientation says.

    RGB (all of PACS) passes unchanged. Grey (1, L) is repeated over three channels; palette
    images take their colours. Alpha (RGBA, LA, PA, a palette or grey image with transparency)
    is composited over white: ImageFolder's `convert("RGB")` drops it instead and shows the
    arbitrary colour under transparent pixels. CMYK uses Pillow's conversion (no ICC profile);
    Pillow reads every CMYK JPEG as Adobe-inverted, so one without Adobe's APP14 marker (plain
    CMYK, as libjpeg-based viewers read it) is inverted back first. 16-bit grey (I;16, I) keeps
    its high byte (its transparency, if any, is ignored).

    EXIF orientation is applied (ImageFolder and the authors' loader ignore it: a departure
    listed in docs/differences.md): a phone photo tagged "rotate 90" is upright in every viewer,
    so upright is how whoever labelled it saw it.
    """
    plain_cmyk = image.mode == "CMYK" and image.format == "JPEG" and "adobe" not in image.info
    image = ImageOps.exif_transpose(image)  # a copy when upright (it drops `format`)
    if plain_cmyk:
        image = ImageChops.invert(image)
    if image.mode in SIXTEEN_BIT_GRAY:  # checked first: convert("RGBA") would clip it too
        return _sixteen_bit_gray(image)
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        return _over_white(image)
    return image.convert("RGB")


def decode(path: Path, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """One image decoded and resized to each of `sizes` (HWC uint8)."""
    try:
        with Image.open(path) as image:
            image.load()  # a truncated file fails here, named below
            rgb = to_rgb(image)
            return [_resize_square(rgb, s) for s in sizes]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {shown(path)}: {err}") from None


@dataclass
class DomainImages:
    """A domain as uint8 NCHW tensors: `train` at the crop base size, `test` at image size."""

    train: Tensor
    test: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str, parts: tuple[str, ...] = ("train", "test")) -> DomainImages:
        """Copy the parts a trial needs to its device; the others become empty."""

        def move(name: str) -> Tensor:
            t = getattr(self, name)
            return t.to(device, non_blocking=True) if name in parts else t[:0].to(device)

        return DomainImages(move("train"), move("test"), self.labels.to(device))


def decode_domain(files: DomainFiles, image_size: int) -> DomainImages:
    """Every image of a domain decoded in this process, in order (the `.pt` cache's build)."""
    base = train_base_size(image_size)
    n = len(files.paths)
    train = torch.empty((n, 3, base, base), dtype=torch.uint8)
    test = torch.empty((n, 3, image_size, image_size), dtype=torch.uint8)
    for i, path in enumerate(files.paths):
        big, small = decode(path, (base, image_size))
        train[i] = torch.from_numpy(big).permute(2, 0, 1)
        test[i] = torch.from_numpy(small).permute(2, 0, 1)
    return DomainImages(train, test, torch.tensor(files.labels, dtype=torch.int64))
