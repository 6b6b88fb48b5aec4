from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from asha_tune.trial import cache
from asha_tune.trial.config import CLASSES, Runtime, TrialConfig
from asha_tune.trial.datasets import PACS_DOMAINS, list_dataset
from asha_tune.trial.decoding import DomainImages, decode
from asha_tune.trial.loading import load_domains, stratified_subset
from tests.helpers.data import pacs_domain

PACS_COUNTS = {"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929}


@pytest.mark.parametrize(("domain", "count"), PACS_COUNTS.items())
def test_real_pacs_counts_and_class_ids(pacs_root, domain, count):
    files = pacs_domain(pacs_root, domain)
    assert len(files.paths) == count
    assert sorted(set(files.labels)) == list(range(7))
    for path, label in zip(files.paths[::97], files.labels[::97], strict=True):
        assert path.parent.name == CLASSES[label]
    assert CLASSES.index("dog") == 0
    assert CLASSES.index("person") == 6


def test_stratified_subset_of_real_pacs(pacs_root):
    labels = torch.tensor(pacs_domain(pacs_root, "art_painting").labels)
    picked = stratified_subset(labels, 70)
    assert len(picked) == 70
    assert torch.bincount(labels[picked], minlength=7).min() >= 1


# --- one discovery for PACS: the generic dataset path reads what the PACS path read ------------

# Recorded from the PACS path the trial used before PACS joined the generic dataset path
# (trial/data.py's list_domain + load_domain, the `.pt` cache), Pillow 13.0.0 (libjpeg-turbo 6.2): per
# domain, the image count, the order (relative paths and class ids), the labels, every image
# decoded at 32 px (crop base and test size), and every 199th image at 256 and 224 px (the
# paper's sizes). A digest that changes means a trial now sees other pixels, another order or
# other class ids than every trial before: find out why before recording a new one.
RECORDED = {
    "art_painting": {
        "n": 2048,
        "order": "8837c4606a6dd649",
        "labels": "01adb9f9575e546a",
        "pixels32": "a23cbe239c42b7c2",
        "pixels224": "98f6e51c0a70ce43",
    },
    "cartoon": {
        "n": 2344,
        "order": "df35300e9c034c60",
        "labels": "6eef0b272cb056b0",
        "pixels32": "fcb557f3a4abc03c",
        "pixels224": "87957922cbb4c69d",
    },
    "photo": {
        "n": 1670,
        "order": "cb5c81d7d93eca2d",
        "labels": "e7ca8a770364e6c3",
        "pixels32": "cb5a50c24eb917df",
        "pixels224": "443f57efd44bd901",
    },
    "sketch": {
        "n": 3929,
        "order": "9eb7083fd4dcfba1",
        "labels": "b0009d235f9647b4",
        "pixels32": "a7c142a319320286",
        "pixels224": "c03ba551ed2ebc77",
    },
}


def digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:16]


def summary(root: Path, paths: Sequence[Path], labels: Sequence[int], images: DomainImages) -> dict:
    """What RECORDED holds, for one domain as a path listed and decoded it."""
    keys = [p.relative_to(root).as_posix() for p in paths]
    subset = [a.tobytes() for p in paths[::199] for a in decode(p, (256, 224))]
    return {
        "n": len(keys),
        "order": digest("".join(f"{k}\t{c}\n" for k, c in zip(keys, labels, strict=True)).encode()),
        "labels": digest(images.labels.numpy().tobytes()),
        "pixels32": digest(
            images.train.contiguous().numpy().tobytes(), images.test.contiguous().numpy().tobytes()
        ),
        "pixels224": digest(*subset),
    }


def test_a_pacs_trial_reads_the_pixels_and_class_ids_it_always_read(pacs_root, tmp_path):
    """Through the trial's loader (the `.pt` cache) and through the folder cache of every other
    dataset: the digests recorded from the PACS path before it joined the generic one."""
    trial = TrialConfig.model_validate({"data": {"image_size": 32}})
    loaded = load_domains(trial, Runtime(data_root=pacs_root, cache_dir=tmp_path / "pt", device="cpu"))
    assert set(loaded.domains) == set(PACS_DOMAINS)
    assert loaded.classes == CLASSES
    files = list_dataset("pacs", pacs_root)
    for domain in PACS_DOMAINS:
        whole = loaded.domains[domain].whole
        assert loaded.domains[domain].split.keys == files[domain].keys()
        assert summary(pacs_root, files[domain].paths, files[domain].labels, whole) == RECORDED[domain]
        assert [p.name for p in (tmp_path / "pt").glob(f"pacs-{domain}-32px-v1-*.pt")] == [
            cache.pt_cache_path(Path(), "pacs", files[domain], 32).name
        ]
    folder, _ = cache.load_cached_domain(
        files["art_painting"], 32, tmp_path / "folder", "pacs", progress=False
    )
    assert (
        summary(pacs_root, files["art_painting"].paths, files["art_painting"].labels, folder)
        == RECORDED["art_painting"]
    )
