"""Issue 24, datasets: a tree a hostile or careless copy makes (a class folder named in Latin-1, a
named pipe called pipe.jpg, a link back up to the domain, a newline in a file name, .gif and
.heic files, one image per class) is refused in one line or skipped and said, never a traceback
or a hang."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from asha_tune.errors import DataError
from asha_tune.trial.config import SelectionConfig
from asha_tune.trial.datasets import list_dataset, shown
from asha_tune.trial.decoding import decode
from asha_tune.trial.selection import PROTOCOLS, Domain


def tree(root: Path, per_class: int = 2) -> Path:
    for domain in ("a", "b"):
        for name in ("x", "y"):
            (root / domain / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (4, 4), (10, 20, 30)).save(root / domain / name / f"{i}.png")
    return root


def test_a_named_pipe_called_jpg_is_skipped_not_decoded(tmp_path):
    root = tree(tmp_path / "root")
    os.mkfifo(root / "a" / "x" / "pipe.jpg")  # opening it to decode would wait forever
    files = list_dataset("folder", root)
    assert all(p.name != "pipe.jpg" for p in files["a"].paths)
    assert [p.name for p in files.ignored] == ["pipe.jpg"]
    assert "1 not a file" in (files.skipped_text() or "")


def test_images_of_formats_not_read_are_skipped_and_counted(tmp_path):
    root = tree(tmp_path / "root")
    Image.new("RGB", (4, 4)).save(root / "a" / "x" / "anim.gif")
    Image.new("RGB", (4, 4)).save(root / "b" / "y" / "other.gif")
    (root / "b" / "x" / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic")
    files = list_dataset("folder", root)
    text = files.skipped_text()
    assert text is not None
    assert "\n" not in text
    assert "skipped 3 file(s)" in text
    assert "2 .gif, 1 .heic" in text
    assert "it reads .jpg" in text
    assert list_dataset("folder", tree(tmp_path / "clean")).skipped_text() is None


def test_a_class_folder_not_named_in_utf8_is_refused_in_one_line(tmp_path):
    root = tree(tmp_path / "root")
    for domain in ("a", "b"):
        latin1 = os.fsencode(root / domain) + b"/caf\xe9"
        os.mkdir(latin1)
        Image.new("RGB", (4, 4)).save(os.fsdecode(latin1 + b"/0.png"))
    with pytest.raises(DataError) as err:
        list_dataset("folder", root)
    text = str(err.value)
    text.encode("utf-8")  # printable as it is: no lone surrogate
    assert "/caf\\xe9 is not UTF-8: rename it" in text
    assert "\n" not in text


def test_a_link_back_up_to_the_domain_is_refused(tmp_path):
    root = tree(tmp_path / "root")
    (root / "a" / "x" / "loop").symlink_to(root / "a")  # would read y's images as x's
    with pytest.raises(DataError, match=r"/a/x/loop links to \S+/a, a folder that holds the class folder"):
        list_dataset("folder", root)


def test_a_newline_in_a_name_keeps_its_error_on_one_line(tmp_path):
    bad = tmp_path / "two\nlines.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError) as err:
        decode(bad, (4,))
    assert "\n" not in str(err.value)
    assert "two\\nlines.jpg" in str(err.value)
    assert shown(tmp_path / "plain.jpg") == str(tmp_path / "plain.jpg")


@pytest.mark.parametrize("protocol", ["source_val", "target_val"])
def test_a_split_of_one_image_per_class_is_refused_in_one_line(protocol):
    one_each = Domain("photo", ("photo/dog/1.jpg", "photo/cat/1.jpg"), (0, 1))
    selection = SelectionConfig(protocol=protocol)
    with pytest.raises(DataError, match=rf"^selection {protocol} holds out no image of photo: .* one image"):
        PROTOCOLS[protocol](selection, one_each, [one_each])
