"""Every module the package's prose names exists: its docstrings and comments point at code by
`asha_tune.sweep.watch`, by `sweep/watch.py`, or by a module's stem and a name it defines
(`verdicts.ranked_trials`). A module moved or renamed, or a function renamed, fails here instead of
leaving a pointer to nowhere.

A bare `word.name` whose word is no module of the package (`reports.best_trial`, the module that
is gone) fails too, unless it is a space path (`train.lr`), a file (`meta.json`) or an importable
package (`optuna.samplers`). Read without importing: each file is parsed.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

import asha_tune
from asha_tune.spaces import SearchSpace
from asha_tune.trial.config import TrialConfig
from tests.helpers.names import DOTTED, REPO, defined_tags, module_names, resolves

PACKAGE = REPO / "asha_tune"
SOURCES = sorted(PACKAGE.rglob("*.py")) + sorted((REPO / "benchmarks").rglob("*.py"))
PY_PATH = re.compile(r"(?<![\w/.-])(?:[\w-]+/)*[\w-]+\.py\b")
# `stem.name` standing alone in backticks or parentheses: a module's name, or a call of it.
STEM_NAME = re.compile(r"[`(]([a-z_]+)\.([A-Za-z_]\w*)(?:\(\))?[`)]")
FILE_SUFFIXES = {"json", "txt", "yaml", "yml", "py", "md", "csv", "png", "db", "log", "u8", "toml", "sh"}


def prose(source: str) -> Iterator[tuple[int, str]]:
    """(line, text) of every docstring and comment of a Python file."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if (doc := ast.get_docstring(node, clean=False)) is not None:
                yield node.body[0].lineno, doc
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


@functools.cache
def stems() -> dict[str, list[Path]]:
    """Each module's (and package's) last name, with every file that defines it."""
    found: dict[str, list[Path]] = {}
    for path in PACKAGE.rglob("*.py"):
        stem = path.parent.name if path.name == "__init__.py" else path.stem
        found.setdefault(stem, []).append(path)
    return found


def space_sections() -> set[str]:
    """The first words of a space's or a configuration's dotted paths (`train.lr`, `search.only`)."""
    return set(SearchSpace.model_fields) | set(TrialConfig.model_fields)


def path_exists(name: str, where: Path) -> bool:
    """`sweep/watch.py` from the package, the checkout or the file's folder; a bare `watch.py`
    anywhere in the checkout. A path under a folder the checkout does not have is another
    project's (DomainBed's `domainbed/scripts/download.py`)."""
    first = name.split("/")[0]
    if "/" in name and not any((base / first).is_dir() for base in (PACKAGE, REPO, where)):
        return True
    if "/" not in name:
        return name in file_names()
    return any((base / name).is_file() for base in (PACKAGE, REPO, where))


@functools.cache
def file_names() -> set[str]:
    """The names of the checkout's files, its folders' (.venv, .git) aside."""
    return {
        p.name
        for folder in REPO.iterdir()
        if folder.is_dir() and not folder.name.startswith(".")
        for p in folder.rglob("*")
    } | {p.name for p in REPO.iterdir()}


@functools.cache
def names_defined(stem: str) -> set[str]:
    """The names modules of that stem define; a package's include its modules."""
    names = set()
    for path in stems()[stem]:
        names |= module_names(path)
        if path.name == "__init__.py":
            names |= {p.stem for p in path.parent.glob("*.py")} | {p.name for p in path.parent.iterdir()}
    return names


def is_module_name(dotted: str) -> bool:
    """A tag, a module or a name in one, or the package's lazily imported API (`asha_tune.launch`)."""
    api = dotted.removeprefix("asha_tune.")
    return dotted in defined_tags() or resolves(dotted) or api in asha_tune.__all__


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def dangling(path: Path, source: str | None = None) -> list[str]:
    """What the file's prose names that does not exist, as `file:line name`."""
    out = []
    where = path.relative_to(REPO)
    for line, text in prose(path.read_text() if source is None else source):
        for dotted in DOTTED.findall(text):
            if not is_module_name(dotted):
                out.append(f"{where}:{line} {dotted}")
        for name in PY_PATH.findall(text):
            if not path_exists(name, path.parent):
                out.append(f"{where}:{line} {name}")
        out += [f"{where}:{line} {name}" for name in dangling_stem_names(text, path)]
    return out


def dangling_stem_names(text: str, path: Path) -> list[str]:
    """The `stem.name`s of the text whose module lacks the name, or that name no module."""
    known, sections, out = stems(), space_sections(), []
    for stem, name in STEM_NAME.findall(text):
        if name in FILE_SUFFIXES or stem in sections or stem == PACKAGE.name:
            continue  # a file, a space path, or a dotted name checked in dangling
        if stem in known:
            if name not in names_defined(stem):
                out.append(f"{stem}.{name}")
        elif path.is_relative_to(PACKAGE) and not importable(stem):
            out.append(f"{stem}.{name} (no module {stem})")
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_a_docstring_or_comment_names_exists(path):
    assert not dangling(path), "names no module or name of the package: " + "; ".join(dangling(path))


