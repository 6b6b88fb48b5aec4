"""Trials on any dataset and on several source domains: the head, the class order, balanced
batches, source_val per source domain, lodo's fold models, and the streamed data path inside a
real trial (synthetic `folder` datasets in odd shapes: tests/helpers/data.make_domains). They
train whole trials, so they sit in the integration tier, out of the fast one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asha_tune.errors import AshaTuneError
from asha_tune.trial import selection
from asha_tune.trial.config import Runtime
from asha_tune.trial.decoding import train_base_size
from asha_tune.trial.loading import StreamedImages, epoch_order, load_trial_data
from asha_tune.trial.training import Trial, load_checkpoint, run_trial, save_checkpoint
from tests.helpers.data import ODD_CLASSES, folder_config, make_domains, tiny_config

SOURCES = ["Real World", "clipart", "réel"]


@pytest.fixture
def odd_runtime(tmp_path: Path) -> Runtime:
    return Runtime(data_root=make_domains(tmp_path / "odd"), cache_dir=tmp_path / "cache", device="cpu")


def without(history: list[dict], *keys: str) -> list[dict]:
    return [{k: v for k, v in m.items() if not k.startswith("time_") and k not in keys} for m in history]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class KilledError(Exception):
    pass


# --- batches ---------------------------------------------------------------------------------


def test_a_balanced_batch_holds_each_source_equally_and_draws_each_without_repeats():
    sizes = (10, 3, 7)
    order, lengths = epoch_order("balanced", sizes, 6, torch.Generator().manual_seed(0))
    # the steps and images of union
    assert lengths == [6, 6, 6, 2]
    assert len(order) == sum(sizes)
    domain = torch.bucketize(order, torch.tensor([10, 13]), right=True)
    begin, totals = 0, torch.zeros(3, dtype=torch.long)
    for b in lengths:
        counts = torch.bincount(domain[begin : begin + b], minlength=3)
        assert set(counts.tolist()) <= {b // 3, b // 3 + 1}
        assert counts.sum() == b
        totals += counts
        begin += b
    assert totals.max() - totals.min() <= 1  # the extra image goes round the sources
    for s, (start, n) in enumerate(((0, 10), (10, 3), (13, 7))):
        drawn = order[domain == s].tolist()
        assert all(start <= p < start + n for p in drawn)
        for first in range(0, len(drawn), n):  # a fresh permutation whenever a source runs out
            chunk = drawn[first : first + n]
            assert len(set(chunk)) == len(chunk)


def test_one_source_balanced_is_exactly_union_and_union_is_one_permutation():
    a, la = epoch_order("balanced", (19,), 6, torch.Generator().manual_seed(3))
    b, lb = epoch_order("union", (19,), 6, torch.Generator().manual_seed(3))
    # a last batch of one joins the one before
    assert torch.equal(a, b)
    assert la == lb == [6, 6, 7]
    union, _ = epoch_order("union", (10, 3, 7), 6, torch.Generator().manual_seed(0))
    assert sorted(union.tolist()) == list(range(20))


def test_a_balanced_trial_sees_its_small_source_as_often_as_its_large_one(tmp_path):
    root = make_domains(tmp_path / "odd", per_class=(12, 2, 2))  # Real World 16, clipart 17
    shutil.rmtree(root / "clipart")
    (root / "small" / "bird").mkdir(parents=True)
    for c, name in enumerate(ODD_CLASSES):
        folder = root / "small" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.fromarray(np.full((40, 40, 3), 60 * c + i, np.uint8)).save(folder / f"{i}.png")
    runtime = Runtime(data_root=root, cache_dir=tmp_path / "cache", device="cpu")
    config = folder_config(data={"source": ["Real World", "small"], "source_sampling": "balanced"})
    trial = Trial(config, runtime)
    assert trial.data.source_sizes == (16, 6)
    order, lengths = epoch_order("balanced", trial.data.source_sizes, 8, trial.gens.order)
    drawn = torch.bucketize(order, torch.tensor([16]), right=True).bincount(minlength=2).tolist()
    assert drawn == [11, 11]  # 22 images an epoch, half from each source


# --- datasets: the head, the class order, odd shapes -----------------------------------------


def test_a_folder_trial_reads_every_odd_shape_and_records_its_class_order(odd_runtime):
    trial = Trial(folder_config(), odd_runtime)
    assert trial.data.classes == ("bird", "chien à poils", "grand chat")
    assert trial.model.fc.out_features == 3  # the head takes the dataset's class count
    result = run_trial(folder_config(), odd_runtime)
    final = result.final
    assert json.loads(final[selection.CLASSES_KEY]) == list(trial.data.classes)
    assert final[selection.DATA_PATH_KEY] == "memory"
    # The targets default to the other domains of the data root, each reported with its noise.
    assert {"acc_réel", "acc_sketch", "n_réel", "n_sketch", "chance_réel"} <= final.keys()
    assert "acc_Real World" not in final
    assert final["n_target"] == 17 + 18
    assert final["chance_sketch"] == pytest.approx(100 * 9 / 18)  # unbalanced: bird is the largest
    state = trial.state()
    assert state["classes"] == list(trial.data.classes)


def test_a_checkpoint_of_other_classes_is_not_resumed(odd_runtime, tmp_path):
    states: list[dict] = []
    config = folder_config(train={"epochs": 1})
    run_trial(config, odd_runtime, report=lambda m, s: states.append(s))
    for domain in ("Real World", "clipart", "réel", "sketch"):
        folder = odd_runtime.data_root / domain / "zebra"
        folder.mkdir()
        Image.new("RGB", (40, 40), (1, 2, 3)).save(folder / "0.png")
    with pytest.raises(
        AshaTuneError, match="checkpoint was trained on 3 classes bird, chien à poils, grand chat"
    ):
        run_trial(config, odd_runtime, resume=states[-1])


def test_a_checkpoint_from_before_datasets_resumes_bit_for_bit(tiny_runtime, tmp_path):
    """A checkpoint written before data.dataset, data.source_sampling and the class record."""
    config = tiny_config(train={"epochs": 3})
    full: list[dict] = []
    run_trial(config, tiny_runtime, report=lambda m, s: full.append(s))
    path = tmp_path / "old.pt"

    def killed(metrics, state):
        save_checkpoint(state, path)
        if metrics["epoch"] == 1:
            raise KilledError

    with pytest.raises(KilledError):
        run_trial(config, tiny_runtime, report=killed)
    state = load_checkpoint(path)
    del state["config"]["data"]["dataset"], state["config"]["data"]["source_sampling"], state["classes"]
    resumed: list[dict] = []
    run_trial(config, tiny_runtime, report=lambda m, s: resumed.append(s), resume=state)
    assert same_weights(full[-1]["model"], resumed[-1]["model"])


# --- several sources: source_val, lodo -------------------------------------------------------


def test_source_val_holds_out_the_fraction_of_each_source_domain(odd_runtime):
    config = folder_config(
        data={"source": SOURCES[:2]}, selection={"protocol": "source_val", "val_fraction": 0.25}
    )
    data = load_trial_data(config, odd_runtime, torch.device("cpu"), need_target_train=False)
    assert list(data.val) == SOURCES[:2]  # one selection set per source domain
    whole = {d: load_trial_data(folder_config(data={"source": d}), odd_runtime, torch.device("cpu"), False)
             for d in SOURCES[:2]}  # fmt: skip
    for domain, held in data.val.items():
        labels = held.labels.tolist()
        everything = whole[domain].source.labels.tolist()
        for c in set(everything):
            assert abs(labels.count(c) - 0.25 * everything.count(c)) <= 1
            assert labels.count(c) >= 1
    assert len(data.source) == 15 + 16 - len(data.val["Real World"]) - len(data.val["clipart"])
    trained = {bytes(x.numpy()) for x in data.source.train}
    for domain in data.val:
        positions = [p for p in range(len(whole[domain].source)) if p not in _kept(data, domain)]
        for p in positions:
            assert bytes(whole[domain].source.train[p].numpy()) not in trained
    assert data.constants["n_val"] == len(data.val["Real World"]) + len(data.val["clipart"])


def _kept(data, domain: str) -> set[int]:
    offset = 0 if domain == "Real World" else 15
    size = 15 if domain == "Real World" else 16
    return {p - offset for p in data.source_positions.tolist() if offset <= p < offset + size}


def test_val_acc_of_several_sources_is_the_mean_of_their_held_out_accuracies(odd_runtime):
    config = folder_config(data={"source": SOURCES[:2]}, selection="source_val", train={"epochs": 1})
    trial = Trial(config, odd_runtime)
    metrics = trial.run_epoch()
    accs = [trial.evaluate(trial.data.val[d]) for d in SOURCES[:2]]  # baseline: evaluation is fixed
    assert metrics["val_acc"] == sum(accs) / 2  # DomainBed's mean of env_out_acc
    assert metrics["target_acc"] == (metrics["acc_réel"] + metrics["acc_sketch"]) / 2


@pytest.mark.parametrize(
    "shaping",
    [{"mode": "random", "convs": [1], "p0": 0.5}, {"mode": "target", "convs": [4]}],
    ids=["random", "target"],
)
def test_lodo_selects_on_fold_models_each_a_trial_without_its_left_out_source(odd_runtime, shaping):
    """DomainBed's leave-one-domain-out: val_acc is the mean over the sources v of the accuracy on
    v of a model trained on the other sources; the reported model trains on every source."""
    common = {"data": {"source": SOURCES, "targets": ["sketch"]}, "shaping": shaping}
    lodo = run_trial(folder_config(**common, selection="lodo"), odd_runtime).history
    everything = run_trial(folder_config(**common, selection="oracle"), odd_runtime).history
    folds = {
        v: run_trial(
            folder_config(data={"source": [s for s in SOURCES if s != v], "targets": [v]}, shaping=shaping),
            odd_runtime,
        ).history
        for v in SOURCES
    }
    for epoch, metrics in enumerate(lodo):
        assert metrics["val_acc"] == sum(folds[v][epoch][f"acc_{v}"] for v in SOURCES) / 3
        assert metrics["acc_sketch"] == everything[epoch]["acc_sketch"]  # the reported model
        assert metrics["train_loss"] == everything[epoch]["train_loss"]
    assert lodo[0]["n_val"] == 15 + 16 + 17  # every image of each left-out source


def test_a_killed_lodo_trial_resumes_bit_for_bit(odd_runtime, tmp_path):
    config = folder_config(data={"source": SOURCES[:2]}, selection="lodo", train={"epochs": 3})
    finals: list[dict] = []
    full = run_trial(config, odd_runtime, report=lambda m, s: finals.append(s))
    path = tmp_path / "lodo.pt"

    def killed(metrics, state):
        save_checkpoint(state, path)
        if metrics["epoch"] == 1:
            raise KilledError

    with pytest.raises(KilledError):
        run_trial(config, odd_runtime, report=killed)
    state = load_checkpoint(path)
    assert set(state["folds"]) == set(SOURCES[:2])
    resumed_states: list[dict] = []
    resumed = run_trial(config, odd_runtime, report=lambda m, s: resumed_states.append(s), resume=state)
    assert without(resumed.history) == without(full.history)
    for v in SOURCES[:2]:
        assert same_weights(finals[-1]["folds"][v]["model"], resumed_states[-1]["folds"][v]["model"])
    assert same_weights(finals[-1]["model"], resumed_states[-1]["model"])


# --- the data path ---------------------------------------------------------------------------


def test_the_budget_chooses_the_path_by_what_would_go_to_the_device(odd_runtime):
    config = folder_config()  # Real World 15 + clipart 16 trained on; réel 17 + sketch 18 tested
    base = train_base_size(32)
    needed = 31 * 3 * base * base + 35 * 3 * 32 * 32
    at = load_trial_data(
        config, odd_runtime.model_copy(update={"data_budget": needed}), torch.device("cpu"), False
    )
    assert at.path is not None
    assert at.path.kind == "memory"
    assert at.path.bytes_needed == needed
    below = load_trial_data(
        config, odd_runtime.model_copy(update={"data_budget": needed - 1}), torch.device("cpu"), False
    )
    assert below.path is not None
    assert below.path.kind == "stream"
    assert isinstance(below.source, StreamedImages)
    assert below.constants["data_path"] == "stream"
    assert str(below.path) == "images streamed from the disk cache: 229.3 KiB exceed the 229.3 KiB budget"


STREAMED = {
    "folder, target maps, balanced, source_val": {
        "data": {"source": SOURCES[:2], "targets": ["sketch"], "source_sampling": "balanced"},
        "shaping": {"mode": "target", "convs": [4], "target_pairing": "shuffled"},
        "selection": "source_val",
    },
    "folder, random maps, lodo, limited": {
        "data": {"source": SOURCES, "targets": ["sketch"], "limit_per_domain": 12},
        "shaping": {"mode": "random", "convs": [1], "p0": 0.5},
        "selection": "lodo",
    },
}


@pytest.mark.parametrize("sections", list(STREAMED.values()), ids=list(STREAMED))
def test_a_streamed_trial_computes_what_the_in_memory_one_does(odd_runtime, sections):
    """Same batches for the same seed: the same losses, accuracies and weights, bit for bit."""
    config = folder_config(**sections)
    streamed = odd_runtime.model_copy(update={"data_budget": 1})  # nothing fits: every set streams
    states: dict[str, dict] = {}
    memory = run_trial(config, odd_runtime, report=lambda m, s: states.update(memory=s))
    stream = run_trial(config, streamed, report=lambda m, s: states.update(stream=s))
    assert memory.final["data_path"] == "memory"
    assert stream.final["data_path"] == "stream"
    assert without(stream.history, "data_path") == without(memory.history, "data_path")
    assert same_weights(states["memory"]["model"], states["stream"]["model"])


def test_pacs_streams_from_its_own_cache_as_it_trains_in_memory(tiny_runtime):
    config = tiny_config(shaping={"mode": "target", "convs": [4]}, selection={"protocol": "target_val"})
    memory = run_trial(config, tiny_runtime)
    trial = Trial(config, tiny_runtime.model_copy(update={"data_budget": 1}))
    assert isinstance(trial.data.source, StreamedImages)
    assert isinstance(trial.data.adaptation, StreamedImages)
    stream = run_trial(config, tiny_runtime.model_copy(update={"data_budget": 1}))
    assert without(stream.history, "data_path") == without(memory.history, "data_path")
