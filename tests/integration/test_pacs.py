from __future__ import annotations

import pytest
import torch

from asha_tune.trial import data
from asha_tune.trial.config import CLASSES

PACS_COUNTS = {"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929}


@pytest.mark.parametrize(("domain", "count"), PACS_COUNTS.items())
def test_real_pacs_counts_and_class_ids(pacs_root, domain, count):
    files = data.list_domain(pacs_root, domain)
    assert len(files.paths) == count
    assert sorted(set(files.labels)) == list(range(7))
    for path, label in zip(files.paths[::97], files.labels[::97], strict=True):
        assert path.parent.name == CLASSES[label]
    assert CLASSES.index("dog") == 0 and CLASSES.index("person") == 6


def test_stratified_subset_of_real_pacs(pacs_root):
    labels = torch.tensor(data.list_domain(pacs_root, "art_painting").labels)
    picked = data.stratified_subset(labels, 70)
    assert len(picked) == 70
    assert torch.bincount(labels[picked], minlength=7).min() >= 1
