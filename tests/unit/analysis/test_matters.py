"""What matters: the numbers behind the slice plot and the conv × p0 heat map, the labels that
say what was selected on what, and that both figures are written (headless)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from PIL import Image

from asha_tune.analysis.matters import Point, heat_map, heat_map_cells, selected_label, slice_plot, slices


def grid_points() -> list[Point]:
    """A grid: convs [1] and [4] at p0 0.1 and 0.5, two seeds each at [1] p0 0.5; a baseline."""
    return [
        Point({"shaping.convs": [1], "shaping.p0": 0.5}, 60.0),
        Point({"shaping.convs": [1], "shaping.p0": 0.5}, 64.0),
        Point({"shaping.convs": [1], "shaping.p0": 0.1}, 55.0),
        Point({"shaping.convs": [4], "shaping.p0": 0.1}, 50.0, complete=False),
        Point({"shaping.convs": [10], "shaping.p0": 0.5}, 40.0),
        Point({"shaping.convs": [1, 4], "shaping.p0": 0.5}, 45.0),
        Point({"shaping.mode": "baseline"}, 54.0),  # no p0, no conv set: left out
        Point({"shaping.convs": [4], "shaping.p0": 0.5}, math.nan),  # diverged: left out
    ]


def test_slices_per_conv_set_sorted_by_p0():
    assert slices(grid_points()) == {
        "convs 1": [(0.1, 55.0, True), (0.5, 60.0, True), (0.5, 64.0, True)],
        "convs 4": [(0.1, 50.0, False)],
        "convs 10": [(0.5, 40.0, True)],  # by number, not as text ("10" < "4")
        "convs 1,4": [(0.5, 45.0, True)],  # pairs after single convs
    }


def test_heat_map_of_a_grid_has_a_column_per_p0_value():
    cells = heat_map_cells(grid_points())
    assert cells.rows == ("convs 1", "convs 4", "convs 10", "convs 1,4")
    assert cells.columns == ("0.1", "0.5")
    # convs 1 at p0 0.5: (60 + 64) / 2 = 62 over 2 trials
    assert cells.mean == ((55.0, 62.0), (50.0, None), (None, 40.0), (None, 45.0))
    assert cells.count == ((1, 2), (1, 0), (0, 1), (0, 1))
    assert cells.left_out == 2


def test_heat_map_of_a_search_bins_p0():
    # 5 distinct p0 in [0, 0.8] with 2 bins of width 0.4: [0, 0.4) and [0.4, 0.8] (closed).
    points = [
        Point({"shaping.convs": [2], "shaping.p0": p}, m)
        for p, m in [(0.0, 10), (0.2, 20), (0.4, 30), (0.6, 40), (0.8, 50)]
    ]
    cells = heat_map_cells(points, bins=2)
    assert cells.columns == ("[0.00, 0.40)", "[0.40, 0.80]")
    # first bin 10, 20: mean 15; second 30, 40, 50: mean 40 (0.4 goes up, 0.8 stays in the last)
    assert cells.mean == ((15.0, 40.0),)
    assert cells.count == ((2, 3),)
    assert heat_map_cells([]).rows == ()


def test_labels_say_what_was_selected_on_what():
    assert selected_label("acc_cartoon", "oracle") == (
        "acc_cartoon (oracle: selected on the data it reports; higher is better)"
    )
    assert selected_label("target_entropy", "entropy", "min") == (
        "target_entropy (entropy: selected on unlabelled target images; lower is better)"
    )
    assert "held-out source images" in selected_label("val_acc", "source_val")


def test_both_figures_are_written(tmp_path):
    slice_path = slice_plot(
        grid_points(), "acc_cartoon", "oracle", tmp_path / "slice.png", title="paper_grid · cartoon"
    )
    heat_path = heat_map(grid_points(), "acc_cartoon", "oracle", tmp_path / "heat.png")
    for path in (slice_path, heat_path):
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size[0] > 300
            assert image.size[1] > 200
    # Nothing to draw still writes a figure that says so (not a crash).
    empty = heat_map(
        [Point({"shaping.mode": "baseline"}, 50.0)], "val_acc", "source_val", tmp_path / "empty.png"
    )
    assert empty.is_file()


def test_matters_imports_no_torch_ray_or_optuna():
    code = (
        "import sys, asha_tune.analysis.matters, asha_tune.analysis.tables, asha_tune.analysis.replicate_stats; "
        "print(sorted(m for m in ('torch', 'ray', 'optuna', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("bins", [1, 3])
def test_every_usable_point_lands_in_one_cell(bins):
    cells = heat_map_cells(grid_points(), bins=bins)
    assert sum(map(sum, cells.count)) == 6
