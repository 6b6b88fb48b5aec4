"""The Ray dashboard a sweep prints, opened in a real (headless) browser as a user would."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers.browser import Browser, needs_chromium
from tests.helpers.processes import wait_for
from tests.helpers.sweeps import quiet_env, space_file


def two_alive_trials(page: str) -> str | None:
    return page if page.count("train_trial") == 2 and re.search(r"ALIVE\s*x 2", page) else None


@needs_chromium
def test_the_printed_dashboard_shows_the_running_trials(tmp_path, pacs_root, shared_cache, process_tag):
    path = space_file(
        tmp_path,
        "watched",
        train={"epochs": 40, "batch_size": 16, "weights": "none"},
        shaping={"mode": "random", "convs": [1]},
        search={"algorithm": "random", "num_trials": 2, "max_concurrent": 2},
        scheduler={"kind": "fifo"},
        resources={"cpu": 1},
        parameters={"shaping.p0": {"type": "float", "low": 0.1, "high": 0.8}},
    )
    env = quiet_env(
        ASHA_TUNE_DATA_ROOT=str(pacs_root),
        ASHA_TUNE_CACHE_DIR=str(shared_cache),
        RAY_AUTH_TOKEN_PATH=str(tmp_path / "token"),
    )
    log = tmp_path / "launch.log"
    with open(log, "w") as out:
        driver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "asha_tune.cli",
                "launch",
                "--space",
                str(path),
                "--name",
                "watched",
                "--num-cpus",
                "2",
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    shots = Path(os.environ.get("ASHA_TUNE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        wait_for(lambda: "running 2" in log.read_text(), 300, "two running trials")
        text = log.read_text()
        url = re.search(
            r"Ray dashboard: (http://\S+) \(live while the sweep runs; MLflow keeps everything after\)", text
        ).group(1)
        token_file = Path(
            re.search(r"the dashboard asks for a token once per browser: paste the one in (\S+)", text).group(
                1
            )
        )
        assert token_file == tmp_path / "token"  # made by asha-tune, which manages a local Ray's token
        with Browser() as browser:
            browser.open(url)
            browser.wait_for_text("Authentication Token Required")  # what the printed hint prepares for
            browser.type_into(
                'input[placeholder="Enter your authentication token"]', token_file.read_text().strip()
            )
            browser.click_button("Submit")
            wait_for(lambda: "Authentication Token Required" not in browser.text(), 60, "the dialog to close")
            browser.open(f"{url}/#/actors")
            # The table fills in after its API call: one alive train_trial actor per running trial.
            page = wait_for(lambda: two_alive_trials(browser.text()), 120, "two alive trials on the page")
            browser.screenshot(shots / "ray-dashboard-actors.png")
        assert "Unauthorized" not in page
        assert "Authentication Token Required" not in page
    finally:
        driver.send_signal(signal.SIGTERM)
        try:
            driver.wait(timeout=180)
        except subprocess.TimeoutExpired:
            driver.kill()
    if shots != tmp_path:
        shutil.copy(log, shots / "launch.log")