def test_the_check_finds_every_kind_of_dangling_name():
    """A module path, a file path, a stem with a name it lacks and a gone module are each found;
    what exists, a space path, a file name and another package are not."""
    source = (
        '"""Gone: asha_tune.sweep.nowhere, tracking.py, sweep/nowhere.py, `verdicts.no_such`, (reports.Verdict).\n\n'
        "There: asha_tune.sweep.watch, asha_tune.launch, sweep/watch.py, registry.py, `verdicts.describe_best`,\n"
        '`train.lr`, `meta.json`, `optuna.samplers`, domainbed/scripts/download.py."""\n'
        "# gone in a comment: asha_tune.reports\n"
    )
    names = [entry.split(" ", 1)[1] for entry in dangling(PACKAGE / "sweep" / "probe.py", source)]
    assert names == [
        "asha_tune.sweep.nowhere",
        "tracking.py",
        "sweep/nowhere.py",
        "verdicts.no_such",
        "reports.Verdict (no module reports)",
        "asha_tune.reports",
    ]


# --- names that say what a module is ---------------------------------------------------------

ENDINGS = ("ison", "ion", "ing", "es", "ed", "s", "e")  # compare/comparison, replicates/replicated


def root(stem: str) -> str:
    """A module's stem without one English ending, so that forms of one word meet."""
    return next((stem[: -len(e)] for e in ENDINGS if stem.endswith(e) and len(stem) - len(e) >= 3), stem)


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def confusable(a: str, b: str) -> bool:
    """Two names a reader mistakes for each other: forms of one word, or a letter or two apart
    (names of five letters or more: `api` and `cli` are two letters apart and two words)."""
    if root(a) == root(b):
        return True
    return min(len(a), len(b)) >= 5 and edit_distance(a, b) <= 2


def folder_names(folder: Path) -> list[str]:
    """The modules and subpackages of one package folder."""
    return sorted(
        {p.stem for p in folder.glob("*.py") if p.name != "__init__.py"}
        | {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    )


@pytest.mark.parametrize(
    "folder",
    sorted({p.parent for p in PACKAGE.rglob("__init__.py")}),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_no_two_modules_of_one_folder_differ_by_a_letter_or_two(folder):
    names = folder_names(folder)
    pairs = [f"{a}/{b}" for i, a in enumerate(names) for b in names[i + 1 :] if confusable(a, b)]
    assert not pairs, f"{folder.relative_to(REPO)}: names a reader mistakes for each other: {pairs}"


def test_confusable_names_are_found_and_different_words_are_not():
    """The names issue 22 renamed, and the names of today that must stay apart."""
    for a, b in [
        ("replicated", "replicates"),
        ("compare", "comparison"),
        ("replicate", "replicated"),
        ("record", "records"),
        ("checkpoint", "checkpoints"),
        ("watch", "watcher"),
    ]:
        assert confusable(a, b), (a, b)
    for a, b in [
        ("api", "cli"),
        ("page", "page_html"),
        ("tags", "trials"),
        ("loading", "shaping"),
        ("pairing", "training"),
        ("records", "replicated"),
        ("single", "settings"),
    ]:
        assert not confusable(a, b), (a, b)


# --- a module's private names are its own ----------------------------------------------------


def private_reaches(source: str) -> list[str]:
    """Another asha_tune module's `_name` that a module uses: imported, or through the module."""
    modules, out = set(), []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE.name):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    out.append(f"{node.module}.{alias.name}")
                dotted = f"{node.module}.{alias.name}".split(".")
                if REPO.joinpath(*dotted).with_suffix(".py").is_file() or REPO.joinpath(*dotted).is_dir():
                    modules.add(alias.asname or alias.name)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                out.append(f"{node.value.id}.{node.attr}")
    return out


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_uses_another_modules_private_names(path):
    """What another module needs is public, with one home: `render.grid_text`, not `render._grid_text`."""
    assert not private_reaches(path.read_text()), "make these public: " + ", ".join(
        private_reaches(path.read_text())
    )


def test_the_private_check_sees_imports_and_module_attributes():
    source = (
        "from asha_tune.analysis import render, tables\n"
        "from asha_tune.analysis.tables import _cell, footnotes\n"
        "x = render._pct(1) + render.grid_text([]) + tables.__name__ + str._private\n"
    )
    assert private_reaches(source) == ["asha_tune.analysis.tables._cell", "render._pct"]
