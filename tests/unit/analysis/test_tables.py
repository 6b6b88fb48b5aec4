"""The DomainBed-style table: its cells and mean column from known numbers, and its exact
Markdown and LaTeX."""

from __future__ import annotations

import pytest

from asha_tune.analysis.replicate_stats import Replicate, TrialOutcome, replicated_result
from asha_tune.analysis.tables import TableRow, build_table, latex, latex_escape, markdown, row_from_results

GRID = TableRow(
    "paper_grid's winner",
    "oracle",
    # cartoon 61, 63: mean 62, sd sqrt(2), SE 1.0; sketch 52, 50: mean 51, SE 1.0.
    # Mean column: replicate 0 (61 + 52)/2 = 56.5, replicate 1 (63 + 50)/2 = 56.5: SE 0.0.
    # (Averaging the targets' SEs would say 1.0: wrong, the targets of a replicate co-vary.)
    {"cartoon": {0: 61.0, 1: 63.0}, "sketch": {0: 52.0, 1: 50.0}},
)
SEARCH = TableRow(
    "paper_search's winner",
    "source_val",
    # cartoon 60, 62, 67: mean 63, sd sqrt((9 + 1 + 16)/2) = sqrt(13) = 3.606, SE 2.082;
    # sketch (replicates 0 and 2) 49, 56: mean 52.5, sd 7/sqrt(2), SE 3.5;
    # mean column over replicates 0 and 2 only: 54.5, 61.5: mean 58.0, SE 3.5 (replicate 1 dropped).
    {"cartoon": {0: 60.0, 1: 62.0, 2: 67.0}, "sketch": {0: 49.0, 2: 56.0}},
)
BASELINE = TableRow("baseline", "none", {"cartoon": {0: 55.0}}, over="seeds")


def test_cells_and_the_mean_column():
    table = build_table([GRID, SEARCH, BASELINE])
    assert table.targets == ("cartoon", "sketch")
    grid, search, baseline = table.rows
    assert (grid.cells["cartoon"].mean, grid.cells["cartoon"].se) == (62.0, pytest.approx(1.0))
    assert grid.mean.values == (56.5, 56.5)
    assert grid.mean.se == 0.0
    assert search.cells["cartoon"].se == pytest.approx(2.0816660, abs=1e-7)
    assert search.mean.values == (54.5, 61.5)
    assert search.mean.se == pytest.approx(3.5)
    assert search.dropped == 1
    assert baseline.cells["sketch"] is None
    assert baseline.mean is None
    assert baseline.dropped == 1


MARKDOWN = """\
| configuration | selection | cartoon | sketch | mean |
|---|---|---:|---:|---:|
| paper_grid's winner | oracle† | 62.0 ± 1.0 (n=2) | 51.0 ± 1.0 (n=2) | 56.5 ± 0.0 (n=2) |
| paper_search's winner | source_val | 63.0 ± 2.1 (n=3) | 52.5 ± 3.5 (n=2) | 58.0 ± 3.5 (n=2) |
| baseline | none | 55.0 (n=1) | - | - |

- Cells: mean ± SE over replicates or seeds (SE = sd/√n, sd over n - 1), n in parentheses; \
mean: per replicate (or seed) the mean over the targets, then mean ± SE of those.
- †oracle: selected on the data it reports (the paper's protocol; optimistic).
- source_val: selected on held-out source images; the targets are only reported.
- none: a fixed configuration: nothing was selected.
- paper_search's winner: 1 replicate without every target left out of the mean.
- baseline: 1 seed without every target left out of the mean.
"""


def test_markdown_exactly():
    assert markdown(build_table([GRID, SEARCH, BASELINE])) == MARKDOWN


LATEX = r"""\begin{tabular}{llccc}
\toprule
Configuration & Selection & cartoon & sketch & Mean \\
\midrule
paper\_grid's winner & oracle$^\dagger$ & 62.0 $\pm$ 1.0 (n=2) & 51.0 $\pm$ 1.0 (n=2) & 56.5 $\pm$ 0.0 (n=2) \\
paper\_search's winner & source\_val & 63.0 $\pm$ 2.1 (n=3) & 52.5 $\pm$ 3.5 (n=2) & 58.0 $\pm$ 3.5 (n=2) \\
baseline & none & 55.0 (n=1) & - & - \\
\bottomrule
\end{tabular}

{\footnotesize
Cells: mean $\pm$ SE over replicates or seeds (SE = sd/$\sqrt{n}$, sd over n - 1), n in parentheses; mean: per replicate (or seed) the mean over the targets, then mean $\pm$ SE of those.\par
$^\dagger$oracle: selected on the data it reports (the paper's protocol; optimistic).\par
source\_val: selected on held-out source images; the targets are only reported.\par
none: a fixed configuration: nothing was selected.\par
paper\_search's winner: 1 replicate without every target left out of the mean.\par
baseline: 1 seed without every target left out of the mean.\par
}
"""


def test_latex_exactly():
    assert latex(build_table([GRID, SEARCH, BASELINE])) == LATEX


def test_latex_escapes_and_target_order():
    assert (
        latex_escape("a_b & 50% #1 {x} ~^\\")
        == r"a\_b \& 50\% \#1 \{x\} \textasciitilde{}\textasciicircum{}\textbackslash{}"
    )
    table = build_table([SEARCH], targets=["sketch", "cartoon"])
    assert table.targets == ("sketch", "cartoon")
    assert markdown(table).splitlines()[0] == "| configuration | selection | sketch | cartoon | mean |"


def test_a_row_from_replicated_results():
    def rep(i: int, cartoon: float, sketch: float) -> Replicate:
        t = TrialOutcome(
            0,
            "completed",
            4,
            {"shaping.p0": 0.5},
            {"val_acc": 1.0, "acc_cartoon": cartoon, "acc_sketch": sketch},
        )
        return Replicate("s", i, "source_val", "val_acc", "max", (t,))

    reps = [rep(0, 60.0, 40.0), rep(1, 64.0, 44.0)]
    row = row_from_results("s's winner", [replicated_result(reps, t) for t in ("cartoon", "sketch")])
    assert row.protocol == "source_val"
    assert row.values == {"cartoon": {0: 60.0, 1: 64.0}, "sketch": {0: 40.0, 1: 44.0}}
    # per replicate 50, 54: mean 52, SE 2
    (cells,) = build_table([row]).rows
    assert (cells.mean.mean, cells.mean.se) == (52.0, pytest.approx(2.0))
    oracle = Replicate("o", 0, "oracle", "val_acc", "max", ())
    with pytest.raises(ValueError, match="one protocol"):
        row_from_results(
            "mixed", [replicated_result(reps, "cartoon"), replicated_result([oracle], "cartoon")]
        )
