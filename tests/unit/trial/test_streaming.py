"""Batches streamed from the memory-mapped cache (asha_tune/trial/streaming.py) against the
in-memory path: the same uint8 batches in the same order for the same seed."""

from __future__ import annotations

import threading

import pytest
import torch

from asha_tune.trial import cache, selection, streaming
from asha_tune.trial.config import SelectionConfig
from asha_tune.trial.datasets import list_dataset
from asha_tune.trial.loading import stratified_subset
from asha_tune.trial.streaming import BatchStream, choose_path
from tests.helpers.data import make_folder_dataset, mapped_files


@pytest.fixture
def cached(tmp_path):
    """A cached domain of 90 images (3 classes of 30) and its listing."""
    files = list_dataset("folder", make_folder_dataset(tmp_path / "data", per_class=30))["d"]
    images, built = cache.load_cached_domain(files, 32, tmp_path / "cache", "folder", workers=0)
    return files, images, built.entry


def trial_rows(files, images, limit: int) -> torch.Tensor:
    """The source rows a trial trains on, as training.load_trial_data picks them: the
    stratified limit, then the source_val split's kept positions."""
    keep = stratified_subset(images.labels, limit)
    keys = files.keys()
    domain = selection.Domain("d", tuple(keys[i] for i in keep.tolist()), tuple(images.labels[keep].tolist()))
    plan = selection.plan_selection(SelectionConfig(protocol="source_val"), domain, [domain])
    return keep[torch.tensor(plan.train, dtype=torch.long)]


def epoch_orders(n: int, seed: int, epochs: int) -> list[torch.Tensor]:
    """The epoch permutations of a trial (training.Generators: the order stream, on the CPU)."""
    g = torch.Generator().manual_seed(seed * 1000 + 1)
    return [torch.randperm(n, generator=g) for _ in range(epochs)]


def test_streamed_batches_equal_the_in_memory_ones(cached):
    files, images, entry = cached
    rows = trial_rows(files, images, limit=60)
    assert 0 < len(rows) < 60
    in_memory = images.train[rows].to("cpu")  # what load_trial_data copies to the device
    stream = BatchStream(images.train, rows, "cpu")
    assert len(stream) == len(in_memory)
    for order in epoch_orders(len(rows), seed=3, epochs=3):
        expected = [in_memory[order[b : b + 8]] for b in range(0, len(order), 8)]
        streamed = list(stream.batches(order, 8))
        assert len(streamed) == len(expected) == -(-len(rows) // 8)  # the short last batch too
        for got, want in zip(streamed, expected, strict=True):
            assert got.dtype == torch.uint8
            assert torch.equal(got, want)
    # The stream reads the cache's memory map; it never copies the domain.
    assert str(entry.train_file) in mapped_files(stream.images.data_ptr())


def test_a_whole_domain_and_test_images_stream_too(cached):
    _, images, _ = cached
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    for part in (images.train, images.test):
        streamed = torch.cat(list(BatchStream(part).batches(order, 16)))
        assert torch.equal(streamed, part[order])
    sequential = list(BatchStream(images.test).iterate(torch.arange(len(images)).split(32)))
    assert torch.equal(torch.cat(sequential), images.test)  # evaluation's slices


def test_cpu_batches_are_plain_tensors(cached):
    _, images, _ = cached
    stream = BatchStream(images.train, device="cpu")
    assert stream.pin is False
    batch = next(iter(stream.batches(torch.arange(10), 4)))
    assert batch.device.type == "cpu"
    assert not batch.is_pinned()


def test_leaving_early_stops_the_gather_thread(cached):
    _, images, _ = cached
    before = threading.active_count()
    batches = BatchStream(images.train, depth=2).batches(torch.arange(len(images)), 4)
    next(batches)
    assert threading.active_count() == before + 1
    batches.close()  # what a `break` out of the loop does
    assert threading.active_count() == before


def test_a_gather_error_is_raised_in_the_consumer(cached):
    _, images, _ = cached
    stream = BatchStream(images.train, torch.tensor([0, 1, 10_000]))
    with pytest.raises(IndexError):
        list(stream.batches(torch.arange(3), 2))


def test_choose_path():
    fits = choose_path(2 * 2**30, 2 * 2**30)
    assert fits.kind == "memory"
    assert str(fits) == "images in memory on the device: 2.00 GiB fit the 2.00 GiB budget"
    over = choose_path(2 * 2**30 + 1, 2 * 2**30)
    assert str(over) == "images streamed from the disk cache: 2.00 GiB exceed the 2.00 GiB budget"
    assert over.kind == "stream"
    assert (
        str(choose_path(3 * 2**20, 2**30 - 1))
        == "images in memory on the device: 3.0 MiB fit the 1024.0 MiB budget"
    )
    assert streaming.images_bytes(10, 32) == 10 * 3 * 32 * 32


def test_cpu_budget_is_a_share_of_available_memory():
    budget = streaming.device_budget(torch.device("cpu"), fraction=0.5, sharing=4)
    available = streaming._host_available()
    assert 0 < budget <= available / 8 + 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_streamed_batches_equal_the_in_memory_ones(cached):
    files, images, _ = cached
    device = torch.device("cuda")
    rows = trial_rows(files, images, limit=60)
    in_memory = images.train[rows].to(device)
    stream = BatchStream(images.train, rows, device)
    assert stream.pin
    for order in epoch_orders(len(rows), seed=1, epochs=2):
        device_order = order.to(device)
        for b, got in zip(range(0, len(order), 8), stream.batches(order, 8), strict=True):
            assert got.device.type == "cuda"
            # A step on the compute stream, as a trial's: it must see the copied batch.
            assert torch.equal(
                got.float().mul(2).byte(), in_memory[device_order[b : b + 8]].float().mul(2).byte()
            )


def test_several_domains_stream_as_their_concatenation_without_being_copied_into_one():
    from asha_tune.trial.streaming import Parts

    generator = torch.Generator().manual_seed(0)
    parts = [torch.randint(0, 256, (n, 3, 5, 5), dtype=torch.uint8, generator=generator) for n in (7, 1, 12)]
    joined = torch.cat(parts)
    rows = torch.randperm(20, generator=generator)[:15]
    view = Parts(parts)
    assert len(view) == 20
    assert view.shape == (20, 3, 5, 5)
    out = torch.empty((15, 3, 5, 5), dtype=torch.uint8)
    assert torch.equal(view.index_select(rows, out), joined[rows])
    order = torch.randperm(15, generator=generator)
    streamed = list(BatchStream(view, rows).batches(order, 4))
    assert torch.equal(torch.cat(streamed), joined[rows][order])
