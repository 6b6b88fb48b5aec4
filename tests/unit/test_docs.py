"""The documentation against the code it describes: README.md and docs/*.md.

Each test reads files only (no Ray, no PACS) and fails when the prose drifts from the code: a tag
renamed in tracking/tags.py, a page or heading moved, a command, marker or environment variable
added without a word in the docs, or a README grown back into a specification.
"""

from __future__ import annotations

import argparse
import ast
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel

from asha_tune import defaults
from asha_tune.spaces.space import SearchSpace
from asha_tune.tracking import tags
from asha_tune.trial import datasets, registry
from asha_tune.trial.config import TrialConfig
from tests.helpers.names import DOTTED, REPO, defined_tags, resolves

README = REPO / "README.md"
DOCS = REPO / "docs"
MLFLOW_PAGE = DOCS / "mlflow.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_WORD_LIMIT = 1500

FENCED = re.compile(r"^(```|~~~)[^\n]*\n.*?^\1[ \t]*$", re.S | re.M)
BLOCK = re.compile(r"^(?:```|~~~)[^\n]*\n(.*?)^(?:```|~~~)[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """Markdown without its fenced code blocks."""
    return FENCED.sub("", text)


def code_spans(text: str) -> set[str]:
    return {span.strip("`") for span in INLINE_CODE.findall(prose(text))}


# --- the MLflow page and tracking/tags.py -------------------------------------------------------


def tag_module_names() -> dict[str, str]:
    """Every name tags.py defines for MLflow: each upper-case str constant (tags, statuses, kinds)
    and each per-epoch metric, by the constant (or collection) that holds it."""
    names = {name: value for name, value in vars(tags).items() if name.isupper() and isinstance(value, str)}
    for collection in ("EPOCH_METRICS", "EPOCH_TIMINGS", "DEVICE_TIME_METRICS", "USAGE_METRICS"):
        names.update({f"{collection}[{m}]": m for m in getattr(tags, collection)})
    names.update({f"MLFLOW_STATUS[{k}]": v for k, v in tags.MLFLOW_STATUS.items()})
    return names


def test_the_tag_constants_are_what_the_mlflow_page_is_checked_against():
    """The check below sees the constants it must: every tag family, the statuses, the kinds."""
    names = tag_module_names()
    assert {"STATUS_TAG", "KIND_TAG", "COMPLETED", "INTERRUPTED", "CONFIRMATION_KIND"} <= set(names)
    assert len(defined_tags()) >= 30
    assert all(t.startswith(("asha_tune.", "ray.")) for t in defined_tags())


def test_the_mlflow_page_names_every_tag_status_kind_and_epoch_metric():
    """docs/mlflow.md names each value as code (`asha_tune.status`, `completed`, `time_train`),
    and MLflow's own statuses as words: a constant added or renamed in tags.py fails here."""
    text = MLFLOW_PAGE.read_text()
    spans = code_spans(text)
    missing = sorted(
        f"{name} = {value!r}"
        for name, value in tag_module_names().items()
        if (value not in spans if not name.startswith("MLFLOW_STATUS") else value not in prose(text))
    )
    assert not missing, f"docs/mlflow.md does not name: {', '.join(missing)}"


def test_the_mlflow_page_names_no_asha_tune_tag_the_code_does_not_define():
    """Every `asha_tune.*` name on the page is a tag tags.py defines (a family such as
    `asha_tune.compares.<sweep>` counts as its prefix): a tag removed from the code fails here."""
    defined = defined_tags()
    undefined = sorted(set(DOTTED.findall(MLFLOW_PAGE.read_text())) - defined)
    assert not undefined, f"docs/mlflow.md names tags the code does not define: {', '.join(undefined)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_asha_tune_name_in_the_docs_is_a_tag_or_a_module_of_the_package(page):
    """Elsewhere an `asha_tune.*` name is a tag or a Python path (`asha_tune.api.launch`)
    that exists: a function moved or renamed fails here."""
    found = set(DOTTED.findall(page.read_text()))
    unknown = sorted(name for name in found if name not in defined_tags() and not resolves(name))
    assert not unknown, f"{page.name}: no such tag or module: {', '.join(unknown)}"


def test_the_name_check_refuses_what_does_not_exist():
    assert resolves("asha_tune.api.launch")
    assert resolves("asha_tune.trial")
    assert not resolves("asha_tune.api.no_such_function")
    assert not resolves("asha_tune.nowhere")
    assert "asha_tune.best_trial_id" not in defined_tags()


# --- links -------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose(page.read_text()), re.M):
        base = slug(heading)
        anchor, k = base, 1
        while anchor in found:
            anchor, k = f"{base}-{k}", k + 1
        found.add(anchor)
    return found


def relative_links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", prose(page.read_text()))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_the_slug_follows_githubs_rules():
    assert slug("Does Optuna beat the paper's grid?") == "does-optuna-beat-the-papers-grid"
    assert slug("Overrides: `--set`") == "overrides---set"
    assert slug("A sweep's parent run") == "a-sweeps-parent-run"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {', '.join(broken)}"


def test_the_link_check_sees_links_and_skips_urls_and_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[a](b.md#c) [web](https://example.org) `[x](y.md)`\n```\n[z](w.md)\n```\n")
    assert relative_links(page) == ["b.md#c"]


def test_the_readme_links_every_page_of_docs():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    orphans = sorted(p.name for p in DOCS.glob("*.md") if p.resolve() not in linked)
    assert not orphans, f"README.md does not link docs/{', docs/'.join(orphans)}"


# --- the README --------------------------------------------------------------------------------


def words(text: str) -> int:
    """Words of prose: whitespace-separated tokens outside fenced code blocks (the quickstart's
    output and the command lines are examples, not reading)."""
    return len(prose(text).split())


def test_the_word_count_leaves_code_blocks_out():
    assert words("one two\n```bash\nthree four five\n```\nsix\n") == 3


def test_the_readme_is_a_front_door_not_a_specification():
    count = words(README.read_text())
    assert count <= README_WORD_LIMIT, f"README.md has {count} words of prose (limit {README_WORD_LIMIT})"


def code_lines(text: str) -> list[str]:
    return [line.strip() for block in BLOCK.findall(text) for line in block.splitlines()]


def test_the_readme_gives_the_two_commands_and_the_test_command_ci_runs():
    """`make quickstart` and `make test` stay the front door's two commands; `make test` is what
    .ci/run calls, and `make test-fast` the fast tier."""
    text, lines = README.read_text(), code_lines(README.read_text())
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test\s*$", ci, re.M), ".ci/run no longer calls `make test`: update README.md"
    assert any(re.search(r"(^|\s)make quickstart(\s|$)", line) for line in lines)
    assert any(re.match(r"make test(\s|$)", line) for line in lines)
    assert any(re.match(r"make test-fast(\s|$)", line) for line in lines)
    assert ".ci/run" in prose(text)


def test_every_make_target_the_docs_name_exists():
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", (REPO / "Makefile").read_text(), re.M))
    code = [c for page in PAGES for c in (*code_spans(page.read_text()), *code_lines(page.read_text()))]
    named = {m for c in code for m in re.findall(r"(?:^|\s)make ([a-z][\w-]*)", c)}
    assert named, f"no such make target: {sorted(named - targets)}"
    assert not named - targets, f"no such make target: {sorted(named - targets)}"


def test_the_readme_names_every_test_marker():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    markers = [m.split(":")[0] for m in pyproject["tool"]["pytest"]["ini_options"]["markers"]]
    assert markers
    spans = code_spans(README.read_text())
    assert all(m in spans for m in markers), f"README.md should name the markers {markers}"


def test_the_readme_gives_every_command_one_line(capsys):
    """Each subcommand `asha-tune --help` lists has its line in README.md."""
    from asha_tune.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    subcommands = re.search(r"\{([a-z,_-]+)\}", capsys.readouterr().out).group(1).split(",")
    assert "launch" in subcommands
    text = README.read_text()
    missing = [c for c in subcommands if not re.search(rf"^asha-tune {c}\b", text, re.M)]
    assert not missing, f"README.md has no command line for: {', '.join(missing)}"


def test_the_sweeps_page_lists_every_environment_variable_of_defaults():
    env = [v for k, v in vars(defaults).items() if k.endswith("_ENV")]
    assert env
    spans = code_spans((DOCS / "sweeps.md").read_text())
    assert all(v in spans for v in env), f"docs/sweeps.md should list {env}"


# --- the search-space reference, the protocols and the flags of launch ---------------------------

SPACES_PAGE = DOCS / "spaces.md"
SELECTION_PAGE = DOCS / "selection.md"
SWEEPS_PAGE = DOCS / "sweeps.md"
ANY = "*"  # in a schema path: a key or position the user chooses (a parameter's name, a list index)


def _annotations(annotation: Any) -> list[Any]:
    """The types inside an annotation: the members of a union, the items of a list or a mapping
    (Annotated's metadata left out), depth first."""
    if get_origin(annotation) is Annotated:
        return _annotations(get_args(annotation)[0])
    found = [annotation]
    for arg in get_args(annotation):
        found += _annotations(arg)
    return found


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def schema_fields(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Every field of a space, by its dotted path as the user writes it in YAML (`selection.epoch`,
    `shaping.p0.first`; `parameters.*.low` where the user names the key), with its annotation.

    A section the space keeps as a plain mapping and checks as a trial's (`shaping`) is walked as
    the trial configuration's section of that name."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        path, annotation = f"{prefix}{name}", info.annotation
        if model is SearchSpace and get_origin(annotation) is dict and name in TrialConfig.model_fields:
            annotation = TrialConfig.model_fields[name].annotation
        fields[path] = annotation
        container = get_origin(annotation) in (dict, list)
        for inner in _annotations(annotation):
            if _is_model(inner):
                fields |= schema_fields(inner, f"{path}.{ANY}." if container else f"{path}.")
    return fields


def literal_values(annotation: Any) -> set[str]:
    return {v for a in _annotations(annotation) if get_origin(a) is Literal for v in get_args(a)}


def registry_names() -> dict[str, str]:
    """Every name a space may give a registry field, by where it comes from: each registry of
    trial/registry.py (a mapping of names), the datasets and their domains, and every value of a
    Literal field of the space (search algorithms, schedulers, parameter types, precisions)."""
    names: dict[str, str] = {}
    for constant, value in vars(registry).items():
        if constant.isupper() and isinstance(value, dict) and all(isinstance(k, str) for k in value):
            names |= {name: f"registry.{constant}" for name in value}
    for dataset, layout in datasets.DATASETS.items():
        names[dataset] = "datasets.DATASETS"
        names |= {domain: f"the domains of {dataset}" for domain in layout.domains}
    for path, annotation in schema_fields(SearchSpace).items():
        names |= {value: path for value in literal_values(annotation)}
    return names


def test_the_schema_walk_sees_every_section_nested_field_and_registry():
    """The lists the pages are checked against hold what they must: a field of every section,
    the nested ones, the parameters' and configurations' fields, and every kind of name."""
    fields = schema_fields(SearchSpace)
    assert {"name", "data.dataset", "data.source", "selection.epoch", "search.replicates"} <= set(fields)
    assert {"shaping.mode", "shaping.p0.first", "shaping.p0.last", "train.precision"} <= set(fields)
    assert {"parameters.*.low", "parameters.*.when", "configurations.*.published"} <= set(fields)
    sections = {s: TrialConfig.model_fields[s].annotation for s in ("data", "shaping", "train", "selection")}
    assert all(f"{s}.{f}" in fields for s, model in sections.items() for f in model.model_fields)
    names = registry_names()
    assert {"target", "topk", "lodo", "entropy", "im", "snd", "balanced", "shuffled"} <= set(names)
    assert {"office_home", "Real World", "grid", "list", "fifo", "conv_subset", "bf16", "best"} <= set(names)


def unnamed_fields(text: str) -> list[str]:
    """The space fields a page does not name as code: by its YAML path (`selection.epoch`), or a
    field inside a mapping or list whose keys the user chooses (`parameters.*.low`) by its own
    name (`low`)."""
    spans = code_spans(text)
    return sorted(
        path
        for path in schema_fields(SearchSpace)
        if (path.rpartition(f"{ANY}.")[2] if ANY in path else path) not in spans
    )


def unnamed_registry_names(text: str) -> list[str]:
    spans = code_spans(text)
    return sorted(f"{name} ({where})" for name, where in registry_names().items() if name not in spans)


def test_the_spaces_page_names_every_field_of_the_space():
    """A field added to a section of the space without a word on docs/spaces.md fails here."""
    missing = unnamed_fields(SPACES_PAGE.read_text())
    assert not missing, f"docs/spaces.md does not name the space fields: {', '.join(missing)}"


def test_the_spaces_page_names_every_registry_name():
    """Every shaping mode, shaping function, protocol, sampling, pairing, dataset and its domains,
    search algorithm, scheduler, parameter type and Literal value a space may write is code on
    docs/spaces.md."""
    missing = unnamed_registry_names(SPACES_PAGE.read_text())
    assert not missing, f"docs/spaces.md does not name: {', '.join(missing)}"


def test_the_space_checks_refuse_a_page_that_leaves_one_out():
    """The page without `selection.epoch`, without `low`, without `snd` fails: a name in prose or
    inside a longer span (`selection.epoch: best`) does not count."""
    text = SPACES_PAGE.read_text()
    for span, path in (("`selection.epoch`", "selection.epoch"), ("`low`", "parameters.*.low")):
        assert path in unnamed_fields(text.replace(span, span.strip("`") + " and `selection.epoch: best`"))
    assert "snd (registry.SELECTION_PROTOCOLS)" in unnamed_registry_names(text.replace("`snd`", "snd"))


def test_the_selection_page_names_every_protocol():
    spans = code_spans(SELECTION_PAGE.read_text())
    missing = [p for p in registry.SELECTION_PROTOCOLS if p not in spans]
    assert not missing, f"docs/selection.md does not name the protocols {', '.join(missing)}"


def launch_flags() -> list[str]:
    from asha_tune.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    launch = sub.choices["launch"]
    return [o for a in launch._actions for o in a.option_strings if o.startswith("--") and o != "--help"]


def test_the_sweeps_page_names_every_flag_of_launch():
    """Each option of `asha-tune launch` appears in code on docs/sweeps.md (`--warm-start SWEEP`,
    or a command line that uses it)."""
    text = SWEEPS_PAGE.read_text()
    code = [*code_spans(text), *code_lines(text)]
    flags = launch_flags()
    assert {"--space", "--set", "--replicates", "--warm-start", "--dry-run"} <= set(flags)
    missing = [f for f in flags if not any(re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", c) for c in code)]
    assert not missing, f"docs/sweeps.md does not name the launch flags {', '.join(missing)}"


# --- the durations the docs give, against their constants (README.md, docs/, deploy/) -------------

DEPLOY = REPO / "deploy"
SECONDS = {"s": 1, "seconds": 1, "min": 60, "minute": 60, "minutes": 60}
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "five": 5, "ten": 10, "fifteen": 15, "thirty": 30}
DURATION = (
    r"(\d[\d,.]*|"
    + "|".join(NUMBER_WORDS)
    + r") ("
    + "|".join(sorted(SECONDS, key=len, reverse=True))
    + r")\b"
)


def module_constant(path: Path, name: str) -> Any:
    """A module-level constant, read from its file (the module imports Ray)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} defines no {name}")


MAX_UNSAVED_S = module_constant(REPO / "asha_tune" / "sweep" / "checkpoints.py", "MAX_UNSAVED_S")
AUTOSCALER_WAITS = "asks the autoscaler for one and waits up to {} while it"
# (page, the words around a duration, `{}` where it stands, the constant it must equal in seconds)
DOC_DURATIONS = [
    (SWEEPS_PAGE, "asks it for such a node and waits up to {} while it adds one", defaults.AUTOSCALER_WAIT_S),
    (SWEEPS_PAGE, "If it stops answering for {} (`ASHA_TUNE_HEAD_LOST_S`)", defaults.HEAD_LOST_S),
    (SWEEPS_PAGE, "| `ASHA_TUNE_STUDY_RETRY_S` | {} |", defaults.STUDY_RETRY_S),
    (SWEEPS_PAGE, "| `ASHA_TUNE_HEAD_LOST_S` | {} (below Ray's own abort) |", defaults.HEAD_LOST_S),
    (SWEEPS_PAGE, "when {} of compute would otherwise be at risk", MAX_UNSAVED_S),
    (SWEEPS_PAGE, "loses at most half its work and at most {}.", MAX_UNSAVED_S),
    (
        DEPLOY / "README.md",
        "retry a lost connection for {} (`ASHA_TUNE_STUDY_RETRY_S`)",
        defaults.STUDY_RETRY_S,
    ),
    (DEPLOY / "README.md", "after {} without an answer (`ASHA_TUNE_HEAD_LOST_S`", defaults.HEAD_LOST_S),
    (DEPLOY / "README.md", "can hold a trial and waits up to {} while it adds", defaults.AUTOSCALER_WAIT_S),
    (DEPLOY / "ray-cluster.aws.yaml", AUTOSCALER_WAITS, defaults.AUTOSCALER_WAIT_S),
    (DEPLOY / "kuberay" / "rayjob.yaml", AUTOSCALER_WAITS, defaults.AUTOSCALER_WAIT_S),
]


def seconds_said(page: Path, words: str) -> float:
    """The duration `words` give on `page`, in seconds: line breaks read as spaces, and a YAML
    file's comments as prose."""
    lines = page.read_text().splitlines()
    if page.suffix != ".md":
        lines = [re.sub(r"^\s*# ?", "", line) for line in lines]
    text = " ".join(" ".join(lines).split())
    before, after = (re.escape(part) for part in words.split("{}"))
    found = re.search(before + DURATION + after, text)
    assert found, f"{page.name} no longer says {words!r}: update DOC_DURATIONS"
    number, unit = found.groups()
    value = NUMBER_WORDS.get(number) or float(number.replace(",", ""))
    return value * SECONDS[unit]


@pytest.mark.parametrize(
    ("page", "words", "constant"), DOC_DURATIONS, ids=[f"{p.name}: {w}" for p, w, _ in DOC_DURATIONS]
)
def test_every_duration_the_docs_give_is_its_constant(page, words, constant):
    assert seconds_said(page, words) == constant, (
        f"{page.relative_to(REPO)}: {words!r} should say {constant:g} s"
    )


def test_the_duration_check_reads_seconds_minutes_words_and_comments(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("waits up to 15\nminutes here; retries for five minutes; stops after 30 s.")
    assert seconds_said(page, "waits up to {} here") == 900
    assert seconds_said(page, "retries for {};") == 300
    assert seconds_said(page, "stops after {}.") == 30
    comment = tmp_path / "job.yaml"
    comment.write_text("# it waits up to\n# 15 minutes while it adds one\nkind: RayJob\n")
    assert seconds_said(comment, "waits up to {} while it") == 900
    with pytest.raises(AssertionError, match="no longer says"):
        seconds_said(page, "waits for {} there")
