"""The dataset registry's listing of the real PACS (asha_tune/trial/datasets.py): exactly the files,
order, class ids and cache keys of the PACS path it replaced."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from asha_tune.trial import cache
from asha_tune.trial.config import CLASSES
from asha_tune.trial.datasets import PACS_DOMAINS, list_dataset


def listed_as_before(root: Path, domain: str) -> tuple[list[Path], list[int]]:
    """The PACS path's listing, frozen here: `<class>/*` with .jpg, .jpeg or .png, sorted."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(CLASSES):
        found = sorted(
            p for p in (root / domain / name).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
        )
        paths += found
        labels += [label] * len(found)
    return paths, labels


def fingerprint_as_before(root: Path, paths: Sequence[Path]) -> str:
    """The PACS path's fingerprint, frozen here: the `.pt` cache files on users' disks carry it."""
    h = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        h.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def test_real_pacs_lists_exactly_as_the_pacs_path_did(pacs_root):
    files = list_dataset("pacs", pacs_root)
    for domain in PACS_DOMAINS:
        paths, labels = listed_as_before(pacs_root, domain)
        mine = files[domain]
        assert list(mine.paths) == paths
        assert list(mine.labels) == labels
        assert mine.fingerprint() == fingerprint_as_before(pacs_root, paths)  # so cache keys stay the same
        name = f"pacs-{domain}-224px-v1-{fingerprint_as_before(pacs_root, paths)}.pt"
        assert cache.pt_cache_path(Path("c"), "pacs", mine, 224) == Path("c") / name
    assert files.ignored == ()
