"""PACS: file discovery, a decode-once uint8 cache, and augmentation on the trial's device.

JPEG decoding is the slow part of the authors' pipeline, so each domain is decoded once per image
size into a uint8 cache file. A trial copies its domains to its device and augments whole batches
there: RandomResizedCrop (one box per image, `roi_align`), horizontal flip and normalisation.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.ops import roi_align

from asha_tune.errors import DataError
from asha_tune.trial.config import CLASSES, DOMAINS

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
CACHE_FORMAT = 1
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# The paper's train transform: Resize(256) -> RandomResizedCrop(224, scale=(0.7, 1)) -> flip.
RESIZE_RATIO = 256 / 224
CROP_SCALE = (0.7, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
# Image modes (decode): those with an alpha channel, and 16-bit grey.
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
SIXTEEN_BIT_GRAY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
WHITE = (255, 255, 255, 255)


def train_base_size(image_size: int) -> int:
    """The Resize before RandomResizedCrop: 256 for 224 px, scaled alike for other sizes."""
    return round(image_size * RESIZE_RATIO)


@dataclass(frozen=True)
class DomainFiles:
    domain: str
    root: Path
    paths: tuple[Path, ...]
    labels: tuple[int, ...]

    def fingerprint(self) -> str:
        """Changes when any file is added, removed, renamed or rewritten."""
        digest = hashlib.sha256()
        for path in self.paths:
            stat = path.stat()
            digest.update(f"{path.relative_to(self.root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]


def list_domain(root: Path, domain: str) -> DomainFiles:
    """The images of `root/domain/<class>/*`, sorted, with class ids dog 0 ... person 6."""
    if domain not in DOMAINS:
        raise DataError(f"unknown domain {domain!r}: PACS has {', '.join(DOMAINS)}")
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder")
    folder = root / domain
    if not folder.is_dir():
        raise DataError(f"domain folder {folder} is missing (expected <root>/<domain>/<class>/<file>)")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(CLASSES):
        class_dir = folder / name
        if not class_dir.is_dir():
            raise DataError(f"class folder {class_dir} is missing")
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class folder {class_dir} has no .jpg or .png images")
        paths += files
        labels += [label] * len(files)
    return DomainFiles(domain, root, tuple(paths), tuple(labels))


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

    EXIF orientation is applied (ImageFolder ignores it): a phone photo tagged "rotate 90" is
    upright in every viewer, so upright is how whoever labelled it saw it.
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
        raise DataError(f"cannot read image {path}: {err}") from None


@dataclass
class DomainImages:
    """A domain as uint8 NCHW tensors: `train` at the crop base size, `test` at image size."""

    train: Tensor
    test: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Tensor) -> DomainImages:
        """The images at `index`; the whole domain is not copied (it stays memory-mapped, one
        copy in host memory for every trial on the node)."""
        if len(index) == len(self) and torch.equal(index, torch.arange(len(self))):
            return self
        return DomainImages(self.train[index], self.test[index], self.labels[index])

    def to(self, device: torch.device | str, parts: tuple[str, ...] = ("train", "test")) -> DomainImages:
        """Copy the parts a trial needs to its device; the others become empty."""

        def move(name: str) -> Tensor:
            t = getattr(self, name)
            return t.to(device, non_blocking=True) if name in parts else t[:0].to(device)

        return DomainImages(move("train"), move("test"), self.labels.to(device))


def cache_path(cache_dir: Path, files: DomainFiles, image_size: int) -> Path:
    return cache_dir / f"pacs-{files.domain}-{image_size}px-v{CACHE_FORMAT}-{files.fingerprint()}.pt"


def decode_domain(files: DomainFiles, image_size: int) -> DomainImages:
    base = train_base_size(image_size)
    n = len(files.paths)
    train = torch.empty((n, 3, base, base), dtype=torch.uint8)
    test = torch.empty((n, 3, image_size, image_size), dtype=torch.uint8)
    for i, path in enumerate(files.paths):
        big, small = decode(path, (base, image_size))
        train[i] = torch.from_numpy(big).permute(2, 0, 1)
        test[i] = torch.from_numpy(small).permute(2, 0, 1)
    return DomainImages(train, test, torch.tensor(files.labels, dtype=torch.int64))


def load_domain(root: Path, domain: str, image_size: int, cache_dir: Path) -> DomainImages:
    """A whole domain, decoded at most once per image size and source files (file-locked)."""
    files = list_domain(root, domain)
    path = cache_path(cache_dir, files, image_size)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create cache folder {cache_dir}: {err.strerror}") from None
    with FileLock(str(path) + ".lock"):
        if path.exists():
            try:
                stored = torch.load(path, mmap=True, weights_only=True)
                return DomainImages(stored["train"], stored["test"], stored["labels"])
            except Exception as err:  # a damaged cache file is rebuilt, never trusted
                log.warning("rebuilding damaged cache %s (%s)", path, err)
        images = decode_domain(files, image_size)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"train": images.train, "test": images.test, "labels": images.labels}, tmp)
        os.replace(tmp, path)
    return images


def stratified_subset(labels: Tensor, limit: int | None) -> Tensor:
    """A deterministic subset of `limit` indices keeping the class proportions (evenly spaced)."""
    n = len(labels)
    if limit is None or limit >= n:
        return torch.arange(n)
    classes = labels.unique().tolist()
    counts = {c: int((labels == c).sum()) for c in classes}
    # Largest-remainder quotas, at least one image per class.
    exact = {c: max(1.0, limit * counts[c] / n) for c in classes}
    quota = {c: min(counts[c], math.floor(exact[c])) for c in classes}
    for c in sorted(classes, key=lambda c: exact[c] - quota[c], reverse=True):
        if sum(quota.values()) >= limit:
            break
        if quota[c] < counts[c]:
            quota[c] += 1
    picked = []
    for c in classes:
        members = (labels == c).nonzero().flatten()
        step = counts[c] / quota[c]
        picked += [members[int((j + 0.5) * step)] for j in range(quota[c])]
    return torch.stack(picked).sort().values


# --- on-device augmentation ---------------------------------------------------------------


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
