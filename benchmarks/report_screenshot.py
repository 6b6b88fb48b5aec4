"""The screenshot of a report page in docs/compare.md: the page opened offline in headless Chromium
(tests/helpers/browser.py), its top saved as a PNG once its charts are drawn.

    .venv/bin/python benchmarks/report_screenshot.py REPORT.html docs/report-page.png [HEIGHT [SELECTOR]]

SELECTOR (e.g. '#plots') starts the picture at that part of the page instead of its top.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.browser import open_offline

READY = "document.body && document.body.getAttribute('data-plots')"


def main(page: Path, png: Path, height: int = 1700, selector: str | None = None) -> int:
    seen = open_offline(page, READY, png, height=height, scroll_to=selector)
    outside = [u for u in seen["requests"] if not u.startswith(("file://", "data:"))]
    print(
        f"{png}: charts {seen['value']} after {seen['seconds']:.1f} s (text after {seen['loaded_s']:.1f} s); "
        f"requests outside the file: {outside or 'none'}; console errors: {seen['errors'] or 'none'}"
    )
    return 0 if seen["value"] == "drawn" and not outside and not seen["errors"] else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), *map(int, sys.argv[3:4]), *sys.argv[4:5]))
