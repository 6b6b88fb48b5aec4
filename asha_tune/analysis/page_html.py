"""The report page as one self-contained HTML file: Jinja2 over templates/report.html.j2.

Every string from the records is escaped (autoescape); JSON inside <script> elements has its `<`
written as \\u003c, so no record can close the element. Plotly's JavaScript is inlined once,
gzipped and base64-encoded (about 2 MB instead of 4.8), and unpacked by the browser's own
DecompressionStream: the page opens offline and asks no host for anything. The verdicts and
tables are plain HTML, readable even where the charts cannot be drawn.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
from pathlib import Path
from typing import Any

from asha_tune import __version__
from asha_tune.analysis.page import Page
from asha_tune.files import write_atomic

TEMPLATE = "report.html.j2"


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element (no `<`, so no `</script>`)."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


@functools.cache
def plotly_bundle() -> tuple[str, str]:
    """(plotly.js version, its code gzipped and base64-encoded): inlined once per page."""
    import plotly
    from plotly.offline import get_plotlyjs

    packed = gzip.compress(get_plotlyjs().encode(), compresslevel=9, mtime=0)
    return str(plotly.__version__), base64.b64encode(packed).decode("ascii")


@functools.cache
def plotly_template() -> str:
    """The look every figure shares (Plotly's plotly_white), carried once by the page."""
    import plotly.io as pio
    from plotly.io.json import to_json_plotly

    return str(to_json_plotly(pio.templates["plotly_white"].to_plotly_json()))


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("asha_tune.analysis", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["script_json"] = script_json
    return env


def render(page: Page) -> str:
    version, bundle = plotly_bundle()
    sections = [
        s
        for s in ("budget", "grid", "search", "matters", "importances")
        if any(f.section == s for f in page.figures)
    ]
    return str(
        _environment()
        .get_template(TEMPLATE)
        .render(
            page=page,
            sections=sections,
            asha_tune_version=__version__,
            plotly_version=version,
            plotly_gz=bundle,
            plotly_template=plotly_template(),
        )
    )


def write(page: Page, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render(page))
    return path
