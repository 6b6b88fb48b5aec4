from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from asha_tune.errors import ConfigError, DataError
from asha_tune.trial import data
from tests.helpers.data import mapped_files


def test_decode_cache_is_reused(synthetic_pacs, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = data.load_domain(synthetic_pacs, "cartoon", 32, cache)
    assert first.train.shape == (21, 3, data.train_base_size(32), data.train_base_size(32))
    assert first.test.shape == (21, 3, 32, 32) and first.train.dtype == torch.uint8
    (cached,) = cache.glob("pacs-cartoon-32px-*.pt")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite a cache")

    monkeypatch.setattr(data, "decode", no_decoding)
    again = data.load_domain(synthetic_pacs, "cartoon", 32, cache)
    assert torch.equal(again.train, first.train) and torch.equal(again.labels, first.labels)
    # Another image size is another cache entry (and needs decoding).
    with pytest.raises(AssertionError, match="decoded again"):
        data.load_domain(synthetic_pacs, "cartoon", 48, cache)
    assert cached.exists()


def test_cache_key_follows_source_files(synthetic_pacs, tmp_path):
    cache = tmp_path / "cache"
    data.load_domain(synthetic_pacs, "photo", 32, cache)
    extra = synthetic_pacs / "photo" / "dog" / "extra.jpg"
    shutil.copy(next((synthetic_pacs / "photo" / "dog").glob("*.jpg")), extra)
    grown = data.load_domain(synthetic_pacs, "photo", 32, cache)
    assert len(grown) == 22
    assert len(list(cache.glob("pacs-photo-32px-*.pt"))) == 2


def test_damaged_cache_is_rebuilt(synthetic_pacs, tmp_path):
    cache = tmp_path / "cache"
    good = data.load_domain(synthetic_pacs, "photo", 32, cache)
    (path,) = cache.glob("pacs-photo-*.pt")
    path.write_bytes(b"not a cache")
    rebuilt = data.load_domain(synthetic_pacs, "photo", 32, cache)
    assert torch.equal(rebuilt.test, good.test)


def test_test_images_match_torchvision_resize(synthetic_pacs, tmp_path):
    from PIL import Image
    from torchvision import transforms

    images = data.load_domain(synthetic_pacs, "art_painting", 32, tmp_path / "c")
    path = data.list_domain(synthetic_pacs, "art_painting").paths[0]
    with Image.open(path) as im:
        expected = transforms.PILToTensor()(transforms.Resize(32)(im.convert("RGB")))
        base = transforms.PILToTensor()(transforms.Resize(data.train_base_size(32))(im.convert("RGB")))
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
            r"class folder .*sketch/dog has no .jpg or .png images",
        ),
    ],
)
def test_layout_errors_name_the_path(synthetic_pacs, tmp_path, damage, message):
    damage(synthetic_pacs)
    with pytest.raises(DataError, match=message):
        data.load_domain(synthetic_pacs, "sketch", 32, tmp_path / "cache")


def test_unreadable_image_names_the_file(synthetic_pacs, tmp_path):
    bad = synthetic_pacs / "cartoon" / "giraffe" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*cartoon/giraffe/broken.jpg"):
        data.load_domain(synthetic_pacs, "cartoon", 32, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.pt"))  # nothing half-written is cached


def test_unknown_domain(synthetic_pacs, tmp_path):
    with pytest.raises(DataError, match="unknown domain 'mars'"):
        data.load_domain(synthetic_pacs, "mars", 32, tmp_path)


def test_stratified_subset_is_deterministic_and_keeps_proportions():
    labels = torch.tensor([0] * 100 + [1] * 50 + [2] * 10)
    picked = data.stratified_subset(labels, 32)
    assert len(picked) == 32 and len(set(picked.tolist())) == 32
    counts = torch.bincount(labels[picked]).tolist()
    assert counts == [20, 10, 2]
    assert torch.equal(picked, data.stratified_subset(labels, 32))
    assert torch.equal(data.stratified_subset(labels, None), torch.arange(160))


def test_crop_boxes_follow_random_resized_crop():
    from torchvision.transforms import RandomResizedCrop

    g = torch.Generator().manual_seed(0)
    boxes = data.random_crop_boxes(20000, 256, g, torch.device("cpu"))
    w, h = boxes[:, 3] - boxes[:, 1], boxes[:, 4] - boxes[:, 2]
    area = w * h / 256**2
    assert area.min() >= 0.69 and area.max() <= 1.0
    assert (w / h).min() >= 0.74 and (w / h).max() <= 1.34
    assert boxes[:, 1].min() >= 0 and boxes[:, 3].max() <= 256 and boxes[:, 4].max() <= 256
    # Same distribution as torchvision's own sampler (rejection biases the area below 0.85).
    torch.manual_seed(0)
    image = torch.zeros(3, 256, 256)
    ref = torch.tensor(
        [RandomResizedCrop.get_params(image, data.CROP_SCALE, data.CROP_RATIO) for _ in range(20000)],
        dtype=torch.float32,
    )
    ref_area = ref[:, 2] * ref[:, 3] / 256**2
    assert area.mean() == pytest.approx(ref_area.mean().item(), abs=0.003)
    assert area.std() == pytest.approx(ref_area.std().item(), abs=0.003)
    assert boxes[:, 1].mean() == pytest.approx(ref[:, 1].mean().item(), abs=0.5)


def test_augment_shapes_and_normalisation():
    g = torch.Generator().manual_seed(0)
    batch = torch.full((4, 3, 73, 73), 128, dtype=torch.uint8)
    out = data.augment(batch, 64, g)
    assert out.shape == (4, 3, 64, 64)
    expected = (128 / 255 - torch.tensor(data.MEAN)) / torch.tensor(data.STD)
    assert torch.allclose(out[:, :, 10, 10], expected.expand(4, 3), atol=1e-4)


def test_augment_flips_about_half():
    g = torch.Generator().manual_seed(0)
    ramp = torch.arange(40, dtype=torch.uint8).repeat(200, 3, 40, 1)  # brightness grows to the right
    out = data.augment(ramp, 32, g)
    flipped = (out[:, 0, 16, 0] > out[:, 0, 16, -1]).float().mean().item()
    assert 0.4 < flipped < 0.6


def test_domain_images_move_only_needed_parts(synthetic_pacs, tmp_path):
    images = data.load_domain(synthetic_pacs, "cartoon", 32, tmp_path / "c")
    moved = images.to("cpu", ("test",))
    assert len(moved.train) == 0 and len(moved.test) == len(images)


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
    assert len(subset.source) == 7 and str(source_file) not in mapped_files(subset.source.train.data_ptr())
