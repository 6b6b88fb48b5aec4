from __future__ import annotations

import pytest

from asha_tune.errors import ConfigError
from asha_tune.trial.config import (
    SHAPEABLE_CONVS,
    P0Schedule,
    ShapingConfig,
    TrialConfig,
    geometric_schedule,
    trial_config,
)


def test_decreasing_schedule_reproduces_table_8():
    shaping = ShapingConfig(mode="random", convs=list(range(1, 8)), p0="0.7:0.1")
    values = [round(v, 2) for v in shaping.p0_per_conv().values()]
    assert values == [0.7, 0.51, 0.37, 0.26, 0.19, 0.14, 0.10]


def test_schedule_follows_depth_not_position():
    # Convs 1, 4, 7 sit at depths 0, 1/2 and 1 of the span: p0 at conv 4 is the geometric mean.
    values = geometric_schedule(0.7, 0.1, [1, 4, 7])
    assert values[1] == pytest.approx((0.7 * 0.1) ** 0.5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.7", {1: 0.7, 7: 0.7}), ("0.7,0.5", {1: 0.7, 7: 0.5}), ("0.7:0.1", {1: 0.7, 7: 0.1})],
)
def test_p0_forms(text, expected):
    got = ShapingConfig(mode="random", convs="1,7", p0=text).p0_per_conv()
    assert got == pytest.approx(expected)


def test_schedule_type_is_kept():
    assert isinstance(ShapingConfig(mode="random", convs=[1, 2], p0="0.5:0.2").p0, P0Schedule)


def test_mode_defaults_follow_the_authors():
    random = ShapingConfig(mode="random", convs=[1], p0=0.7)
    target = ShapingConfig(mode="target", convs=[4])
    assert (random.resolved_shape_fn, random.resolved_shape_at_eval) == ("binarize_a", True)
    assert (target.resolved_shape_fn, target.resolved_shape_at_eval) == ("raw", False)
    assert target.target_updates_bn is True


def test_convs_are_sorted_and_allowed_set_excludes_downsampling():
    assert ShapingConfig(mode="random", convs=[7, 1], p0=0.5).convs == [1, 7]
    assert set(SHAPEABLE_CONVS) == set(range(1, 21)) - {8, 13, 18}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"shaping": {"mode": "random", "convs": [8], "p0": 0.5}},
            "downsampling conv 8: allowed convs are 1,2,3,4,5,6,7,9",
        ),
        ({"shaping": {"mode": "random", "convs": [0], "p0": 0.5}}, "unknown conv 0: allowed convs"),
        ({"shaping": {"mode": "random", "convs": [21], "p0": 0.5}}, "unknown conv 21"),
        ({"shaping": {"mode": "random", "convs": [1], "p0": 1.0}}, "p0 1.0 is outside [0, 1)"),
        ({"shaping": {"mode": "random", "convs": [1], "p0": -0.1}}, "outside [0, 1)"),
        ({"shaping": {"mode": "random", "convs": [1, 2], "p0": [0.1]}}, "p0 lists 1 values for 2 convs"),
        ({"shaping": {"mode": "random", "convs": [1]}}, "mode random needs p0"),
        ({"shaping": {"mode": "target", "convs": [4], "p0": 0.5}}, "p0 does not apply to mode target"),
        ({"shaping": {"mode": "baseline", "convs": [4]}}, "convs does not apply to mode baseline"),
        (
            {"shaping": {"mode": "random", "convs": [1], "p0": 0.5, "shape_fn": "topk"}},
            "topk needs topk_fraction",
        ),
        (
            {"data": {"targets": ["cartoon", "sketch"]}, "shaping": {"mode": "target", "convs": [4]}},
            "adapts to one target domain per trial",
        ),
        ({"data": {"source": "cartoon", "targets": ["cartoon"]}}, "source cartoon is also a target"),
        ({"data": {"targets": ["mars"]}}, "data.targets: Input should be 'art_painting'"),
        ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1"),
        ({"shaping": {"mode": "random", "convs": [1], "p0": "0.7:0"}}, "needs both endpoints above 0"),
        ({"shaping": {"mode": "nope"}}, "shaping.mode: Input should be 'baseline'"),
        ({"train": {"batchsize": 3}}, "train.batchsize: Extra inputs are not permitted"),
    ],
)
def test_invalid_configs_name_the_problem(data, message):
    with pytest.raises(ConfigError) as err:
        trial_config(data)
    assert message in str(err.value)
    assert len(err.value.problems) == 1


def test_fingerprint_changes_with_the_experiment():
    a = TrialConfig()
    b = TrialConfig.model_validate({"train": {"seed": 1}})
    assert a.fingerprint() == TrialConfig().fingerprint() != b.fingerprint()


def test_the_paper_batch_size_is_the_default_of_each_mode(tmp_path):
    """256 for target maps (the authors' DA runs) and for bn_only, their matched control; 128
    otherwise; an explicit size always wins."""
    from asha_tune.spaces import load_space
    from asha_tune.sweep.settings import SweepSettings

    one = {"data": {"targets": ["cartoon"]}}  # a target mode adapts to one target
    assert (
        TrialConfig.model_validate({**one, "shaping": {"mode": "target", "convs": [4]}}).train.batch_size
        == 256
    )
    assert TrialConfig.model_validate({**one, "shaping": {"mode": "bn_only"}}).train.batch_size == 256
    for mode in ({"mode": "baseline"}, {"mode": "random", "convs": [1], "p0": 0.5}):
        assert TrialConfig.model_validate({"shaping": mode}).train.batch_size == 128
    explicit = {**one, "shaping": {"mode": "target", "convs": [4]}, "train": {"batch_size": 64}}
    assert TrialConfig.model_validate(explicit).train.batch_size == 64
    # In a space whose mode is searched, each trial gets its mode's size, also after a resume
    # reads the space back from sweep.json.
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nsearch: {algorithm: grid}\nscheduler: {kind: fifo}\ndata: {targets: [cartoon]}\n"
        "parameters:\n  shaping.mode: {type: grid, values: [baseline, target]}\n"
        "  shaping.convs: {type: fixed, value: [4], when: {shaping.mode: target}}\n"
    )
    space = load_space(path)
    settings = SweepSettings(
        name="s", space=space, results_dir=tmp_path, tracking_uri="x", study_url="y", runtime={}
    )
    settings.save()
    reread = SweepSettings.load("s", tmp_path).space
    for s in (space, reread):
        sizes = [s.trial_config(v).train.batch_size for v in s.grid()]
        assert sizes == [128, 256]


def test_a_p0_list_follows_the_conv_it_was_written_next_to():
    # Convs are kept sorted; each p0 moves with its conv (conv 7 was given 0.1).
    shaping = ShapingConfig(mode="random", convs="7,1", p0="0.1,0.7")
    assert shaping.convs == [1, 7]
    assert shaping.p0 == [0.7, 0.1]
    assert shaping.p0_per_conv() == {1: 0.7, 7: 0.1}
    flags = trial_config({"shaping": {"mode": "random", "convs": "7,1,4", "p0": "0.1,0.7,0.4"}})
    assert flags.shaping.p0_per_conv() == {1: 0.7, 4: 0.4, 7: 0.1}


def test_a_constant_schedule_has_no_ratio_to_divide_by():
    assert ShapingConfig(mode="random", convs="1,7", p0="0:0").p0_per_conv() == {1: 0.0, 7: 0.0}
    assert ShapingConfig(mode="random", convs="1,7", p0="0.3:0.3").p0_per_conv() == {1: 0.3, 7: 0.3}
