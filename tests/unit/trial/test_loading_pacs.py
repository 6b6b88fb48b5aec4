"""PACS read as a trial reads it: listed like every dataset (datasets.list_dataset), decoded
once per image size into its `.pt` cache, limited to a class-stratified subset."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from asha_tune.errors import ConfigError, DataError
from asha_tune.sweep.preflight import data_problems
from asha_tune.trial import decoding
from asha_tune.trial.datasets import list_dataset
from asha_tune.trial.loading import load_domains, stratified_subset
from tests.helpers.data import load_pacs_domain, mapped_files, pacs_domain, tiny_config


def test_decode_cache_is_reused(synthetic_pacs, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_pacs_domain(synthetic_pacs, "cartoon", 32, cache)
    assert first.train.shape == (21, 3, decoding.train_base_size(32), decoding.train_base_size(32))
    assert first.test.shape == (21, 3, 32, 32)
    assert first.train.dtype == torch.uint8
    (cached,) = cache.glob("pacs-cartoon-32px-*.pt")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite a cache")

    monkeypatch.setattr(decoding, "decode", no_decoding)
    again = load_pacs_domain(synthetic_pacs, "cartoon", 32, cache)
    assert torch.equal(again.train, first.train)
    assert torch.equal(again.labels, first.labels)
    # Another image size is another cache entry (and needs decoding).
    with pytest.raises(AssertionError, match="decoded again"):
        load_pacs_domain(synthetic_pacs, "cartoon", 48, cache)
    assert cached.exists()


def test_cache_key_follows_source_files(synthetic_pacs, tmp_path):
    cache = tmp_path / "cache"
    load_pacs_domain(synthetic_pacs, "photo", 32, cache)
    extra = synthetic_pacs / "photo" / "dog" / "extra.jpg"
    shutil.copy(next((synthetic_pacs / "photo" / "dog").glob("*.jpg")), extra)
    grown = load_pacs_domain(synthetic_pacs, "photo", 32, cache)
    assert len(grown) == 22
    assert len(list(cache.glob("pacs-photo-32px-*.pt"))) == 2


def test_damaged_cache_is_rebuilt(synthetic_pacs, tmp_path):
    cache = tmp_path / "cache"
    good = load_pacs_domain(synthetic_pacs, "photo", 32, cache)
    (path,) = cache.glob("pacs-photo-*.pt")
    path.write_bytes(b"not a cache")
    rebuilt = load_pacs_domain(synthetic_pacs, "photo", 32, cache)
    assert torch.equal(rebuilt.test, good.test)


def test_test_images_match_torchvision_resize(synthetic_pacs, tmp_path):
    from PIL import Image
    from torchvision import transforms

    images = load_pacs_domain(synthetic_pacs, "art_painting", 32, tmp_path / "c")
    path = pacs_domain(synthetic_pacs, "art_painting").paths[0]
    with Image.open(path) as im:
        expected = transforms.PILToTensor()(transforms.Resize(32)(im.convert("RGB")))
        base = transforms.PILToTensor()(transforms.Resize(decoding.train_base_size(32))(im.convert("RGB")))
    assert torch.equal(images.test[0], expected)
    assert torch.equal(images.train[0], base)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: shutil.rmtree(root), "data root .* does not exist"),
        (lambda root: shutil.rmtree(root / "sketch"), r"domain folder .*sketch is missing"),
        (lambda root: shutil.rmtree(root / "sketch" / "horse"), r"class folder .*sketch/horse is missing"),
        (
            lambda root: [p.unlink() for p in (root / "sketch" / "dog").iterdir()],
            r"class folder .*sketch/dog has no images",
        ),
    ],
)
def test_layout_errors_name_the_path(synthetic_pacs, tmp_path, damage, message):
    damage(synthetic_pacs)
    with pytest.raises(DataError, match=message):
        load_pacs_domain(synthetic_pacs, "sketch", 32, tmp_path / "cache")


def test_unreadable_image_names_the_file(synthetic_pacs, tmp_path):
    bad = synthetic_pacs / "cartoon" / "giraffe" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*cartoon/giraffe/broken.jpg"):
        load_pacs_domain(synthetic_pacs, "cartoon", 32, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.pt"))  # nothing half-written is cached


def test_unknown_domain(synthetic_pacs, tmp_path):
    with pytest.raises(DataError, match="unknown domain 'mars'"):
        load_pacs_domain(synthetic_pacs, "mars", 32, tmp_path)


def test_stratified_subset_is_deterministic_and_keeps_proportions():
    labels = torch.tensor([0] * 100 + [1] * 50 + [2] * 10)
    picked = stratified_subset(labels, 32)
    assert len(picked) == 32
    assert len(set(picked.tolist())) == 32
    counts = torch.bincount(labels[picked]).tolist()
    assert counts == [20, 10, 2]
    assert torch.equal(picked, stratified_subset(labels, 32))
    assert torch.equal(stratified_subset(labels, None), torch.arange(160))


def test_domain_images_move_only_needed_parts(synthetic_pacs, tmp_path):
    images = load_pacs_domain(synthetic_pacs, "cartoon", 32, tmp_path / "c")
    moved = images.to("cpu", ("test",))
    assert len(moved.train) == 0
    assert len(moved.test) == len(images)


def test_root_is_never_assumed(monkeypatch):
    from asha_tune.trial.config import Runtime

    monkeypatch.delenv("ASHA_TUNE_DATA_ROOT", raising=False)
    with pytest.raises(ConfigError, match="no data root: pass --data-root or set ASHA_TUNE_DATA_ROOT"):
        Runtime().resolved_data_root()
    monkeypatch.setenv("ASHA_TUNE_DATA_ROOT", "/somewhere")
    assert Runtime().resolved_data_root() == Path("/somewhere")


def test_a_whole_domain_stays_memory_mapped_from_the_cache(synthetic_pacs, tmp_path):
    """Trials on one node then share one copy in host memory (page cache), not one each."""
    from asha_tune.trial.config import Runtime
    from asha_tune.trial.training import load_trial_data
    from tests.helpers.data import tiny_config

    runtime = Runtime(data_root=synthetic_pacs, cache_dir=tmp_path / "cache", device="cpu")
    load_trial_data(tiny_config(), runtime, torch.device("cpu"), need_target_train=False)  # decodes
    loaded = load_trial_data(tiny_config(), runtime, torch.device("cpu"), need_target_train=False)
    (source_file,) = (tmp_path / "cache").glob("pacs-art_painting-*.pt")
    (target_file,) = (tmp_path / "cache").glob("pacs-cartoon-*.pt")
    assert str(source_file) in mapped_files(loaded.source.train.data_ptr())
    assert str(target_file) in mapped_files(loaded.targets["cartoon"].test.data_ptr())
    # A subset is a (small) copy of its own.
    subset = load_trial_data(tiny_config(data={"limit_per_domain": 7}), runtime, torch.device("cpu"), False)
    assert len(subset.source) == 7
    assert str(source_file) not in mapped_files(subset.source.train.data_ptr())


def test_a_pacs_copy_with_bmp_files_and_nested_folders_loads_what_the_preflight_checked(
    synthetic_pacs, tiny_runtime
):
    """The preflight and the trial list PACS alike: every ImageFolder extension, sub-folders."""
    dog = synthetic_pacs / "cartoon" / "dog"
    (dog / "scans").mkdir()
    with Image.open(dog / "dog_0.jpg") as im:
        im.rotate(90).save(dog / "extra.BMP")
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(dog / "scans" / "nested.png")
    config = tiny_config()
    assert data_problems(config.data, synthetic_pacs, {"art_painting", "cartoon"}, False) == []
    listed = list_dataset("pacs", synthetic_pacs, ["cartoon"])["cartoon"]
    assert len(listed) == 23
    assert listed.labels[:5] == (0, 0, 0, 0, 0)
    loaded = load_domains(config, tiny_runtime).domains["cartoon"]
    assert loaded.split.keys == listed.keys()
    assert loaded.split.labels == listed.labels
    assert len(loaded.whole) == 23
    for key in ("cartoon/dog/extra.BMP", "cartoon/dog/scans/nested.png"):
        i = listed.keys().index(key)
        (expected,) = decoding.decode(synthetic_pacs / key, (32,))
        assert torch.equal(loaded.whole.test[i], torch.from_numpy(expected).permute(2, 0, 1))
        assert loaded.whole.labels[i] == 0
