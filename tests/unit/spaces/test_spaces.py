"""Search spaces: the shipped files, sampling, grids, overrides, and every kind of bad space."""

from __future__ import annotations

import textwrap
from pathlib import Path

import optuna
import pytest
import yaml

from asha_tune.cli import main
from asha_tune.errors import ConfigError
from asha_tune.spaces import list_spaces, load_space

SHIPPED = [
    "quickstart",
    "random_layers",
    "random_p0",
    "decreasing_p0",
    "target_layers",
    "baseline",
    "paper_grid",
    "paper_search",
    "office_home",
]

VALID = """
name: t
data: {targets: [cartoon], image_size: 32}
train: {epochs: 4, weights: none}
shaping: {mode: random}
search: {algorithm: optuna, num_trials: 4}
scheduler: {kind: asha, grace_period: 1}
parameters:
  shaping.convs: {type: conv_subset, allowed: [1, 2, 3, 4], min_size: 1, max_size: 2}
  shaping.p0: {type: float, low: 0.0, high: 0.9}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def edit(change: dict) -> str:
    tree = yaml.safe_load(VALID)
    for path, value in change.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            node.pop(leaf)
        else:
            node[leaf] = value
    return yaml.safe_dump(tree)


DELETE = object()

# (what is wrong, the space, the exact error line)
INVALID = [
    ("unknown top-level key", edit({"colour": "red"}), "colour: Extra inputs are not permitted"),
    ("unknown key in a section", edit({"train/epoch": 3}), "train.epoch: Extra inputs are not permitted"),
    (
        "wrong type",
        edit({"train/epochs": "many"}),
        "train.epochs: Input should be a valid integer, unable to parse string as an integer (got 'many')",
    ),
    (
        "empty float range",
        edit({"parameters/shaping.p0": {"type": "float", "low": 0.5, "high": 0.5}}),
        "parameters.shaping.p0: empty range: low 0.5 is not below high 0.5",
    ),
    (
        "reversed int range",
        edit({"parameters/train.seed": {"type": "int", "low": 3, "high": 1}}),
        "parameters.train.seed: empty range: low 3 is not below high 1",
    ),
    (
        "downsampling conv allowed",
        edit({"parameters/shaping.convs": {"type": "conv_subset", "allowed": [1, 8]}}),
        "parameters.shaping.convs.allowed: downsampling conv 8: allowed convs are 1,2,3,4,5,6,7,9,10,11,12,14,15,16,17,19,20 (1..20 without the downsampling convs 8, 13, 18)",
    ),
    (
        "unknown conv",
        edit({"parameters/shaping.convs": {"type": "conv_subset", "allowed": [1, 21]}}),
        "parameters.shaping.convs.allowed: unknown conv 21: allowed convs are 1,2,3,4,5,6,7,9,10,11,12,14,15,16,17,19,20 (1..20 without the downsampling convs 8, 13, 18)",
    ),
    (
        "p0 range reaching 1",
        edit({"parameters/shaping.p0": {"type": "float", "low": 0.0, "high": 1.0}}),
        "parameters.shaping.p0: p0 1.0 is outside [0, 1) (p0=1 would zero the whole map)",
    ),
    (
        "negative p0",
        edit({"parameters/shaping.p0": {"type": "float", "low": -0.2, "high": 0.5}}),
        "parameters.shaping.p0: p0 -0.2 is outside [0, 1) (p0=1 would zero the whole map)",
    ),
    (
        "unknown domain",
        edit({"data/targets": ["mars"]}),
        "data.targets.0: Input should be 'art_painting', 'cartoon', 'photo' or 'sketch' (got 'mars')",
    ),
    (
        "gpu share above 1",
        edit({"resources": {"gpu": 1.5}}),
        "resources.gpu: Input should be less than or equal to 1 (got 1.5)",
    ),
    (
        "grace period above epochs",
        edit({"scheduler/grace_period": 9}),
        "scheduler.grace_period 9 is above train.epochs 4",
    ),
    (
        "unknown algorithm",
        edit({"search/algorithm": "bayes"}),
        "search.algorithm: Input should be 'optuna', 'random', 'grid' or 'list' (got 'bayes')",
    ),
    (
        "unknown scheduler",
        edit({"scheduler/kind": "pbt"}),
        "scheduler.kind: Input should be 'asha' or 'fifo' (got 'pbt')",
    ),
    (
        "metric never reported",
        edit({"scheduler/metric": "acc_photo"}),
        "scheduler.metric 'acc_photo' is not reported; choose one of acc_cartoon, entropy_cartoon, im_cartoon, snd_cartoon, source_acc, target_acc, target_entropy, target_im, target_snd, train_loss, val_acc",
    ),
    (
        "missing num_trials",
        edit({"search/num_trials": DELETE}),
        "search.num_trials is needed for algorithm optuna",
    ),
    (
        "zero trials",
        edit({"search/num_trials": 0}),
        "search.num_trials: Input should be greater than or equal to 1 (got 0)",
    ),
    (
        "unknown parameter path",
        edit({"parameters/shaping.p00": {"type": "float", "low": 0, "high": 0.5}}),
        "parameters.shaping.p00: not a trial setting",
    ),
    (
        "unknown parameter type",
        edit({"parameters/shaping.p0": {"type": "gaussian", "low": 0, "high": 1}}),
        "parameters.shaping.p0: unknown parameter type; use one of fixed, float, int, categorical, grid, conv_subset",
    ),
    (
        "subset larger than allowed",
        edit({"parameters/shaping.convs": {"type": "conv_subset", "allowed": [1, 2], "max_size": 3}}),
        "parameters.shaping.convs: max_size 3 is above the 2 allowed convs",
    ),
    (
        "reduction factor 1",
        edit({"scheduler/reduction_factor": 1}),
        "scheduler.reduction_factor: Input should be greater than 1 (got 1)",
    ),
    (
        "p0 set where masks are not random",
        edit({"shaping/mode": "target"}),
        "shaping: p0 does not apply to mode target (masks come from target maps)",
    ),
    (
        "a when on an unknown parameter",
        edit(
            {
                "parameters/shaping.p0": {
                    "type": "float",
                    "low": 0,
                    "high": 0.5,
                    "when": {"shaping.mode": "random"},
                }
            }
        ),
        "parameters.shaping.p0: when refers to shaping.mode, which is not a parameter",
    ),
    (
        "grid over a continuous range",
        edit({"search/algorithm": "grid", "search/num_trials": DELETE}),
        "parameters.shaping.p0: a float range without step cannot be enumerated for a grid",
    ),
    (
        "negative cpu",
        edit({"resources": {"cpu": 0}}),
        "resources.cpu: Input should be greater than 0 (got 0)",
    ),
    (
        "bad name",
        edit({"name": "my sweep!"}),
        "name: String should match pattern '^[A-Za-z0-9_.-]+$' (got 'my sweep!')",
    ),
    (
        "log range from zero",
        edit({"parameters/train.lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}),
        "parameters.train.lr: a log range needs low > 0",
    ),
    (
        "two targets for domain adaptation",
        edit(
            {"shaping/mode": "target", "parameters/shaping.p0": DELETE, "data/targets": ["cartoon", "sketch"]}
        ),
        "mode target adapts to one target domain per trial, got cartoon,sketch",
    ),
    (
        "malformed YAML",
        "name: t\nparameters: [a, b\n",
        "malformed YAML at line 3, column 1: expected ',' or ']', but got '<stream end>'",
    ),
    ("not a mapping", "- just\n- a list\n", "a space file must be a mapping of sections (name, data, ...)"),
    (
        "a shaping field fixed and searched",
        edit({"shaping/p0": 0.5}),
        "parameters.shaping.p0: shaping.p0 is also fixed in the shaping section (0.5): set it in one place",
    ),
    (
        "a key given twice",
        "name: t\ntrain:\n  epochs: 4\n  epochs: 5\n",
        "at line 4, column 3: key 'epochs' is given twice (lines 3 and 4): keep one",
    ),
    (
        "a billion laughs",
        "name: t\n"
        + "".join(
            f"{a}: &{a} [{', '.join([f'*{b}'] * 9) if b else ', '.join(['lol'] * 9)}]\n"
            for a, b in zip("abcdefghi", ["", *"abcdefgh"], strict=True)
        ),
        "at line 3, column 8: alias *a (space files hold no aliases: write the value out)",
    ),
]


@pytest.mark.parametrize(("what", "text", "line"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_space_exits_2_with_one_line(what, text, line, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, text)
    assert main(["launch", "--space", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("asha-tune launch: error: ")
    assert line in err[0], err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # nothing written


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_are_valid(name):
    assert name in list_spaces()
    space = load_space(name)
    assert space.name == name
    assert space.description


def test_every_problem_is_reported(tmp_path):
    text = edit({"train/epochs": 0, "resources": {"gpu": 2}})
    with pytest.raises(ConfigError) as err:
        load_space(write(tmp_path, text))
    assert len(err.value.problems) == 2


def test_overrides_reach_sections_and_parameters(tmp_path):
    path = write(tmp_path, VALID)
    space = load_space(path, ["train.epochs=2", "parameters.shaping.p0.high=0.5", "scheduler.grace_period=2"])
    assert space.train.epochs == 2
    assert space.parameters["shaping.p0"].high == 0.5
    with pytest.raises(ConfigError, match="--set train.epochs: expected"):
        load_space(path, ["train.epochs"])
    with pytest.raises(ConfigError, match="scheduler.grace_period 3 is above train.epochs 2"):
        load_space(path, ["train.epochs=2", "scheduler.grace_period=3"])


def test_space_by_name_or_unknown_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--space", "nosuchspace", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("asha-tune launch: error: --space nosuchspace: no space of that name in ")
    assert "(available: baseline, " in err
    assert "quickstart" in err


def test_define_by_run_sampling_respects_sizes_and_conditions():
    space = load_space("target_layers")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    seen_fns = set()
    for _ in range(60):
        trial = study.ask()
        values = space.suggest(trial)
        config = space.trial_config(values)  # every sample is a valid trial
        assert 1 <= len(config.shaping.convs) <= 2
        assert set(config.shaping.convs) <= {1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12}
        assert ("shaping.topk_fraction" in values) == (values["shaping.shape_fn"] == "topk")
        seen_fns.add(values["shaping.shape_fn"])
        study.tell(trial, 1.0)
    assert seen_fns == {"raw", "binarize_a", "binarize_both", "topk"}


def test_schedule_endpoints_build_a_schedule():
    space = load_space("decreasing_p0")
    config = space.trial_config(
        {"shaping.convs": [1, 2, 3, 4, 5, 6, 7], "shaping.p0.first": 0.7, "shaping.p0.last": 0.1}
    )
    assert [round(v, 2) for v in config.shaping.p0_per_conv().values()] == [
        0.7,
        0.51,
        0.37,
        0.26,
        0.19,
        0.14,
        0.1,
    ]


def test_grid_enumerates_conditional_configurations(tmp_path):
    text = """
    name: g
    data: {image_size: 32}
    train: {epochs: 2, weights: none}
    search: {algorithm: grid}
    scheduler: {kind: fifo}
    parameters:
      shaping.mode: {type: grid, values: [baseline, random]}
      shaping.convs: {type: grid, values: [[1], [1, 7]], when: {shaping.mode: random}}
      shaping.p0: {type: float, low: 0.5, high: 0.7, step: 0.1, when: {shaping.mode: random}}
    """
    space = load_space(write(tmp_path, text))
    grid = space.grid()
    assert len(grid) == 1 + 2 * 3 == space.num_trials
    assert grid[0] == {"shaping.mode": "baseline"}
    assert {"shaping.mode": "random", "shaping.convs": [1, 7], "shaping.p0": 0.7} in grid
    for values in grid:
        space.trial_config(values)


def test_dry_run_lists_the_grid_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--space", "baseline", "--dry-run", "--set", "train.epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "grid: 5 configurations" in out
    assert "train.seed=4" in out
    assert "epochs: 3" in out
    assert list(tmp_path.iterdir()) == []


def test_dry_run_of_a_sampled_space_shows_ranges(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--space", "random_layers", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "shaping.p0: float [0.0, 0.9]" in out
    assert (
        "shaping.convs: conv subset of [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 20], size 1..3"
        in out
    )
    assert "optuna search: 60 trials" in out


def test_spaces_command_lists_descriptions(capsys):
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert name in out
    assert "Domain adaptation with target-activation masks" in out


@pytest.mark.parametrize("given", ["random_layers", "random_layers.yaml"])
def test_a_space_name_resolves_with_or_without_yaml(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not beside the repository's search_spaces/
    assert load_space(given).name == "random_layers"


def test_spaces_path_comes_first_and_a_miss_lists_the_names(tmp_path, monkeypatch, capsys):
    own = tmp_path / "mine"
    own.mkdir()
    (own / "tiny.yaml").write_text(VALID)
    monkeypatch.setenv("ASHA_TUNE_SPACES", str(own))
    monkeypatch.chdir(tmp_path)
    assert load_space("tiny.yaml").name == "t"
    assert load_space("tiny").name == "t"
    assert main(["launch", "--space", "tinny.yaml", "--dry-run"]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith(f"asha-tune launch: error: --space tinny.yaml: no space of that name in {own}, ")
    assert "available: " in err
    assert "tiny" in err
    assert "quickstart" in err


def test_set_on_a_searched_parameter_fixes_it_and_the_dry_run_says_so(tmp_path, monkeypatch, capsys):
    space = load_space("random_layers", ["shaping.p0=0.5"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        values = space.suggest(trial)
        assert values["shaping.p0"] == 0.5
        assert space.trial_config(values).shaping.p0 == 0.5
        assert not any(name.startswith("shaping.p0") for name in trial.params)  # not searched
        study.tell(trial, 1.0)
    # A schedule's searched endpoints give way to the fixed value too.
    schedule = load_space("decreasing_p0", ["shaping.p0=0.5"])
    assert "shaping.p0.first" not in schedule.parameters
    assert "shaping.p0.last" not in schedule.parameters
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--space", "random_layers", "--set", "shaping.p0=0.5", "--dry-run"]) == 0
    assert "  shaping.p0: fixed 0.5 (pinned by --set: not searched)" in capsys.readouterr().out


def test_set_with_an_unknown_key_lists_the_valid_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--space", "quickstart", "--set", "nosuch.key=1", "--dry-run"]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "--set nosuch.key=1: unknown key nosuch.key; valid keys: name, description, " in err
    for key in (
        "train.epochs|",
        "resources.cpu|gpu",
        "search.algorithm|",
        "shaping.convs|",
        "parameters.NAME.FIELD",
    ):
        assert key in err
    assert list(tmp_path.iterdir()) == []


def test_launch_takes_weights_as_trial_does(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--space", "random_layers", "--weights", "none", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "  weights: none\n" in out
    assert "weights none;" in out


def test_spaces_command_says_what_each_space_needs(capsys):
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    need = lines[lines.index(next(line for line in lines if line.startswith("random_layers"))) + 1]
    assert need.split() == [
        "needs",
        "0.25",
        "GPU",
        "+",
        "2",
        "CPU",
        "per",
        "trial,",
        "4",
        "at",
        "once;",
        "weights",
        "imagenet;",
        "60",
        "trials",
        "x",
        "30",
        "epochs",
        "(ASHA",
        "stops",
        "weak",
        "ones",
        "early);",
        "224",
        "px",
    ]
    quick = lines[lines.index(next(line for line in lines if line.startswith("quickstart"))) + 1]
    assert "1 CPU per trial, no GPU, 2 at once; weights none; 8 trials x 4 epochs" in quick


def test_reproducible_runs_one_trial_at_a_time(tmp_path, monkeypatch, capsys):
    space = load_space("quickstart", ["search.reproducible=true"])
    assert space.search.max_concurrent == 2
    assert space.search.concurrency == 1
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--space", "quickstart", "--set", "search.reproducible=true", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 at once" in out
    assert "reproducible: one trial at a time" in out
