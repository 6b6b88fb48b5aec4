"""`asha-tune report`: the answer as one self-contained HTML page.

It reads only the records, as `compare` does (the sweeps through compare's readers, plus each
sweep's provenance: its parent run's tags and dates, its space, the device and failure of each
trial) and computes nothing of its own: page.py lays out compare's results, page_html.py renders
them. `compare` writes the same page beside its other outputs (`write_page`).

Importances need Optuna, which analysis may not import, so the page shows those the latest
`compare` of each search logged (importances_<search>.json and .txt on its comparison run,
found through the sweep's asha_tune.compared_in tag); a search never compared shows none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from asha_tune.analysis import page, page_html
from asha_tune.analysis.answers import Answers, answers, searches
from asha_tune.analysis.curves import Comparison, compare
from asha_tune.analysis.render import answers_text, report_text
from asha_tune.errors import ConfigError
from asha_tune.tracking import Tracker
from asha_tune.tracking.records import Sweep, open_store, read_provenance, read_sweeps
from asha_tune.tracking.tags import COMPARED_IN_TAG, FAILED

PAGE_FILE = "report.html"


# --- reading what the page adds to compare's records ------------------------------------------------


def read_importances(folder_or_run: Path | tuple[Tracker, str], name: str) -> page.Importance | None:
    """A search's importances as compare wrote them: from its output folder, or from its run."""
    if isinstance(folder_or_run, Path):
        json_file, text_file = (
            folder_or_run / f"importances_{name}.json",
            folder_or_run / f"importances_{name}.txt",
        )
        data = json.loads(json_file.read_text()) if json_file.is_file() else None
        text = text_file.read_text() if text_file.is_file() else ""
    else:
        tracker, run_id = folder_or_run
        data = tracker.load_dict(run_id, f"importances_{name}.json")
        text = tracker.load_text(run_id, f"importances_{name}.txt") or ""
    if not isinstance(data, dict) or not isinstance(data.get("importances"), dict):
        return None
    values = {str(k): float(v) for k, v in data["importances"].items()}
    return page.Importance(str(data.get("objective", "")), values, text.rstrip())


def logged_importances(tracker: Tracker, sweeps: Sequence[Sweep]) -> dict[str, page.Importance]:
    """Each search's importances from its latest comparison run, where compare computed them."""
    found = {}
    for name, members in searches(sweeps).items():
        if members[0].lists_configurations:
            continue
        first = members[0]
        run_id = tracker.tags(first.family_run_id or first.parent_run_id).get(COMPARED_IN_TAG)
        imp = read_importances((tracker, run_id), name) if run_id else None
        if imp is not None:
            found[name] = imp
    return found


# --- the page -----------------------------------------------------------------------------------


def write_page(
    tracker: Tracker,
    sweeps: Sequence[Sweep],
    path: Path,
    *,
    comparison: Comparison | None = None,
    found: Answers | None = None,
    text: str | None = None,
    importances: Mapping[str, page.Importance] | None = None,
    ui_url: str | None = None,
) -> page.Page:
    """The page of these sweeps, written at `path`; compare passes what it has computed already."""
    comparison = comparison or compare(list(sweeps))
    found = found or answers(sweeps)
    if text is None:
        text = "\n\n".join(s for s in (report_text(comparison), answers_text(found)) if s)
    built = page.build(
        sweeps,
        comparison,
        found,
        text=text,
        store=tracker.uri,
        provenance={s.name: read_provenance(tracker, s) for s in sweeps},
        importances=importances,
        ui_url=ui_url or (tracker.uri if tracker.uri.startswith(("http://", "https://")) else None),
    )
    page_html.write(built, path)
    return built


def check(by_name: Mapping[str, list[Sweep]]) -> None:
    """What a report cannot answer, each in one line: an empty sweep, every trial failed,
    sweeps under different selection protocols (never ranked against each other)."""
    for name, sweeps in by_name.items():
        trials = [t for s in sweeps for t in s.trials]
        if not trials:
            raise ConfigError(
                f"sweep {name} has no ended trial: nothing to report (if it was interrupted, "
                f"asha-tune resume {name} continues it)"
            )
        if all(t.record.status == FAILED for t in trials):
            raise ConfigError(
                f"every trial of sweep {name} failed ({len(trials)}): nothing to report (each reason is "
                f"kept in MLflow: asha-tune ui {name})"
            )
    protocols = {name: sweeps[0].protocol for name, sweeps in by_name.items()}
    if len(set(protocols.values())) > 1:
        which = ", ".join(f"{n} by {p}" for n, p in protocols.items())
        raise ConfigError(
            f"these sweeps select under different protocols ({which}): figures of different protocols "
            "are never ranked against each other; report the sweeps of one protocol together"
        )


def run_report(names: Sequence[str], tracking_uri: str, out: Path, ui_url: str | None = None) -> page.Page:
    """Read the sweeps, check that one page can answer for them, write the page at `out`."""
    if not names:
        raise ConfigError("name at least one sweep to report")
    if ui_url is not None and not ui_url.startswith(("http://", "https://")):
        raise ConfigError(f"--ui-url {ui_url}: give the MLflow UI's http:// or https:// address")
    tracker = open_store(tracking_uri)
    by_name = {name: read_sweeps(tracker, name) for name in dict.fromkeys(names)}
    check(by_name)
    sweeps = [s for members in by_name.values() for s in members]
    return write_page(tracker, sweeps, out, importances=logged_importances(tracker, sweeps), ui_url=ui_url)
