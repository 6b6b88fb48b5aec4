"""The dataset registry and layout checks (asha_tune/trial/datasets.py) on tiny synthetic trees."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from asha_tune.errors import ConfigError, DataError
from asha_tune.trial import config, datasets
from asha_tune.trial.datasets import DATASETS, dataset_layout, list_dataset


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


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ConfigError) as err:
        dataset_layout("officehome")
    assert str(err.value) == (
        "unknown dataset 'officehome': choose one of pacs, folder, vlcs, office_home, terra_incognita, domain_net"
    )
    assert datasets.DEFAULT_DATASET == "pacs"


def test_pacs_layout_is_config_and_data_py():
    layout = DATASETS["pacs"]
    assert layout.domains == datasets.PACS_DOMAINS
    assert layout.classes == config.CLASSES
    assert layout.classes.index("dog") == 0
    assert layout.classes.index("person") == 6


# DomainBed's folder names (datasets.py + scripts/download.py) and the class counts of its paper.
DOMAINBED = {
    "vlcs": (("Caltech101", "LabelMe", "SUN09", "VOC2007"), 5),
    "office_home": (("Art", "Clipart", "Product", "Real World"), 65),
    "terra_incognita": (("location_100", "location_38", "location_43", "location_46"), 10),
    "domain_net": (("clipart", "infograph", "painting", "quickdraw", "real", "sketch"), 345),
    "pacs": (("art_painting", "cartoon", "photo", "sketch"), 7),
}


@pytest.mark.parametrize("name", DOMAINBED)
def test_domainbed_layouts_list_a_tree_of_their_shape(tmp_path, name):
    domains, count = DOMAINBED[name]
    layout = DATASETS[name]
    assert layout.domains == domains
    assert layout.num_classes == count
    assert list(domains) == sorted(domains)  # DomainBed numbers environments in sorted order
    classes = layout.classes or tuple(f"class_{i:03d}" for i in reversed(range(count)))
    files = list_dataset(name, tree(tmp_path / name, domains, classes))
    assert files.dataset == name
    assert files.num_classes == count
    assert tuple(files.domains) == domains
    assert files.classes == (layout.classes or tuple(sorted(classes)))  # ids: sorted, as ImageFolder
    first = files[domains[-1]]
    assert len(first) == count
    assert first.labels == tuple(range(count))
    assert [p.parent.name for p in first.paths] == list(files.classes)


def test_folder_discovers_odd_names_and_files(tmp_path):
    root = tmp_path / "data"
    classes = ("zebra", "tea cup", "Äpfel", "café")
    for domain in ("studio", "outdoor"):
        for name in classes:
            image(root / domain / name / "a.png", fmt="PNG")
    # Upper-case extensions, sub-folders, unbalanced classes, hidden and other files.
    image(root / "outdoor" / "zebra" / "B.JPG", fmt="JPEG")
    image(root / "outdoor" / "zebra" / "c.JPEG", fmt="JPEG")
    image(root / "outdoor" / "zebra" / "D.PNG", fmt="PNG")
    image(root / "outdoor" / "zebra" / "more" / "e.jpg", fmt="JPEG")
    image(root / "outdoor" / "zebra" / "._a.png", fmt="PNG")  # macOS resource fork
    image(root / "outdoor" / ".thumbnails" / "x.png", fmt="PNG")  # a hidden folder: no class
    image(root / "__MACOSX" / "outdoor" / "zebra" / "a.png", fmt="PNG")  # no domain
    (root / "outdoor" / "zebra" / ".DS_Store").write_bytes(b"\0")
    (root / "outdoor" / "zebra" / "notes.txt").write_text("not an image")
    (root / "README.txt").write_text("a file beside the domains")

    files = list_dataset("folder", root)
    assert tuple(files.domains) == ("outdoor", "studio")  # sorted
    assert files.classes == ("café", "tea cup", "zebra", "Äpfel")  # code-point order: Ä after z
    outdoor = files["outdoor"]
    zebra = [
        p.relative_to(root / "outdoor" / "zebra").as_posix()
        for p, y in zip(outdoor.paths, outdoor.labels, strict=True)
        if y == 2
    ]
    assert zebra == ["B.JPG", "D.PNG", "a.png", "c.JPEG", "more/e.jpg"]  # by relative path, code points
    assert outdoor.labels == (0, 1, 2, 2, 2, 2, 2, 3)
    assert [p.name for p in files.ignored] == ["notes.txt"]
    assert outdoor.keys()[0] == "outdoor/café/a.png"


def test_class_names_match_across_unicode_forms(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    image(tmp_path / "a" / nfc / "1.png", fmt="PNG")
    image(tmp_path / "b" / nfd / "1.png", fmt="PNG")
    files = list_dataset("folder", tmp_path)
    assert files.classes == (nfc,)
    assert files["b"].paths[0].parent.name == nfd  # the file as it is on disk


def test_fingerprint_follows_the_files(tmp_path):
    root = tree(tmp_path / "d", ("a", "b"), ("x", "y"))
    before = list_dataset("folder", root)["a"].fingerprint()
    image(root / "a" / "x" / "new.png", fmt="PNG")
    assert list_dataset("folder", root)["a"].fingerprint() != before
    assert list_dataset("folder", root)["b"].fingerprint() == list_dataset("folder", root)["b"].fingerprint()


def test_a_partial_copy_serves_the_domains_it_has(tmp_path):
    root = tree(tmp_path / "dn", ("real", "sketch"), tuple(f"c{i:03d}" for i in range(345)))
    files = list_dataset("domain_net", root, ["sketch", "real"])
    assert tuple(files.domains) == ("real", "sketch")
    assert files.num_classes == 345
    with pytest.raises(
        DataError, match=r"domain folder .*dn/clipart is missing \(domain_net expects clipart, "
    ):
        list_dataset("domain_net", root)


def office_home(root: Path, classes: int = 65) -> Path:
    return tree(root, ("Art", "Clipart", "Product", "Real World"), tuple(f"k{i}" for i in range(classes)))


LAYOUT_ERRORS = [
    # (dataset, build and damage the tree, domains asked for, the one line expected)
    ("pacs", lambda r: shutil.rmtree(pacs(r) / "sketch"), ["sketch"], r"^domain folder .*/sketch is missing \(pacs expects art_painting, cartoon, photo, sketch; found art_painting, cartoon, photo\)$"),
    ("pacs", lambda r: shutil.rmtree(pacs(r) / "sketch" / "horse"), None, r"^class folder .*/sketch/horse is missing$"),
    ("pacs", lambda r: image(pacs(r) / "photo" / "zebra" / "1.png"), None, r"^unexpected class folder .*/photo/zebra: pacs has dog, elephant, giraffe, guitar, horse, house, person$"),
    ("folder", lambda r: shutil.rmtree(tree(r, ("a", "b", "c"), ("x", "y")) / "b" / "y"), ["a"], r"^class folder .*/b/y is missing \(the other domains of .* have it\)$"),
    ("folder", lambda r: [shutil.rmtree(tree(r, ("a", "b"), ("x", "y", "z")) / "a" / "y"), shutil.rmtree(r / "b" / "z")], None, r"^domains of .* hold different class folders: a lacks y; b lacks z$"),
    ("folder", lambda r: [p.unlink() for p in (tree(r, ("a", "b"), ("x", "y")) / "b" / "x").iterdir()] + [(r / "b" / "x" / "notes.txt").write_text("")], None, r"^class folder .*/b/x has no images \(\.jpg, \.jpeg, \.png, .*\) \(it holds 1 other files, e.g. notes.txt\)$"),
    ("folder", lambda r: (tree(r, ("a",), ("x",)), (r / "b").mkdir()), None, r"^domain folder .*/b has no class folders \(an empty domain\)$"),
    ("folder", lambda r: r.mkdir(), None, r"^data root .* has no domain folders \(expected <root>/<domain>/<class>/<file>\)$"),
    ("folder", lambda r: None, None, r"^data root .* does not exist or is not a folder$"),
    ("folder", lambda r: tree(r, ("a", "b"), ("x",)), ["mars"], r"^unknown domain 'mars': .* has a, b$"),
    ("pacs", lambda r: pacs(r), ["mars"], r"^unknown domain 'mars': pacs has art_painting, cartoon, photo, sketch$"),
    ("office_home", lambda r: office_home(r, 64), None, r"^office_home has 65 classes; the domain folders of .* hold 64$"),
    ("office_home", lambda r: (office_home(r), shutil.move(r / "Real World", r / "Real_World")), None, r"^domain folder .*/Real World is missing \(office_home expects Art, Clipart, Product, Real World; found Art, Clipart, Product, Real_World\)$"),
    ("office_home", lambda r: office_home(r / "office_home"), None, r"^domain folder .*/Art is missing; did you mean --data-root .*/office_home\?$"),
    ("folder", lambda r: (tree(r, ("a",), ("x",)), (r / "a" / "x" / "gone.jpg").symlink_to(r / "nowhere.jpg")), None, r"^cannot read image file .*/a/x/gone.jpg: No such file or directory$"),
]  # fmt: skip


def pacs(root: Path) -> Path:
    return tree(root, datasets.PACS_DOMAINS, config.CLASSES)


@pytest.mark.parametrize(("dataset", "damage", "domains", "message"), LAYOUT_ERRORS)
def test_each_layout_error_is_one_line_that_names_it(tmp_path, dataset, damage, domains, message):
    root = tmp_path / "root"
    damage(root)
    with pytest.raises(DataError, match=message) as err:
        list_dataset(dataset, root, domains)
    assert "\n" not in str(err.value)


def test_two_folders_one_name_in_two_unicode_forms(tmp_path):
    image(tmp_path / "a" / unicodedata.normalize("NFC", "é") / "1.png", fmt="PNG")
    image(tmp_path / "a" / unicodedata.normalize("NFD", "é") / "1.png", fmt="PNG")
    with pytest.raises(DataError, match="have the same name in two Unicode forms"):
        list_dataset("folder", tmp_path)
