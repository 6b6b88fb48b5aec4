"""The data section of a configuration: datasets by name, one source or several, targets that
default to the other domains, the sampling of source batches, and the data budget."""

from __future__ import annotations

import pytest

from asha_tune.errors import ConfigError
from asha_tune.trial.config import Runtime, TrialConfig, trial_config


def data(**fields) -> TrialConfig:
    return TrialConfig.model_validate({"data": fields})


def one_problem(tree: dict) -> str:
    with pytest.raises(ConfigError) as err:
        trial_config(tree)
    assert len(err.value.problems) == 1, err.value.problems
    return err.value.problems[0]


def test_an_unknown_dataset_is_one_line_listing_the_valid_names():
    assert one_problem({"data": {"dataset": "officehome"}}) == (
        "data.dataset: Input should be 'pacs', 'folder', 'vlcs', 'office_home', 'terra_incognita' or "
        "'domain_net' (got 'officehome')"
    )


def test_pacs_is_the_default_and_its_targets_are_the_other_domains():
    config = TrialConfig()
    assert config.data.dataset == "pacs"
    assert config.data.sources == ("art_painting",)
    assert config.data.targets is None
    assert config.data.target_domains == ("cartoon", "photo", "sketch")
    assert config.resolved_dump()["data"]["targets"] == ["cartoon", "photo", "sketch"]  # what a run logs


def test_several_sources_in_any_form_are_one_sorted_list():
    a = data(dataset="office_home", source="Real World,Art")
    b = data(dataset="office_home", source=["Art", "Real World"])
    assert a == b
    assert a.data.source == ["Art", "Real World"]
    assert a.data.sources == ("Art", "Real World")
    assert a.data.target_domains == ("Clipart", "Product")
    assert a.fingerprint() == b.fingerprint()
    # One domain in a list is the single-source configuration it always was.
    assert data(source=["photo"]).fingerprint() == data(source="photo").fingerprint()


def test_domains_are_checked_against_a_layout_that_names_them():
    assert one_problem({"data": {"dataset": "office_home", "source": "Art", "targets": ["Art Deco"]}}) == (
        "data.targets: Input should be 'Art', 'Clipart', 'Product' or 'Real World' (got 'Art Deco')"
    )
    assert "data.source: Input should be 'Caltech101'" in one_problem(
        {"data": {"dataset": "vlcs", "source": ["LabelMe", "Caltech"]}}
    )
    assert one_problem({"data": {"source": "art_painting,cartoon,photo,sketch"}}) == (
        "data.source lists every domain of pacs: no target is left"
    )
    assert "source cartoon is also a target" in one_problem(
        {"data": {"source": "cartoon", "targets": ["cartoon"]}}
    )


def test_folder_domains_are_left_to_the_data_root():
    config = data(dataset="folder", source=["x y", "z"])
    assert config.data.target_domains is None  # known once the data root is listed
    assert config.data.targets_among(["a", "x y", "z", "é"]) == ("a", "é")
    assert "cannot be a domain folder's name" in one_problem({"data": {"dataset": "folder", "source": "a/b"}})


def test_a_target_mode_needs_its_one_target_named_where_the_default_is_several():
    target = {"mode": "target", "convs": [4]}
    assert one_problem({"shaping": target}) == (
        "mode target adapts to one target domain per trial, got cartoon,photo,sketch (every domain but "
        "the sources, by default)"
    )
    assert "name it in data.targets" in one_problem(
        {"data": {"dataset": "folder", "source": "a"}, "shaping": {"mode": "bn_only"}}
    )
    named = TrialConfig.model_validate({"data": {"targets": ["sketch"]}, "shaping": target})
    assert named.data.target_domains == ("sketch",)


def test_lodo_needs_two_sources():
    assert one_problem({"selection": "lodo"}) == (
        "selection lodo leaves one source domain out in turn: it needs two source domains at least "
        "(got source art_painting)"
    )
    two = TrialConfig.model_validate({"data": {"source": ["art_painting", "cartoon"]}, "selection": "lodo"})
    assert two.selection.protocol == "lodo"
    assert two.data.target_domains == ("photo", "sketch")


def test_source_sampling_is_a_registry_name():
    assert data(source="photo,sketch", source_sampling="balanced").data.source_sampling == "balanced"
    assert one_problem({"data": {"source_sampling": "stratified"}}) == (
        "data.source_sampling: Input should be 'union' or 'balanced' (got 'stratified')"
    )


def test_a_subset_smaller_than_the_class_count_is_refused_where_the_count_is_known():
    assert one_problem({"data": {"dataset": "office_home", "source": "Art", "limit_per_domain": 64}}) == (
        "data.limit_per_domain 64 is below the 65 classes of office_home (a subset keeps one image of "
        "each class at least)"
    )
    assert data(dataset="folder", source="a", limit_per_domain=2).data.limit_per_domain == 2  # root decides


def test_configurations_written_before_datasets_keep_their_fingerprint():
    """Checkpoints and resumed sweeps find trials by fingerprint: these two were computed by the
    code before data.dataset and data.source_sampling existed (commit 0fcce17)."""
    tiny = {
        "data": {"image_size": 32, "targets": ["cartoon"]},
        "train": {"epochs": 2, "batch_size": 8, "weights": "none"},
        "shaping": {"mode": "random", "convs": [1, 7], "p0": "0.7:0.1"},
    }
    other = {"data": {"source": "photo", "targets": ["cartoon", "sketch"], "limit_per_domain": 35}}
    other["selection"] = "source_val"  # type: ignore[assignment]
    assert TrialConfig.model_validate(tiny).fingerprint() == "3d907471b7be"
    assert TrialConfig.model_validate(other).fingerprint() == "8c0885a94355"
    # A new setting away from its default is part of what the trial computes.
    assert (
        data(source="photo,sketch").fingerprint()
        != data(source="photo,sketch", source_sampling="balanced").fingerprint()
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("512MiB", 512 * 2**20),
        ("8GiB", 8 * 2**30),
        ("2GB", 2 * 10**9),
        ("1.5g", int(1.5 * 2**30)),
        (4096, 4096),
    ],
)
def test_the_data_budget_reads_sizes(given, expected):
    assert Runtime(data_budget=given).data_budget == expected


def test_an_unreadable_data_budget_is_one_line():
    with pytest.raises(ValueError, match="cannot read a size from 'lots': use e.g. 8GiB"):
        Runtime(data_budget="lots")
