"""Parameter importances (PED-ANOVA, fANOVA) and warm starts, on real sqlite Optuna studies."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from asha_tune.errors import AshaTuneError, ConfigError
from asha_tune.spaces import SearchSpace, load_space
from asha_tune.sweep.importance import importances
from asha_tune.sweep.study import (
    VALUES_ATTR,
    WARM_START_ATTR,
    RecordingSuggester,
    StudyHandle,
    UnexpressibleError,
    create_study,
    expressed,
)
from asha_tune.sweep.warm_start import PastTrial, warm_start
from tests.helpers.sweeps import finished_trials


def variant(base: str = "quickstart", **changes) -> SearchSpace:
    tree = load_space(base).model_dump(mode="json")
    for section, value in changes.items():
        tree[section] = (
            {**tree[section], **value} if isinstance(value, dict) and section != "parameters" else value
        )
    return SearchSpace.model_validate(tree)


# --- the space's distributions, recorded -----------------------------------------------------------


def test_the_space_itself_names_its_distributions():
    space = load_space("quickstart")  # convs: subset of 1..7 of size 1..2; p0: float [0, 0.9]
    params, distributions = expressed(space, {"shaping.convs": [2, 5], "shaping.p0": 0.3})
    assert params == {"shaping.convs.size": 2, "shaping.convs.size2": "2,5", "shaping.p0": 0.3}
    assert distributions["shaping.p0"] == optuna.distributions.FloatDistribution(0.0, 0.9)
    assert distributions["shaping.convs.size"] == optuna.distributions.IntDistribution(1, 2)
    assert len(distributions["shaping.convs.size2"].choices) == 21  # 7 choose 2
    with pytest.raises(UnexpressibleError, match=r"shaping.p0 0.95 is outside \[0.0, 0.9\]"):
        expressed(space, {"shaping.convs": [2], "shaping.p0": 0.95})
    with pytest.raises(UnexpressibleError, match="shaping.convs.size 3 is outside 1..2"):
        expressed(space, {"shaping.convs": [1, 2, 3], "shaping.p0": 0.3})
    with pytest.raises(UnexpressibleError, match="shaping.convs.size1 '9' is not one of its choices"):
        expressed(space, {"shaping.convs": [9], "shaping.p0": 0.3})
    recorder = RecordingSuggester({"x": 4})
    with pytest.raises(UnexpressibleError, match="x 4 is outside 0..10 in steps of 3"):
        recorder.suggest_int("x", 0, 10, step=3)
    with pytest.raises(UnexpressibleError, match="it has no value for y"):
        recorder.suggest_float("y", 0, 1)


# --- importances -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> str:
    """40 random trials of the quickstart space: at epoch 1 the value is 10 × the first conv of
    the set (the conv set decides it); a full-budget trial ends at 100 × p0 (p0 decides it).
    Every second trial is pruned after epoch 1."""
    space = variant(search={"algorithm": "random", "num_trials": 40})
    url = f"sqlite:///{tmp_path_factory.mktemp('importances') / 'optuna.db'}"
    create_study(url, "synthetic", space)
    handle = StudyHandle(url, "synthetic", space)
    for i in range(40):
        number, values = handle.ask(f"ray-{i}", known=set())
        handle.report(number, 1, 10.0 * values["shaping.convs"][0])
        if i % 2:
            handle.tell(number, TrialState.PRUNED)
        else:
            handle.report(number, 4, 100.0 * values["shaping.p0"])
            handle.tell(number, TrialState.COMPLETE, 100.0 * values["shaping.p0"])
    return url


@pytest.mark.parametrize("evaluator", ["ped_anova", "fanova"])
def test_the_parameter_that_decides_the_value_ranks_first(synthetic, evaluator):
    final = importances(synthetic, "synthetic", evaluator)
    assert final.trials == 20  # the COMPLETE ones: a pruned trial's value is of fewer epochs
    assert list(final.values) == ["shaping.p0", "shaping.convs"]  # the space's names, a conv set as one
    assert final.values["shaping.p0"] > 0.5
    assert sum(final.values.values()) == pytest.approx(1.0)
    early = importances(synthetic, "synthetic", evaluator, at_epoch=1)
    assert early.trials == 40  # every trial reached epoch 1
    assert list(early.values) == ["shaping.convs", "shaping.p0"]
    assert early.values["shaping.convs"] > 0.5
    assert (
        f"({evaluator}; 40 trials, values at epoch 1; objective val_acc (max; selection source_val), "
        "the study's own):" in early.text()
    )


def test_fanova_leaves_out_conditional_parameters_and_says_so(tmp_path):
    space = load_space("paper_search")  # p0 only when mode is random
    tree = space.model_dump(mode="json")
    tree["search"]["algorithm"] = "random"
    space = SearchSpace.model_validate(tree)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    create_study(url, "cond", space)
    handle = StudyHandle(url, "cond", space)
    for i in range(12):
        number, values = handle.ask(f"r{i}", known=set())
        handle.tell(
            number,
            TrialState.COMPLETE,
            50.0 + (10.0 if values["shaping.mode"] == "random" else 0.0) + i * 0.01,
        )
    fanova = importances(url, "cond", "fanova")
    assert "shaping.p0" in fanova.left_out
    assert "shaping.p0" not in fanova.values
    assert "not assessed by fanova: shaping.p0" in fanova.text()
    ped = importances(url, "cond", "ped_anova")
    # PED-ANOVA assesses conditionals
    assert "shaping.p0" in ped.values
    assert not ped.left_out


def test_too_few_trials_and_unknown_names_are_one_line(synthetic, tmp_path):
    with pytest.raises(AshaTuneError, match="need at least 50 COMPLETE trials; study synthetic has 20"):
        importances(synthetic, "synthetic", min_trials=50)
    with pytest.raises(AshaTuneError, match="trials that reached epoch 4; study synthetic has 20"):
        importances(synthetic, "synthetic", at_epoch=4, min_trials=21)
    with pytest.raises(AshaTuneError, match="trials that reached epoch 3; study synthetic has 0"):
        importances(synthetic, "synthetic", at_epoch=3)
    with pytest.raises(
        ConfigError, match="unknown importance evaluator 'shap': choose one of ped_anova, fanova"
    ):
        importances(synthetic, "synthetic", "shap")
    with pytest.raises(AshaTuneError, match="no study named nope"):
        importances(synthetic, "nope")
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    optuna.create_study(storage=url, study_name="plain")
    with pytest.raises(AshaTuneError, match="was not made by asha-tune"):
        importances(url, "plain")


# --- warm starts -----------------------------------------------------------------------------------


def past(
    space: SearchSpace,
    source: str,
    values: dict,
    state="completed",
    value=55.0,
    metric="val_acc",
    steps=None,
    **settings,
):
    """A finished trial that ran `values` in `space`, with some settings changed."""
    config = space.trial_config(values).model_dump(mode="json")
    for path, v in settings.items():
        section, _, key = path.partition(".")
        config[section][key] = v
    return PastTrial(source, state, config, metric, value, steps or {1: 40.0, 4: value or 0.0})


@pytest.fixture
def search(tmp_path):
    space = load_space("quickstart")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study(url, "search", space)
    return url, space


def test_warm_start_adds_what_the_space_can_express_and_says_why_not_the_rest(search):
    url, space = search
    ok = {"shaping.convs": [2], "shaping.p0": 0.3}
    trials = [
        past(space, "g#0", ok, steps={1: 40.0, 2: 50.0, 4: 55.0}),
        past(space, "g#1", {"shaping.convs": [2], "shaping.p0": 0.95}),
        past(space, "g#2", {"shaping.convs": [1, 2, 3], "shaping.p0": 0.3}),
        past(space, "g#3", ok, **{"train.lr": 0.01}),  # searched by the other sweep, fixed here
        past(
            space,
            "g#4",
            {"shaping.convs": [3], "shaping.p0": 0.5},
            state="pruned",
            value=None,
            steps={1: 30.0, 2: 35.0},
        ),
        past(space, "g#5", ok, state="failed", value=None),
        past(space, "g#6", ok, metric="acc_cartoon"),
        past(space, "g#7", ok, **{"train.seed": 5}),  # another seed of the same configuration
        past(space, "g#8", ok, **{"data.targets": ["cartoon", "sketch"]}),  # val_acc is on the source
        past(space, "g#9", ok, **{"data.targets": ["sketch"]}),
        past(space, "g#10", ok, **{"shaping.mode": "target"}),
        past(space, "g#11", ok, value=math.nan),
    ]
    result = warm_start(url, "search", trials)
    assert result.added == [("g#0", 0), ("g#4", 1), ("g#7", 2), ("g#8", 3)]
    assert dict(result.skipped) == {
        "g#1": "shaping.p0 0.95 is outside [0.0, 0.9]",
        "g#2": "shaping.convs.size 3 is outside 1..2",
        "g#3": "it ran with train.lr 0.01; this space runs 0.001",
        "g#5": "it failed: no result to learn from",
        "g#6": "its value is acc_cartoon; this sweep optimises val_acc",
        "g#9": "it ran on targets sketch (its val_acc depends on them); this space has cartoon",
        "g#10": "it ran with shaping.mode 'target'; this space runs 'random'",
        "g#11": "it completed without a finite value",
    }
    study = optuna.load_study(study_name="search", storage=url)
    first, pruned = study.trials[0], study.trials[1]
    assert first.state == TrialState.COMPLETE
    assert first.value == 55.0
    assert first.params == {"shaping.convs.size": 1, "shaping.convs.size1": "2", "shaping.p0": 0.3}
    assert first.intermediate_values == {1: 40.0, 2: 50.0, 4: 55.0}
    assert first.user_attrs == {VALUES_ATTR: ok, WARM_START_ATTR: "g#0"}
    # as Optuna tells a pruned trial
    assert pruned.state == TrialState.PRUNED
    assert pruned.value == 35.0
    assert "added g#0 as trial 0" in result.text()
    assert "skipped g#5: it failed" in result.text()

    again = warm_start(url, "search", trials[:2])  # a resumed sweep warm-starts again
    assert again.added == []
    assert again.skipped[0] == ("g#0", "already added (trial 0)")

    handle = StudyHandle(url, "search", space)  # the search goes on from there
    number, values = handle.ask("ray-0", known=set())
    assert number == 4
    space.trial_config(values)


def test_a_trial_whose_settings_lack_a_parameter_is_skipped(search):
    url, space = search
    old = past(space, "old#0", {"shaping.convs": [2], "shaping.p0": 0.3})
    del old.config["shaping"]["p0"]
    (skipped,) = warm_start(url, "search", [old]).skipped
    assert skipped == ("old#0", "its settings have no shaping.p0")


def test_warm_start_from_a_replayed_list_of_configurations(search, tmp_path):
    url, space = search
    grid = variant(
        parameters={},
        search={"algorithm": "list"},
        scheduler={"kind": "fifo"},
        configurations=[
            {"id": "c2-p0.3", "values": {"shaping.convs": [2], "shaping.p0": 0.3}},
            {"id": "c1,5-p0.5", "values": {"shaping.convs": [1, 5], "shaping.p0": 0.5}},
            {"id": "c3-p0.95", "values": {"shaping.convs": [3], "shaping.p0": 0.95}},
        ],
    )
    create_study(url, "grid", grid)
    handle = StudyHandle(url, "grid", grid)
    for i, value in enumerate((50.0, 60.0, 40.0)):
        number, _ = handle.ask(f"g{i}", known=set())
        handle.report(number, 4, value)
        handle.tell(number, TrialState.COMPLETE, value)
    trials = finished_trials(url, "grid")
    assert [t.source for t in trials] == ["grid trial 0", "grid trial 1", "grid trial 2"]
    assert trials[1].config["shaping"]["convs"] == [1, 5]
    assert trials[1].metric == "val_acc"
    result = warm_start(url, "search", trials)
    assert [s for s, _ in result.added] == ["grid trial 0", "grid trial 1"]
    assert result.skipped == [("grid trial 2", "shaping.p0 0.95 is outside [0.0, 0.9]")]
    study = optuna.load_study(study_name="search", storage=url)
    assert [t.value for t in study.trials] == [50.0, 60.0]
    assert study.trials[1].user_attrs[VALUES_ATTR] == {"shaping.convs": [1, 5], "shaping.p0": 0.5}
    with pytest.raises(AshaTuneError, match="warm start: grid runs a list of configurations"):
        warm_start(url, "grid", trials)


def test_replicates_pool_into_one_set_of_importances_of_one_objective(synthetic, tmp_path):
    pooled = importances(synthetic, ["synthetic", "synthetic"])  # the same study twice: twice the trials
    assert pooled.trials == 40
    assert pooled.study == "synthetic, synthetic"
    assert list(pooled.values)[0] == "shaping.p0"
    other = variant(search={"algorithm": "random", "num_trials": 5}, scheduler={"metric": "source_acc"})
    create_study(synthetic, "other", other)
    with pytest.raises(
        AshaTuneError, match="importances: study other optimises another objective than synthetic"
    ):
        importances(synthetic, ["synthetic", "other"])
