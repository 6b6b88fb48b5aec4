"""Decoding images as real folders hold them (decoding.decode / decoding.to_rgb): every mode ends as RGB
uint8, by a stated rule, and PACS decodes exactly as before."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asha_tune.errors import DataError
from asha_tune.trial import decoding


def saved(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def rgb_of(path: Path) -> np.ndarray:
    """The decoded image at its own size (8 px squares here), one pixel per row/column."""
    (decoded,) = decoding.decode(path, (8,))
    assert decoded.dtype == np.uint8
    assert decoded.shape == (8, 8, 3)
    return decoded


def test_grayscale_is_repeated_over_three_channels(tmp_path):
    out = rgb_of(saved(Image.new("L", (8, 8), 77), tmp_path / "grey.png"))
    assert (out == 77).all()
    out = rgb_of(saved(Image.new("1", (8, 8), 1), tmp_path / "bilevel.png"))
    assert (out == 255).all()


def test_alpha_is_composited_over_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200  # red under the alpha
    rgba[:4, :, 3] = 255  # top half opaque, bottom half fully transparent
    out = rgb_of(saved(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"))
    assert (out[:4] == [200, 0, 0]).all()
    assert (out[4:] == 255).all()  # white, not the hidden red (ImageFolder's convert("RGB") shows red)
    half = rgba.copy()
    half[..., 3] = 128
    out = rgb_of(saved(Image.fromarray(half, "RGBA"), tmp_path / "half.png"))
    assert (np.abs(out.astype(int) - [227, 127, 127]) <= 1).all()  # 200·a + 255·(1-a), a = 128/255
    la = np.dstack([np.full((8, 8), 40, np.uint8), np.full((8, 8), 0, np.uint8)])
    assert (rgb_of(saved(Image.fromarray(la, "LA"), tmp_path / "la.png")) == 255).all()


def palette_image() -> Image.Image:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([250, 0, 0, 0, 250, 0] + [0] * 762)
    image.paste(1, (0, 0, 8, 4))  # top half green, bottom half index 0 (red)
    return image


def test_palette_images_with_and_without_transparency(tmp_path):
    plain = rgb_of(saved(palette_image(), tmp_path / "p.png"))
    assert (plain[:4] == [0, 250, 0]).all()
    assert (plain[4:] == [250, 0, 0]).all()
    keyed = rgb_of(saved(palette_image(), tmp_path / "p_key.png", transparency=0))
    assert (keyed[:4] == [0, 250, 0]).all()
    assert (keyed[4:] == 255).all()
    # Per-index alpha (a tRNS chunk of several bytes): index 0 opaque, index 1 transparent.
    alpha = rgb_of(saved(palette_image(), tmp_path / "p_alpha.png", transparency=bytes([255, 0])))
    assert (alpha[:4] == 255).all()
    assert (alpha[4:] == [250, 0, 0]).all()
    gif = rgb_of(saved(palette_image(), tmp_path / "p.gif", transparency=0))  # GIF is read as P too
    assert (gif[4:] == 255).all()


def without_adobe_marker(jpeg: bytes) -> bytes:
    """The JPEG with its APP14 "Adobe" segment removed (a plain, non-inverted CMYK file)."""
    out, i = bytearray(jpeg[:2]), 2
    while i < len(jpeg):
        marker = jpeg[i : i + 2]
        if marker == b"\xff\xda":  # start of scan: the rest is image data
            out += jpeg[i:]
            break
        length = struct.unpack(">H", jpeg[i + 2 : i + 4])[0]
        if marker != b"\xff\xee":
            out += jpeg[i : i + 2 + length]
        i += 2 + length
    return bytes(out)


def test_cmyk_jpegs_adobe_and_plain(tmp_path):
    cmyk = np.zeros((8, 8, 4), np.uint8)
    cmyk[..., 1] = 200  # magenta
    cmyk[..., 3] = 30  # a little black
    expected = np.array(Image.fromarray(cmyk, "CMYK").convert("RGB"))[0, 0].astype(int)  # [225, 45, 225]
    adobe = saved(Image.fromarray(cmyk, "CMYK"), tmp_path / "adobe.jpg", quality=100)
    with Image.open(adobe) as im:
        # Pillow writes Adobe (inverted) CMYK
        assert im.mode == "CMYK"
        assert "adobe" in im.info
    assert (np.abs(rgb_of(adobe).astype(int) - expected) <= 2).all()
    # A plain CMYK file: saving the inverted values through Pillow's inverting writer stores
    # the plain ones; without the Adobe marker a viewer reads them as they are.
    buffer = io.BytesIO()
    Image.fromarray(255 - cmyk, "CMYK").save(buffer, "JPEG", quality=100)
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(without_adobe_marker(buffer.getvalue()))
    with Image.open(plain) as im:
        assert im.mode == "CMYK"
        assert "adobe" not in im.info
    assert (np.abs(rgb_of(plain).astype(int) - expected) <= 2).all()


def png_16bit_grey(values: np.ndarray) -> bytes:
    """A 16-bit greyscale PNG written byte by byte (Pillow would read it as I;16)."""
    h, w = values.shape
    raw = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_16bit_png_keeps_its_high_byte(tmp_path):
    path = tmp_path / "depth.png"
    values = np.full((8, 8), 0x81FF, np.uint16)
    values[:4] = 0x0400
    path.write_bytes(png_16bit_grey(values))
    with Image.open(path) as im:
        assert im.mode == "I;16"
        assert (np.array(im.convert("RGB")) == 255).all()  # what a plain convert("RGB") gives
    out = rgb_of(path)
    assert (out[:4] == 0x04).all()
    assert (out[4:] == 0x81).all()


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((8, 16, 3), np.uint8)  # wide: left half dark, right half bright
    pixels[:, 8:] = 240
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = saved(Image.fromarray(pixels), tmp_path / "phone.jpg", exif=exif, quality=100)
    with Image.open(path) as im:
        upright = decoding.to_rgb(im)
    assert upright.size == (8, 16)  # now tall
    top, bottom = np.array(upright)[:8].mean(), np.array(upright)[8:].mean()
    # the left half went to the top
    assert top < 20
    assert bottom > 220


def test_upper_case_extension_and_odd_names_decode(tmp_path):
    folder = tmp_path / "tea cup" / "Äpfel"
    folder.mkdir(parents=True)
    path = saved(Image.new("RGB", (8, 8), (1, 2, 3)), folder / "Photo 1.JPG", format="JPEG", quality=100)
    assert (np.abs(rgb_of(path).astype(int) - [1, 2, 3]) <= 2).all()


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(noisy_jpeg()[: len(noisy_jpeg()) // 2]),  # truncated JPEG
        lambda p: p.write_text("this is a text file, not a jpeg\n"),
        lambda p: p.write_bytes(b""),
    ],
    ids=["truncated", "text", "empty"],
)
def test_a_file_that_cannot_be_decoded_is_named_in_one_line(tmp_path, damage):
    path = tmp_path / "cls" / "bad file.jpg"
    path.parent.mkdir()
    damage(path)
    with pytest.raises(DataError, match=r"^cannot read image .*/cls/bad file\.jpg: ") as err:
        decoding.decode(path, (8,))
    assert "\n" not in str(err.value)


def noisy_jpeg() -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, "JPEG")
    return buffer.getvalue()


# --- real PACS: every file is plain RGB, so the rules leave its pixels as they were -----------
