"""The report page's sections from records built in memory with known numbers (no Ray, no MLflow):
the verdicts are compare's own sentences, the tables its cells, and the HTML escapes records."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from html.parser import HTMLParser

import pytest

from asha_tune.analysis import page, page_html
from asha_tune.analysis.answers import answers
from asha_tune.analysis.curves import compare
from asha_tune.analysis.render import answers_text, report_text, versus_line
from asha_tune.tracking.records import Provenance, Sweep, TrialRecord, TrialRun
from asha_tune.tracking.tags import DATA_FINGERPRINT_TAG

GRID_PUBLISHED = {"baseline": {"acc_cartoon": 62.16}, "da-c4-cartoon": {"acc_cartoon": 63.95}}
WHEN = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def run(
    number: int,
    cartoon: float,
    *,
    status: str = "completed",
    epochs: int = 2,
    values: dict | None = None,
    configuration: str | None = None,
    mode: str = "random",
    settings: dict | None = None,
    run_id: str | None = None,
    entropy: float | None = None,
) -> TrialRun:
    metrics = (
        {} if status == "failed" else {"acc_cartoon": cartoon, "acc_cartoon_se": 1.0, "val_acc": cartoon}
    )
    if entropy is not None:
        metrics["entropy_cartoon"] = entropy
    record = TrialRecord(number, run_id or f"run-{number}", status, epochs, values or {}, metrics)
    return TrialRun(
        record, 1000 + number, 3.0 * epochs, configuration, {"cartoon": 2344}, mode, settings or {}
    )


def grid(winners: list[float], protocol: str = "oracle") -> list[Sweep]:
    """A replicated grid: per replicate a baseline and da-c4-cartoon; the latter wins with `winners`."""
    return [
        Sweep(
            f"grid.r{r}",
            f"g{r}",
            "1",
            protocol,
            "list",
            [
                run(
                    0,
                    acc - 5,
                    configuration="baseline",
                    mode="baseline",
                    values={"configuration": "baseline"},
                ),
                run(
                    1,
                    acc,
                    configuration="da-c4-cartoon",
                    mode="target",
                    values={"configuration": "da-c4-cartoon"},
                ),
            ],
            GRID_PUBLISHED,
            metric="acc_cartoon",
            family="grid",
            family_run_id="g",
            replicate=r,
        )
        for r, acc in enumerate(winners)
    ]


def search(
    winners: list[float], name: str = "search", protocol: str = "oracle", family: bool = True
) -> list[Sweep]:
    """A replicated search: per replicate three trials over p0 and convs, the last one stopped early."""
    sweeps = []
    for r, acc in enumerate(winners):
        trials = [
            run(
                0,
                acc,
                values={"shaping.p0": 0.6, "shaping.convs": [1, 5]},
                settings={"shaping.p0": 0.6, "shaping.convs": [1, 5]},
                entropy=1.0,
            ),
            run(
                1,
                acc - 3,
                values={"shaping.p0": 0.2, "shaping.convs": [3]},
                settings={"shaping.p0": 0.2, "shaping.convs": [3]},
                entropy=0.5,
            ),
            run(
                2,
                acc - 8,
                status="pruned",
                epochs=1,
                values={"shaping.p0": 0.9, "shaping.convs": [3]},
                settings={"shaping.p0": 0.9, "shaping.convs": [3]},
            ),
        ]
        sweeps.append(
            Sweep(
                f"{name}.r{r}" if family else name,
                f"s{r}",
                "1",
                protocol,
                "optuna",
                trials,
                {},
                metric="acc_cartoon",
                family=name if family else "",
                family_run_id=name if family else None,
                replicate=r,
            )
        )
    return sweeps


def build(sweeps: list[Sweep], **kwargs) -> page.Page:
    comparison, found = compare(sweeps), answers(sweeps)
    text = "\n\n".join([report_text(comparison), answers_text(found)])
    return page.build(sweeps, comparison, found, text=text, store="sqlite:///m.db", generated=WHEN, **kwargs)


class Text(HTMLParser):
    """The text a browser shows (scripts and styles left out)."""

    def __init__(self):
        super().__init__()
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def shown(html: str) -> str:
    parser = Text()
    parser.feed(html)
    return re.sub(r"\s+", " ", " ".join(parser.parts))


def test_the_verdict_is_compares_sentence_with_known_numbers():
    sweeps = grid([50.0, 52.0, 54.0]) + search([60.0, 62.0, 64.0])
    built = build(sweeps)
    (part,) = built.parts
    (verdict,) = part.verdicts
    # means 62 and 52, sd 2 each: SE of the difference sqrt(2·4/3) = 1.633, 2·SE = 3.27
    assert verdict.text == (
        "target cartoon · selection oracle (oracle: selected on the data it reports (optimistic)): "
        "search beats grid: +10.00 points, beyond two standard errors of the difference (2·SE = 3.27) "
        "at 3 replicates"
    )
    assert (verdict.tone, verdict.kind, verdict.target) == ("beats", "grid", "cartoon")
    found = answers(sweeps)
    assert verdict.text == versus_line(found.versus[0])
    assert f"  {verdict.text}" in answers_text(found)
    assert part.oracle
    assert part.note.startswith("oracle: selected on the data it reports")
    assert part.published == (
        "target cartoon: published best: 63.95 % (da-c4-cartoon; paper, selected by oracle)",
    )
    html = page_html.render(built)
    assert verdict.text in shown(html)
    assert 'data-tone="beats"' in html


def test_not_separable_says_how_many_replicates_would_separate():
    built = build(grid([50.0, 56.0]) + search([52.0, 60.0]))
    (verdict,) = built.parts[0].verdicts
    # d = 3, sds 4.24 and 5.66: 2·SE = 2·sqrt(9 + 16) = 10.00; n > 4·(18 + 32)/9 = 22.2
    assert verdict.tone == "unsure"
    assert (
        "search against grid: +3.00 points, not separable at 2 replicates (2·SE = 10.00); about 23 replicates"
        in verdict.text
    )


def test_the_table_sections_hold_compares_cells():
    built = build(grid([50.0, 52.0, 54.0]) + search([60.0, 62.0, 64.0]))
    table = built.parts[0].table
    assert table.columns == ("configuration", "selection", "cartoon", "mean")
    rows = {r[0].text: [c.text for c in r[1:]] for r in table.rows}
    assert rows["grid's winner (grid)"] == ["oracle†", "52.0 ± 1.2 (n=3)", "52.0 ± 1.2 (n=3)"]
    assert rows["search's winner (search)"] == ["oracle†", "62.0 ± 1.2 (n=3)", "62.0 ± 1.2 (n=3)"]
    assert rows["baseline (no shaping)"] == ["none", "47.0 ± 1.2 (n=3)", "47.0 ± 1.2 (n=3)"]
    assert any("†oracle: selected on the data it reports" in n for n in table.notes)
    # the selection gap: entropy picks the 3-points-worse trial in every replicate of the search
    (gap,) = built.parts[0].gaps.rows
    assert [c.text for c in gap] == [
        "search",
        "cartoon",
        "entropy (by entropy_cartoon)",
        "3.00 ± 0.00 points (mean ± SE over 3 replicates; sd 0.00)",
    ]
    assert built.parts[0].gaps.caption.startswith(
        "selection gap: the oracle's winner's reported accuracy minus"
    )
    grid_rows = {(r[0].text, r[1].text): r for r in built.grid.rows}
    row = grid_rows[("da-c4-cartoon (grid.r0)", "cartoon")]
    assert [c.text for c in row[2:5]] == ["50.00 ± 1.00", "63.95", "-13.95"]
    assert row[7].tone == "bad"
    html = page_html.render(built)
    text = shown(html)
    for cell in ("52.0 ± 1.2 (n=3)", "62.0 ± 1.2 (n=3)", "3.00 ± 0.00 points", "published (paper)"):
        assert cell in text
    # each search's winners, replicate by replicate, in compare's words
    (result,) = [r for r in built.parts[0].results if r.search == "search"]
    assert (
        "  replicate 0: trial 0 shaping.p0=0.6, shaping.convs=[1,5]: acc_cartoon 60.00 ± 1.00 (acc_cartoon 60)"
        in result.lines
    )


def test_a_page_for_a_sweep_with_failed_trials_shows_them_and_why():
    sweeps = search([60.0], name="solo", family=False)
    sweeps[0].trials.append(
        run(3, 0.0, status="failed", epochs=0, values={"shaping.p0": 0.4, "shaping.convs": [2]})
    )
    why = Provenance(
        failures={"run-3": "DivergedError: loss is nan at epoch 1"},
        devices={"run-0": "cpu"},
        tags={DATA_FINGERPRINT_TAG: "art_painting 6bff7ad98e9f123a, cartoon e7677005cb7ddcc8"},
    )
    built = build(sweeps, provenance={"solo": why})
    facts = dict(built.provenance[0].facts)
    assert (
        facts["data (domain fingerprints)"].text == "art_painting 6bff7ad98e9f123a, cartoon e7677005cb7ddcc8"
    )
    assert built.trials.columns[-1] == "why it failed"
    failed = next(r for r in built.trials.rows if r[1].text == "3")
    assert failed[3].text == "failed"
    assert failed[3].tone == "bad"
    assert failed[-1].text == "DivergedError: loss is nan at epoch 1"
    assert failed[5].text == "-"
    assert next(r for r in built.trials.rows if r[1].text == "0")[-3].text == "cpu"
    assert "4 (2 completed, 1 pruned, 1 failed)" in [c.text for c in built.sweeps.rows[0]]
    html = page_html.render(built)
    assert "DivergedError: loss is nan at epoch 1" in shown(html)


def test_a_single_sweep_without_a_grid_gives_its_own_answer():
    built = build(search([60.0], name="solo", family=False))
    (part,) = built.parts
    (verdict,) = part.verdicts
    assert verdict.kind == "alone"
    assert verdict.tone == ""
    assert verdict.text.startswith(
        "solo: target cartoon · selection oracle (oracle: selected on the data it reports), each replicate's "
        "winner by acc_cartoon (max): acc_cartoon 60.00 (1 replicate: no spread measured)"
    )
    assert built.grid is None
    assert built.confirmations is None
    sections = {f.section for f in built.figures}
    assert sections == {"budget", "search", "matters"}  # no replayed grid, no importances logged
    assert "no grid to beat" in shown(page_html.render(built))


def test_a_replicated_search_pools_its_replicates_in_the_figures():
    built = build(search([60.0, 62.0, 64.0]))
    parallel = next(f for f in built.figures if f.title == "search: parallel coordinates (acc_cartoon)")
    data = json.loads(parallel.json)["data"][0]
    assert data["type"] == "parcoords"
    dims = {d["label"]: d for d in data["dimensions"]}
    assert set(dims) == {"shaping.convs", "shaping.p0", "epochs run", "acc_cartoon"}
    assert len(dims["acc_cartoon"]["values"]) == 9  # three trials in each of three replicates
    assert dims["shaping.convs"]["ticktext"] == ["3", "1,5"]  # conv sets by size, then convs
    heat = next(f for f in built.figures if f.section == "matters")
    cells = json.loads(heat.json)["data"][0]
    # full-budget trials only
    assert cells["y"] == ["convs 3", "convs 1,5"]
    assert cells["x"] == ["0.2", "0.6"]
    assert cells["z"] == [[59.0, None], [None, 62.0]]
    budget = json.loads(next(f for f in built.figures if f.section == "budget").json)
    names = {t["name"] for t in budget["data"]}
    assert {"search.r0 (selection oracle)", "search.r2 (selection oracle)"} <= names
    assert any(n.startswith("published best (paper, oracle-selected): 63.95") for n in names)


def test_protocols_stay_apart_on_compares_page():
    built = build(grid([50.0, 52.0]) + search([60.0, 62.0], name="honest", protocol="source_val"))
    assert [p.protocol for p in built.parts] == ["oracle", "source_val"]
    assert all(v.kind == "alone" for p in built.parts for v in p.verdicts)  # nothing ranked across them
    assert not built.parts[1].oracle
    assert "held-out" in built.parts[1].note


def test_records_are_escaped_everywhere_and_cannot_close_a_script():
    sweeps = search([60.0], name="solo", family=False)
    evil = "<script>alert(1)</script>"
    sweeps[0].trials[0] = run(0, 60.0, values={"shaping.p0": 0.6, "shaping.convs": [1, 5], "note": evil})
    why = Provenance(failures={"run-0": evil}, tags={"asha_tune.space": evil})
    html = page_html.render(build(sweeps, provenance={"solo": why}, ui_url="http://127.0.0.1:5000"))
    assert evil not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S)
    for body in scripts:  # every script element's JSON still parses: nothing closed it early
        if body.lstrip().startswith("{"):
            json.loads(body)
    assert 'href="http://127.0.0.1:5000/#/experiments/1/runs/run-0"' in html


def test_the_page_is_one_file_that_names_no_other_host():
    html = page_html.render(build(grid([50.0, 52.0, 54.0]) + search([60.0, 62.0, 64.0])))
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html)
    assert all(s.startswith("#") for s in sources), sources
    assert "<link" not in html
    assert "@import" not in html
    assert len(html) < 3_000_000  # Plotly's 4.8 MB inlined gzipped


@pytest.mark.parametrize(
    ("uri", "shown_as"),
    [
        ("https://user:secret@mlflow.example/", "https://mlflow.example/"),
        ("sqlite:///a/b.db", "sqlite:///a/b.db"),
    ],
)
def test_credentials_never_reach_the_page(uri, shown_as):
    assert page.redact(uri) == shown_as


def test_a_parameter_some_trials_lack_stays_numeric_with_a_not_sampled_tick():
    sweeps = search([60.0], name="solo", family=False)
    sweeps[0].trials.append(run(3, 55.0, values={"shaping.convs": [2]}))  # e.g. a target map: no p0
    built = build(sweeps)
    parallel = json.loads(next(f for f in built.figures if "parallel" in f.title).json)["data"][0]
    p0 = next(d for d in parallel["dimensions"] if d["label"] == "shaping.p0")
    assert p0["ticktext"][0] == "not sampled"
    assert p0["ticktext"][1:] == [
        "0.2",
        "0.375",
        "0.55",
        "0.725",
        "0.9",
    ]
    assert p0["values"] == [0.6, 0.2, 0.9, p0["tickvals"][0]]
    assert p0["tickvals"][0] < 0.2
    slices = json.loads(next(f for f in built.figures if "slices" in f.title).json)["data"]
    assert [0.6, 0.2, None] in [t["x"] for t in slices]  # the p0 panel leaves the trial out, numeric


def test_the_sweeps_mean_gpu_use_shows_in_compare_and_on_the_page_only_where_trials_logged_it():
    cpu = search([60.0], name="cpu", family=False)
    gpu = search([60.0], name="gpu", family=False)
    # Epochs' GPU utilisation: 2 + 2 + 1 epochs, mean (80 + 60 + 70 + 50 + 90) / 5 = 70%.
    for trial, use in zip(gpu[0].trials, [(80.0, 60.0), (70.0, 50.0), (90.0,)], strict=True):
        trial.__dict__["gpu_use"] = use  # TrialRun is frozen: as records.read_sweeps would have set it
    assert gpu[0].gpu_percent == 70.0
    assert cpu[0].gpu_percent is None
    text = report_text(compare(cpu + gpu))
    lines = text.splitlines()
    oracle = "selection oracle (oracle: selected on the data it reports (optimistic))"
    assert f"  gpu: optuna search, {oracle}, 3 trials ended, mean GPU use 70%" in lines
    assert f"  cpu: optuna search, {oracle}, 3 trials ended" in lines  # no GPU: no figure
    table = build(cpu + gpu).sweeps
    assert table.columns[-1] == "mean GPU use"
    assert [row[-1].text for row in table.rows] == ["-", "70%"]
    assert "mean GPU use" not in build(cpu).sweeps.columns  # a CPU-only page: no column at all
    # Per trial too: each trial's mean over its epochs, numeric (sortable), none for a CPU trial.
    trials = build(cpu + gpu).trials
    column = trials.columns.index("GPU use %")
    assert column in trials.numeric
    by_sweep = [(row[0].text, row[column].sort) for row in trials.rows]
    assert by_sweep == [("cpu", None)] * 3 + [("gpu", 70.0), ("gpu", 60.0), ("gpu", 90.0)]
    assert "GPU use %" not in build(cpu).trials.columns
