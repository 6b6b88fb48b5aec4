"""The DomainBed-style table: rows of winners, columns of targets and their mean, mean ± SE cells.

Rows are the grid's winner, each search's winner and the baseline; columns the targets and
their mean. Every cell is mean ± SE over replicates (or over seeds, for a fixed configuration)
with its n, and every row says how it was selected: a `selection` column, with a footnote mark
on a protocol selected on the data it reports (oracle), and the protocol's own note beneath
(registry.ProtocolInfo.note). The mean column is computed per replicate (the
mean over targets of that replicate's figures), then mean ± SE of those replicate-level means,
never by averaging the targets' SEs: the targets of one replicate share its seeds and are not
independent. A replicate missing a target is left out of the mean column (and said so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from asha_tune.analysis.estimates import Estimate
from asha_tune.analysis.replicate_stats import ReplicatedResult
from asha_tune.display import count
from asha_tune.trial.registry import SELECTION_PROTOCOLS, selects_on_reported

NOT_SELECTED = "none"  # a fixed configuration (the baseline): nothing was chosen
ORACLE_MARK = "†"  # on a protocol selected on the data it reports (registry: selects_on_reported)
NOT_SELECTED_NOTE = "a fixed configuration: nothing was selected"


def protocol_note(protocol: str) -> str:
    """A row's selection in a footnote's words: its protocol's record, or the fixed configuration's."""
    if protocol == NOT_SELECTED:
        return NOT_SELECTED_NOTE
    info = SELECTION_PROTOCOLS.get(protocol)
    return info.note if info is not None else "selected as its sweep records"


def protocol_mark(protocol: str, mark: str = ORACLE_MARK) -> str:
    """`mark` on a protocol selected on the data it reports, else nothing."""
    return mark if selects_on_reported(protocol) else ""


@dataclass(frozen=True)
class TableRow:
    """One row's figures: target -> {replicate (or seed) index: reported accuracy}."""

    label: str  # e.g. "paper_grid's winner"
    protocol: str  # how its cells were selected; NOT_SELECTED for a fixed configuration
    values: Mapping[str, Mapping[int, float]]
    over: str = "replicates"  # what n counts: replicates, or seeds of a fixed configuration


def row_from_results(label: str, results: Sequence[ReplicatedResult]) -> TableRow:
    """A search's row from its per-target replicated results (one protocol)."""
    protocols = {r.protocol for r in results}
    if len(protocols) != 1:
        raise ValueError(f"{label}: a row holds one protocol, got {', '.join(sorted(protocols)) or 'none'}")
    return TableRow(label, protocols.pop(), {r.target: r.by_replicate for r in results})


@dataclass(frozen=True)
class RowCells:
    label: str
    protocol: str
    over: str
    cells: dict[str, Estimate | None]  # target -> its estimate; None: no figure
    mean: Estimate | None  # over replicates of the per-replicate mean over targets
    dropped: int  # replicates left out of the mean column (a target missing)


@dataclass(frozen=True)
class Table:
    targets: tuple[str, ...]
    rows: tuple[RowCells, ...]


def _cells(row: TableRow, targets: Sequence[str]) -> RowCells:
    cells: dict[str, Estimate | None] = {}
    for target in targets:
        figures = row.values.get(target, {})
        cells[target] = Estimate(tuple(figures[k] for k in sorted(figures))) if figures else None
    indices = set.union(*(set(row.values.get(t, {})) for t in targets)) if targets else set()
    complete = sorted(k for k in indices if all(k in row.values.get(t, {}) for t in targets))
    mean = (
        Estimate(tuple(sum(row.values[t][k] for t in targets) / len(targets) for k in complete))
        if complete
        else None
    )
    return RowCells(row.label, row.protocol, row.over, cells, mean, len(indices) - len(complete))


def build_table(rows: Sequence[TableRow], targets: Sequence[str] | None = None) -> Table:
    """The cells of every row; targets in the given order, else in order of first appearance."""
    if targets is None:
        targets = list(dict.fromkeys(t for row in rows for t in row.values))
    return Table(tuple(targets), tuple(_cells(row, targets) for row in rows))


# --- text --------------------------------------------------------------------------------------


def estimate_cell(estimate: Estimate | None, digits: int, pm: str) -> str:
    """A table cell: mean `pm` SE (n=...), a lone figure marked n=1, `-` for none."""
    if estimate is None or estimate.n == 0:
        return "-"
    if estimate.n == 1:  # one figure: no spread measured, no SE to show
        return f"{estimate.mean:.{digits}f} (n=1)"
    return f"{estimate.mean:.{digits}f} {pm} {estimate.se:.{digits}f} (n={estimate.n})"


def footnotes(table: Table) -> list[str]:
    """What a table's cells are, each protocol's note in its record's words, and the rows that
    left some of their runs out of the mean."""
    overs = sorted({r.over for r in table.rows})
    notes = [
        f"Cells: mean ± SE over {' or '.join(overs)} (SE = sd/√n, sd over n - 1), n in parentheses; "
        "mean: per replicate (or seed) the mean over the targets, then mean ± SE of those."
    ]
    for protocol in dict.fromkeys(r.protocol for r in table.rows):
        notes.append(f"{protocol_mark(protocol)}{protocol}: {protocol_note(protocol)}.")
    for r in table.rows:
        if r.dropped:
            dropped = count(r.dropped, r.over.removesuffix("s"))
            notes.append(f"{r.label}: {dropped} without every target left out of the mean.")
    return notes


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(table: Table, digits: int = 1) -> str:
    """A pipe table, then its footnotes as a list."""
    header = ["configuration", "selection", *map(_md, table.targets), "mean"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|",
    ]
    for r in table.rows:
        cells = [estimate_cell(r.cells[t], digits, "±") for t in table.targets] + [
            estimate_cell(r.mean, digits, "±")
        ]
        lines.append(
            "| " + " | ".join([_md(r.label), _md(r.protocol + protocol_mark(r.protocol)), *cells]) + " |"
        )
    return "\n".join(lines + [""] + [f"- {note}" for note in footnotes(table)]) + "\n"


LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(c, c) for c in text)


def _latex_note(note: str) -> str:
    return (
        latex_escape(note)
        .replace(ORACLE_MARK, r"$^\dagger$")
        .replace("±", r"$\pm$")
        .replace("√n", r"$\sqrt{n}$")
    )


def latex(table: Table, digits: int = 1) -> str:
    """A booktabs tabular, then its footnotes in small type (one paragraph each)."""
    columns = 2 + len(table.targets) + 1
    header = ["Configuration", "Selection", *map(latex_escape, table.targets), "Mean"]
    lines = [
        r"\begin{tabular}{ll" + "c" * (columns - 2) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for r in table.rows:
        cells = [estimate_cell(r.cells[t], digits, r"$\pm$") for t in table.targets] + [
            estimate_cell(r.mean, digits, r"$\pm$")
        ]
        protocol = latex_escape(r.protocol) + protocol_mark(r.protocol, r"$^\dagger$")
        lines.append(" & ".join([latex_escape(r.label), protocol, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", "", r"{\footnotesize"]
    lines += [_latex_note(note) + r"\par" for note in footnotes(table)]
    return "\n".join([*lines, "}"]) + "\n"
