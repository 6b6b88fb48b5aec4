"""The paper's grid as a space: exactly the configurations of Tables 2-11 (written down here
again, independently, from ../shared/reference/NOTES.md), each once, with its published figures."""

from __future__ import annotations

from asha_tune.cli import main
from asha_tune.spaces import load_space
from asha_tune.trial.config import P0Schedule

ALL = ("cartoon", "sketch", "photo")
DECREASING = (0.7, 0.51, 0.37, 0.26, 0.19, 0.14, 0.1)  # the authors' exact list (Table 8)


def expected() -> dict[tuple, dict[str, float]]:
    """(mode, convs, p0, targets) -> published figures, from NOTES.md's "Published numbers"."""
    runs: dict[tuple, dict[str, float]] = {}

    def add(mode, convs, p0, targets, **figures):
        key = (mode, tuple(convs), p0, tuple(targets))
        runs.setdefault(key, {}).update({f"acc_{d}": v for d, v in figures.items()})

    add("baseline", [], None, ALL, cartoon=54.82, sketch=35.61, photo=94.73)
    c1 = [54.78, 54.82, 54.69, 55.82, 57.42, 58.00, 60.62, 61.63, 59.09, 51.88]
    for i, v in enumerate(c1):
        add("random", [1], i / 10, ALL if i == 7 else ["cartoon"], cartoon=v)
    by_conv = {
        1: 61.63,
        3: 54.65,
        4: 50.30,
        5: 52.01,
        7: 56.19,
        9: 52.86,
        11: 52.13,
        15: 52.86,
        17: 44.16,
        19: 46.93,
    }
    for conv, v in by_conv.items():
        add("random", [conv], 0.7, ALL if conv == 1 else ["cartoon"], cartoon=v)
    add("random", [1, 4, 7, 10, 16, 19], 0.7, ["cartoon"], cartoon=21.42)
    add("random", [1, 7], 0.7, ["cartoon"], cartoon=48.98)
    c7 = [57.89, 57.98, 57.85, 57.94, 57.94, 57.47, 56.40, 56.19, 55.29, 55.20]
    for i, v in enumerate(c7):
        add("random", [7], i / 10, ["cartoon"], cartoon=v)
    add("random", [1], 0.7, ALL, sketch=52.30, photo=80.78)
    add("random", range(1, 8), 0.7, ["cartoon"], cartoon=33.28)
    add("random", range(1, 8), DECREASING, ["cartoon"], cartoon=32.72)
    da = {
        1: 43.0,
        2: 48.51,
        3: 62.93,
        4: 63.95,
        5: 60.96,
        6: 57.89,
        7: 27.67,
        9: 63.44,
        10: 52.0,
        12: 22.53,
        15: 46.0,
        20: 5.0,
    }
    for conv, v in da.items():
        add("target", [conv], None, ["cartoon"], cartoon=v)
    table11 = {
        (4,): (63.95, 50.47, 88.98),
        (1, 4, 7, 10, 16, 19): (15.19, 4.07, 25.87),
        (4, 9): (58.02, 37.54, 67.90),
    }
    for convs, figures in table11.items():
        for domain, v in zip(ALL, figures, strict=True):
            add("target", convs, None, [domain], **{domain: v})
    for domain in ALL:  # the control, not in the paper
        add("bn_only", [], None, [domain])
    return runs


def key_of(config) -> tuple:
    s = config.shaping
    assert not isinstance(s.p0, P0Schedule)  # the grid uses the authors' exact values
    p0 = tuple(s.p0) if isinstance(s.p0, list) else s.p0
    return s.mode, tuple(s.convs), p0, tuple(config.data.targets)


def test_the_grid_is_exactly_the_papers_configurations_each_once():
    space = load_space("paper_grid")
    assert space.selection.protocol == "oracle"  # the paper's protocol
    # never stopped early
    assert space.search.algorithm == "list"
    assert space.scheduler.kind == "fifo"
    assert space.train.epochs == 30
    assert space.data.image_size == 224
    assert space.train.weights == "imagenet"
    ours: dict[tuple, dict[str, float]] = {}
    for point in space.grid():
        config = space.trial_config(point)  # every configuration validates as a trial
        listed = space.configuration(point["configuration"])
        key = key_of(config)
        assert key not in ours, f"{listed.id} runs twice"
        ours[key] = dict(listed.published)
        assert config.selection.protocol == "oracle"
        assert config.train.seed == 0
        if config.shaping.mode == "target":
            assert config.train.batch_size == 256  # the authors' DA batch
        if listed.published:
            assert listed.source.startswith("paper, Table")
        else:
            assert "not in the paper" in listed.note
    want = expected()
    assert set(ours) - set(want) == set(), "configurations not in the paper's tables"
    assert set(want) - set(ours) == set(), "configurations of the paper missing"
    assert ours == want  # the published figures, each configuration with all of its tables'
    assert len(ours) == 56


def test_the_decreasing_schedule_is_the_authors_list():
    space = load_space("paper_grid")
    config = space.trial_config({"configuration": "rand-c1-7-p0-decreasing"})
    assert config.shaping.p0_per_conv() == dict(zip(range(1, 8), DECREASING, strict=True))


def test_the_dry_run_prints_published_figures_and_the_budget(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--space", "paper_grid", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "configurations: 56 listed, each to full budget: 56 trials x 30 epochs = 1680 epochs" in out
    assert "selection:\n  protocol: oracle\n" in out
    assert (
        "baseline: shaping.mode=baseline, data.targets=['cartoon', 'sketch', 'photo']\n"
        "        published: acc_cartoon 54.82, acc_sketch 35.61, acc_photo 94.73 "
        "(paper, Tables 2, 5, 7 and 11)"
    ) in out
    assert "published: acc_cartoon 61.63, acc_sketch 52.3, acc_photo 80.78" in out
    assert out.count("published: ") == 53
    assert out.count("[not in the paper") == 3
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


def test_the_paper_search_selects_as_the_grid_does():
    """`paper_search` is the grid's search counterpart: same protocol, target, recipe, budget."""
    grid, search = load_space("paper_grid"), load_space("paper_search")
    assert search.selection == grid.selection
    assert search.selection.protocol == "oracle"
    assert search.scheduler.metric == "acc_cartoon"
    assert search.scheduler.kind == "asha"
    assert (search.data, search.train) == (grid.data, grid.train)
