"""Datasets in the DomainBed layout: what a data root must hold, checked before anything starts.

Every dataset is `<root>/<domain>/<class>/<image>`, the layout of DomainBed and torchvision's
ImageFolder. A `Layout` says which domains and classes a root must hold; `list_dataset` checks
the root against it (each problem one line naming the folder, as a `DataError`) and lists the
images in a fixed order, so every process on every machine numbers the same image the same way.
PACS is one layout among them (as DomainBed's PACS is its image-folder dataset with the domains
named): the sweep's preflight and the trial list every dataset with `list_dataset`, so a trial
loads exactly the images the preflight counted.

Order (deterministic, independent of the file system's listing order):
- domains: the layout's order (DomainBed's: folder names sorted); for `folder`, sorted;
- classes: the layout's order, else sorted; a class id is its position. Names are compared and
  sorted by their Unicode NFC form, in code-point order (Python's `str` order, as DomainBed's
  ImageFolder sorts them), so a class folder copied from macOS (NFD) still matches its twin;
- images: within a class, sorted by their path relative to the class folder (`str` of the POSIX
  path, code-point order); sub-folders are searched, as ImageFolder does.
Names starting with "." (hidden files, `.DS_Store`, `.ipynb_checkpoints`) and `__MACOSX` folders
are skipped; other non-image files are skipped and counted (`DatasetFiles.ignored`). Extensions
match in any case (`.JPG`). Unbalanced classes are fine; an empty one is an error.

Where the data sets come from (tests never download any). DomainBed's download script
(facebookresearch/DomainBed, `domainbed/scripts/download.py`) puts each in a folder of its data
directory; that folder (e.g. `<data_dir>/office_home`) is the data root here:
- pacs: Li et al., ICCV 2017 (http://www.eecs.qmul.ac.uk/~dl307/project_iccv2017); DomainBed's
  `download_pacs` (folder `PACS`). 9,991 images.
- vlcs: Fang et al., ICCV 2013 (Caltech101, LabelMe, SUN09, VOC2007); DomainBed's `download_vlcs`
  (folder `VLCS`; class names as in its `domainbed/misc/vlcs_files.txt`). 10,729 images.
- office_home: Venkateswara et al., CVPR 2017 (http://hemanthdv.org/OfficeHome-Dataset/);
  DomainBed's `download_office_home` renames `OfficeHomeDataset_10072016` to `office_home`. Note
  the space in the domain `Real World`. 15,588 images.
- terra_incognita: Beery et al., ECCV 2018 (Caltech Camera Traps, lila.science); DomainBed's
  `download_terra_incognita` builds locations 38, 46, 100, 43 and its 10 categories (folder
  `terra_incognita`). 24,788 images.
- domain_net: Peng et al., ICCV 2019 (http://ai.bu.edu/M3SDA/); DomainBed's `download_domain_net`
  (folder `domain_net`, with the duplicates listed in `domain_net_duplicates.txt` removed).
  586,575 images.
Image counts are those DomainBed's paper reports; they are not checked (a copy may differ).
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asha_tune.errors import ConfigError, DataError

# PACS as the authors number it (config.py holds the same tuples; tests check they agree).
PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
# torchvision's ImageFolder extensions; matched case-insensitively.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SKIPPED_FOLDERS = frozenset({"__MACOSX"})  # macOS zip metadata: never a domain or a class
DEFAULT_DATASET = "pacs"


@dataclass(frozen=True)
class Layout:
    """What a data root of one dataset holds. Empty `domains` or `classes`: discovered."""

    name: str
    domains: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    num_classes: int | None = None  # checked when the classes are discovered
    domainbed_folder: str = ""  # its folder in DomainBed's data directory (for a hint)
    origin: str = ""

    @property
    def fixed_domains(self) -> bool:
        return bool(self.domains)


DATASETS: dict[str, Layout] = {
    "pacs": Layout("pacs", PACS_DOMAINS, PACS_CLASSES, 7, "PACS", "Li et al. 2017; DomainBed download_pacs"),
    "folder": Layout("folder", origin="any <root>/<domain>/<class>/<image> tree"),
    "vlcs": Layout(
        "vlcs",
        ("Caltech101", "LabelMe", "SUN09", "VOC2007"),
        ("bird", "car", "chair", "dog", "person"),
        5,
        "VLCS",
        "Fang et al. 2013; DomainBed download_vlcs",
    ),
    "office_home": Layout(
        "office_home",
        ("Art", "Clipart", "Product", "Real World"),
        (),
        65,
        "office_home",
        "Venkateswara et al. 2017; DomainBed download_office_home",
    ),
    "terra_incognita": Layout(
        "terra_incognita",
        ("location_100", "location_38", "location_43", "location_46"),
        ("bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit", "raccoon", "squirrel"),
        10,
        "terra_incognita",
        "Beery et al. 2018; DomainBed download_terra_incognita",
    ),
    "domain_net": Layout(
        "domain_net",
        ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
        (),
        345,
        "domain_net",
        "Peng et al. 2019; DomainBed download_domain_net",
    ),
}


def dataset_layout(name: str) -> Layout:
    """The registry entry, or a ConfigError that lists the valid names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}") from None


