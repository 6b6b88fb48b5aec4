"""Headless Chromium for tests that check what a person sees: a page's text and a screenshot.

Debian's `chromium` package, driven over the DevTools protocol (aiohttp's websocket client, which
Ray already installs), so a test can also type into a page (the Ray dashboard's token dialog).
Use `screenshot(url, path)` for one page, `Browser` for more steps; mark tests `needs_chromium`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")

# Quiet and offline: no sandbox (root in CI), no GPU, no background traffic to Google.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class Browser:
    """One headless Chromium with a fresh profile; every call blocks until the page answers."""

    def __init__(self, width: int = 1400, height: int = 900, timeout: float = 60):
        if CHROMIUM is None:
            raise RuntimeError("Chromium is not installed")
        self.timeout = timeout
        # Chromium's helper processes may still write the profile as it closes: a leftover file
        # there must not fail the test that used the browser.
        self._profile = tempfile.TemporaryDirectory(prefix="asha-tune-chromium-", ignore_cleanup_errors=True)
        self._process = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={self._profile.name}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._loop = asyncio.new_event_loop()
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []  # DevTools events seen so far (the domains enabled)
        try:
            self._run(self._connect())
            self.call("Page.enable")
            self.call("Emulation.setFocusEmulationEnabled", enabled=True)  # a headless page has no focus
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    # -- plumbing --

    def _run(self, coroutine: Any) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(coroutine, self.timeout))

    async def _connect(self) -> None:
        import aiohttp

        port_file = Path(self._profile.name) / "DevToolsActivePort"
        while not port_file.is_file() or not port_file.read_text().strip():
            if self._process.poll() is not None:
                raise RuntimeError(f"Chromium exited with status {self._process.returncode}")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
            pages = [t for t in await response.json() if t["type"] == "page"]
        self._socket = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        message_id = next(self._ids)
        await self._socket.send_str(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads((await self._socket.receive()).data)
            if "method" in message and "id" not in message:  # an event, e.g. Network.requestWillBeSent
                self.events.append(message)
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools protocol command."""
        return self._run(self._call(method, params))

    def close(self) -> None:
        try:
            if getattr(self, "_session", None) is not None:
                self._run(self._session.close())
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGTERM)  # its helpers too (own session)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=30)
            self._loop.close()
            self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what a person does --

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """A JavaScript expression's value; retried while the page is navigating (a reload)."""
        for attempt in range(20):
            try:
                result = self.call(
                    "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
                )
                return result.get("result", {}).get("value")
            except RuntimeError as err:
                if "navigated" not in str(err) and "context" not in str(err) or attempt == 19:
                    raise
                time.sleep(0.5)
        return None

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, wanted: str, timeout: float = 60) -> str:
        """The page's text once it contains `wanted` (pages render after their API calls)."""
        deadline = time.time() + timeout
        text = ""
        while time.time() < deadline:
            text = self.text()
            if wanted in text:
                return text
            time.sleep(0.5)
        raise AssertionError(
            f"{wanted!r} did not appear within {timeout:g} s; the page shows: {text[:1500]!r}"
        )

    def type_into(self, selector: str, text: str, timeout: float = 30) -> None:
        """Focus a field and type, as keystrokes would (frameworks see real input events)."""
        focus = (
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
            "if (e) e.focus(); return !!e && document.activeElement === e; })()"
        )
        deadline = time.time() + timeout
        while not self.evaluate(focus):
            if time.time() > deadline:
                raise AssertionError(f"no element matches {selector}")
            time.sleep(0.3)
        self.call("Input.insertText", text=text)

    def click_button(self, label: str) -> None:
        """Click the button showing `label` (any case: styles often upper-case labels)."""
        clicked = self.evaluate(
            f"(() => {{ const b = [...document.querySelectorAll('button')]"
            f".find(b => b.innerText.trim().toLowerCase() === {json.dumps(label.lower())}); "
            f"if (b) b.click(); return !!b; }})()"
        )
        if not clicked:
            raise AssertionError(f"no button labelled {label!r}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


def screenshot(url: str, path: Path, wait_for: str | None = None, timeout: float = 60) -> str:
    """Open `url` in a fresh headless Chromium, wait for `wait_for` to show, save a PNG at `path`;
    returns the page's text."""
    with Browser(timeout=timeout) as browser:
        browser.open(url)
        text = browser.wait_for_text(wait_for, timeout) if wait_for else browser.text()
        browser.screenshot(path)
        return text


def open_offline(
    path: Path,
    ready: str,
    shot: Path | None = None,
    width: int = 1400,
    height: int = 1600,
    timeout: float = 180,
    scroll_to: str | None = None,
) -> dict[str, Any]:
    """Open a local file in a fresh headless Chromium with the network off, and a log of every
    request and console message: wait until the JavaScript expression `ready` is truthy, then save
    a screenshot (`height` pixels, from the top or from the element `scroll_to` selects) at `shot`.

    Returns {"value": ready's value, "seconds": until then, "loaded_s": until its HTML was parsed
    (DOMContentLoaded), "text": the page's text, "requests": every URL asked for, "errors": console
    errors and uncaught exceptions}."""
    with Browser(width=width, height=height, timeout=timeout) as browser:
        for domain in ("Network", "Runtime", "Log"):
            browser.call(f"{domain}.enable")
        browser.call(
            "Network.emulateNetworkConditions",
            offline=True,
            latency=0,
            downloadThroughput=-1,
            uploadThroughput=-1,
        )
        start = time.time()
        browser.open(path.resolve().as_uri())
        value = None
        while time.time() - start < timeout:
            value = browser.evaluate(ready)
            if value:
                break
            time.sleep(0.25)
        seconds = time.time() - start
        loaded = browser.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
        text = browser.text()
        if scroll_to is not None:  # the screenshot shows the page from this element down
            browser.evaluate(f"document.querySelector({json.dumps(scroll_to)}).scrollIntoView()")
            time.sleep(0.5)
        if shot is not None:
            browser.screenshot(shot)
        events = browser.events
        errors = [
            e["params"].get("exceptionDetails", e["params"]).__repr__()
            for e in events
            if e["method"] == "Runtime.exceptionThrown"
            or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
            or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
        ]
        requests = [
            e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"
        ]
        return {
            "value": value,
            "seconds": seconds,
            "loaded_s": (loaded or 0) / 1000,
            "text": text,
            "requests": requests,
            "errors": errors,
        }