@dataclass(frozen=True)
class DomainFiles:
    """The images of one domain in load order, with their class ids."""

    domain: str
    root: Path  # the data root: keys and the fingerprint are relative to it
    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    stats: tuple[tuple[int, int], ...] = field(default=(), repr=False, compare=False)  # size, mtime_ns

    def __len__(self) -> int:
        return len(self.paths)

    def keys(self) -> tuple[str, ...]:
        """Paths relative to the root (selection.Domain.keys), e.g. `cartoon/dog/pic_001.jpg`."""
        return tuple(p.relative_to(self.root).as_posix() for p in self.paths)

    def fingerprint(self) -> str:
        """Changes when a file is added, removed, renamed or rewritten. The formula is part of
        every cache key (PACS's `.pt` files were named with it): changing it orphans them."""
        stats = self.stats or tuple(_size_mtime(p) for p in self.paths)
        digest = hashlib.sha256()
        for path, (size, mtime) in zip(self.paths, stats, strict=True):
            line = f"{path.relative_to(self.root)}\0{size}\0{mtime}\n"
            digest.update(line.encode("utf-8", "surrogateescape"))
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DatasetFiles:
    """A checked data root: its classes (id = position) and the images of the domains listed."""

    dataset: str
    root: Path
    classes: tuple[str, ...]
    domains: Mapping[str, DomainFiles] = field(hash=False)
    ignored: tuple[Path, ...] = ()  # non-image files inside class folders, skipped

    def skipped_text(self) -> str | None:
        """One line saying how many files of the class folders were skipped and why (a `.gif`,
        a `.heic`, a named pipe), or None where none was."""
        if not self.ignored:
            return None
        kinds: dict[str, int] = {}
        for path in self.ignored:
            suffix = os.path.splitext(path.name)[1].lower() or "no extension"
            kind = suffix if path.is_file() else "not a file"
            kinds[kind] = kinds.get(kind, 0) + 1
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items(), key=lambda k: (-k[1], k[0])))
        return (
            f"data root {shown(self.root)}: skipped {len(self.ignored)} file(s) of its class folders that "
            f"are not images asha-tune reads ({counts}; it reads {_names(IMAGE_SUFFIXES)}), e.g. "
            f"{shown(self.ignored[0])}: convert them to include them"
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitem__(self, domain: str) -> DomainFiles:
        return self.domains[domain]


# --- the checks ------------------------------------------------------------------------------


def _size_mtime(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def nfc(name: str) -> str:
    """A name in Unicode NFC: how domain and class names are compared and sorted."""
    return unicodedata.normalize("NFC", name)


_nfc = nfc


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in SKIPPED_FOLDERS


def shown(path: Path | str) -> str:
    """A path as a message shows it on one line: a name with a control character (a newline) or
    bytes that are not UTF-8 is escaped (`\\n`, `\\xe9`), so that its line neither splits nor fails."""
    raw = os.fsencode(path).decode("utf-8", "backslashreplace")
    return raw.encode("unicode_escape").decode("ascii") if not raw.isprintable() else raw


def _check_utf8(path: Path | str) -> None:
    """A folder or image whose name is not UTF-8 cannot be logged, listed or hashed alike on every
    machine: refused, named with its bytes escaped."""
    try:
        os.fsdecode(os.path.basename(path)).encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"the name of {shown(path)} is not UTF-8: rename it (e.g. with convmv)") from None


def _subfolders(folder: Path) -> dict[str, Path]:
    """Visible sub-folders by NFC name; two names that normalise alike are an error."""
    found: dict[str, Path] = {}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        raise DataError(f"cannot list folder {folder}: {err.strerror}") from None
    for entry in entries:
        if _visible(entry.name) and entry.is_dir():
            _check_utf8(entry.path)
            key = _nfc(entry.name)
            if key in found:
                raise DataError(
                    f"folders {found[key]} and {entry.path} have the same name in two Unicode forms"
                )
            found[key] = Path(entry.path)
    return found


def _names(names: Iterable[str]) -> str:
    return ", ".join(names)


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder")


def _missing_domain(layout: Layout, root: Path, domain: str, present: Iterable[str]) -> DataError:
    """A missing domain folder, with what the root holds or where the dataset might be."""
    nested = root / layout.domainbed_folder if layout.domainbed_folder else None
    if nested and nested.is_dir() and (nested / domain).is_dir():
        hint = f"; did you mean --data-root {nested}?"
    else:
        found = sorted(present)
        hint = f" ({layout.name} expects {_names(layout.domains)}; found {_names(found) or 'no folders'})"
    return DataError(f"domain folder {root / domain} is missing{hint}")


def _domain_folders(layout: Layout, root: Path, wanted: Sequence[str] | None) -> dict[str, Path]:
    """The domain folders to check, in the layout's order."""
    present = _subfolders(root)
    if layout.fixed_domains:
        names = list(layout.domains)
    else:
        names = sorted(present)
        if not names:
            raise DataError(
                f"data root {root} has no domain folders (expected <root>/<domain>/<class>/<file>)"
            )
    for domain in wanted or ():
        if domain not in names:
            where = layout.name if layout.fixed_domains else str(root)
            raise DataError(f"unknown domain {domain!r}: {where} has {_names(names)}")
    chosen = [d for d in names if d in wanted] if wanted is not None else names
    folders = {}
    for domain in chosen:
        if _nfc(domain) not in present:
            raise _missing_domain(layout, root, domain, present)
        folders[domain] = present[_nfc(domain)]
    return folders


def _class_folders(domain_folder: Path) -> dict[str, Path]:
    classes = _subfolders(domain_folder)
    if not classes:
        raise DataError(f"domain folder {domain_folder} has no class folders (an empty domain)")
    return classes


def _check_declared(layout: Layout, folder: Path, classes: Mapping[str, Path]) -> None:
    """A layout that names its classes: each must be there, and nothing else."""
    for name in layout.classes:
        if _nfc(name) not in classes:
            raise DataError(f"class folder {folder / name} is missing")
    extra = sorted(set(classes) - {_nfc(c) for c in layout.classes})
    if extra:
        raise DataError(
            f"unexpected class folder {classes[extra[0]]}: {layout.name} has {_names(layout.classes)}"
        )


def _check_same_classes(root: Path, per_domain: Mapping[str, Mapping[str, Path]]) -> None:
    """Discovered classes: every domain must hold the same class folders."""
    union = set().union(*per_domain.values())
    lacking = {d: sorted(union - set(c)) for d, c in per_domain.items() if union - set(c)}
    if not lacking:
        return
    if len(lacking) == 1 and len(next(iter(lacking.values()))) == 1:
        ((domain, (name,)),) = lacking.items()
        raise DataError(
            f"class folder {root / domain / name} is missing (the other domains of {root} have it)"
        )
    parts = "; ".join(f"{d} lacks {_names(names)}" for d, names in lacking.items())
    raise DataError(f"domains of {root} hold different class folders: {parts}")


def _class_names(layout: Layout, root: Path, domains: Mapping[str, Path]) -> tuple[str, ...]:
    """The class names in id order, after checking every domain's class folders."""
    per_domain = {d: _class_folders(folder) for d, folder in domains.items()}
    if layout.classes:
        for d, classes in per_domain.items():
            _check_declared(layout, domains[d], classes)
        return tuple(_nfc(c) for c in layout.classes)
    _check_same_classes(root, per_domain)
    names = tuple(sorted(next(iter(per_domain.values()))))
    if layout.num_classes is not None and len(names) != layout.num_classes:
        raise DataError(
            f"{layout.name} has {layout.num_classes} classes; the domain folders of {root} hold {len(names)}"
        )
    return names


def _images(class_folder: Path, ignored: list[Path]) -> list[Path]:
    """The images under one class folder (sub-folders too), sorted by relative path."""
    found: list[tuple[str, Path]] = []
    seen: set[tuple[int, int]] = set()  # (device, inode) of folders: symlink loops end here

    above = {class_folder.resolve(), *class_folder.resolve().parents}

    def walk(folder: Path, prefix: str) -> None:
        stat = folder.stat()
        if (stat.st_dev, stat.st_ino) in seen:
            return
        seen.add((stat.st_dev, stat.st_ino))
        with os.scandir(folder) as entries:
            for entry in entries:
                if not _visible(entry.name):
                    continue
                _check_utf8(entry.path)
                if entry.is_dir():
                    if entry.is_symlink() and Path(entry.path).resolve() in above:
                        raise DataError(
                            f"{shown(entry.path)} links to {shown(Path(entry.path).resolve())}, a folder "
                            f"that holds the class folder {shown(class_folder)}: its images would be read "
                            "again under this class's label; remove the link"
                        )
                    walk(Path(entry.path), f"{prefix}{entry.name}/")
                elif not entry.is_file() and os.path.exists(entry.path):  # a pipe, a socket: no image
                    ignored.append(Path(entry.path))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    found.append((prefix + entry.name, Path(entry.path)))
                else:
                    ignored.append(Path(entry.path))

    try:
        walk(class_folder, "")
    except OSError as err:
        raise DataError(f"cannot list folder {shown(err.filename or class_folder)}: {err.strerror}") from None
    return [path for _, path in sorted(found)]


def _no_images(class_folder: Path, ignored: Sequence[Path]) -> DataError:
    others = [p for p in ignored if class_folder in p.parents]
    held = f" (it holds {len(others)} other files, e.g. {others[0].name})" if others else ""
    return DataError(f"class folder {class_folder} has no images ({_names(IMAGE_SUFFIXES)}){held}")


def _stat(path: Path) -> tuple[int, int]:
    try:
        return _size_mtime(path)
    except OSError as err:
        raise DataError(f"cannot read image file {shown(path)}: {err.strerror}") from None


def _domain_files(
    root: Path, domain: str, folder: Path, classes: tuple[str, ...], ignored: list[Path]
) -> DomainFiles:
    class_folders = _subfolders(folder)
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_folder = class_folders[name]
        images = _images(class_folder, ignored)
        if not images:
            raise _no_images(class_folder, ignored)
        paths += images
        labels += [label] * len(images)
    stats = tuple(_stat(p) for p in paths)
    return DomainFiles(domain, root, tuple(paths), tuple(labels), stats)


def list_dataset(dataset: str | Layout, root: Path, domains: Sequence[str] | None = None) -> DatasetFiles:
    """Check `root` against the dataset's layout and list the images of `domains` (default all).

    A fixed-domain layout checks only the domains asked for, so a partial copy (two of DomainNet's
    six domains) serves trials on those. For `folder`, every domain's class folders are compared
    whatever is asked for, so class ids never depend on which domains a trial reads.
    """
    layout = dataset if isinstance(dataset, Layout) else dataset_layout(dataset)
    root = Path(root)
    _check_root(root)
    folders = _domain_folders(layout, root, domains)
    compared = folders if layout.fixed_domains else _domain_folders(layout, root, None)
    classes = _class_names(layout, root, compared)
    ignored: list[Path] = []
    files = {d: _domain_files(root, d, folder, classes, ignored) for d, folder in folders.items()}
    return DatasetFiles(layout.name, root, classes, files, tuple(ignored))
