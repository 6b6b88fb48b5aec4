"""The sweep's progress line as the driver shows it: what it says, and where it goes.

On a terminal it is one line that updates in place (rich's Live display: the driver's other
output, failure lines and the final summary included, prints above it); without one (a log, a
Ray Job, CI: stdout is not a TTY) it is a line at most every LINE_EVERY_S seconds, printed when
the sweep's picture changed, and the last picture always. What it says comes from plain numbers
that callbacks.ProgressCallback keeps as Tune's events come. No Ray here.
"""

from __future__ import annotations

import atexit
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from asha_tune.display import duration_text, eta_s, metric_text
from asha_tune.tracking.tags import COMPLETED, FAILED, PRUNED, RUNNING

LINE_EVERY_S = 5.0  # without a terminal: a line at most this often (failure lines and the last: at once)
REDRAW_EVERY_S = 0.25  # on a terminal: the line redrawn at most this often for an event ...
TICK_S = 1.0  # ... and this often while only the time goes on


@dataclass(frozen=True)
class Best:
    """The best epoch so far: any trial, any epoch (the final answer is a trial's last epoch)."""

    metric: str
    value: float
    se: float | None
    trial: int
    epoch: int


@dataclass(frozen=True)
class Picture:
    """What the line says, but the time: the counts by state, the ETA, GPU use, the best epoch."""

    started: int  # trials Tune has created so far (running, pending, ended)
    num_trials: int
    counts: Mapping[str, int]
    best: Best | None = None
    gpu_percent: float | None = None  # the sweep's mean GPU utilisation over the epochs reported
    eta_s: float | None = None

    def text(self) -> str:
        """`trials 8/20 · running 4 · stopped early 3 · finished 1 · failed 0 · ETA 12m 30s ·
        GPU 71% · best epoch so far: val_acc 55.50 ± 1.20% (trial 1, epoch 4)`"""
        c = self.counts
        parts = [
            f"trials {self.started}/{self.num_trials}",
            f"running {c.get(RUNNING, 0)}",
            f"stopped early {c.get(PRUNED, 0)}",
            f"finished {c.get(COMPLETED, 0)}",
            f"failed {c.get(FAILED, 0)}",
        ]
        if self.eta_s is not None:
            parts.append(f"ETA {duration_text(self.eta_s)}")
        if self.gpu_percent is not None:
            parts.append(f"GPU {self.gpu_percent:.0f}%")
        if self.best is not None:
            b = self.best
            where = f"(trial {b.trial}, epoch {b.epoch})"
            parts.append(f"best epoch so far: {metric_text(b.metric, b.value, b.se)} {where}")
        return " · ".join(parts)

    def changed_from(self, other: Picture | None) -> bool:
        """Whether a line is worth printing: the counts or the best moved (not only the ETA or GPU)."""
        return other is None or (self.started, dict(self.counts), self.best) != (
            other.started,
            dict(other.counts),
            other.best,
        )


def line(elapsed_s: float, picture: Picture) -> str:
    return f"[{duration_text(elapsed_s):>7}] {picture.text()}"


class Lines:
    """Without a terminal: a line when the picture changed, at most one every LINE_EVERY_S
    seconds; `say` (failure lines) at once; `end` prints the last picture if not yet printed."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self._printed: Picture | None = None
        self._at = -float("inf")

    def show(self, elapsed_s: float, picture: Picture, now: float, final: bool = False) -> None:
        if picture.changed_from(self._printed) and (final or now - self._at >= LINE_EVERY_S):
            print(line(elapsed_s, picture), file=self.stream, flush=True)
            self._printed, self._at = picture, now

    def due(self, now: float) -> bool:
        return now - self._at >= LINE_EVERY_S

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def end(self, elapsed_s: float, picture: Picture, now: float) -> None:
        self.show(elapsed_s, picture, now, final=True)


class LiveLine:
    """On a terminal: one line redrawn in place (rich.live.Live, refreshed by the driver's events
    and its loop, no thread of its own). While it shows, sys.stdout goes through it, so whatever
    else the driver prints lands above the line; `end` leaves the last picture on screen."""

    def __init__(self, stream: TextIO):
        from rich.console import Console
        from rich.live import Live

        console = Console(file=stream, force_terminal=True, highlight=False)
        self._live = Live(console=console, auto_refresh=False, redirect_stdout=True, redirect_stderr=False)
        self._drawn: tuple[Picture, int] | None = None
        self._at = -float("inf")
        self._live.start()
        atexit.register(self.stop)  # a second Ctrl-C can skip Tune's end of the experiment

    def _draw(self, elapsed_s: float, picture: Picture, now: float) -> None:
        from rich.text import Text

        self._live.update(Text(line(elapsed_s, picture), no_wrap=True, overflow="ellipsis"), refresh=True)
        self._drawn, self._at = (picture, int(elapsed_s)), now

    def show(self, elapsed_s: float, picture: Picture, now: float) -> None:
        if self._drawn != (picture, int(elapsed_s)) and now - self._at >= REDRAW_EVERY_S:
            self._draw(elapsed_s, picture, now)

    def due(self, now: float) -> bool:
        return now - self._at >= TICK_S

    def say(self, text: str) -> None:
        self._live.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def end(self, elapsed_s: float, picture: Picture, now: float) -> None:
        self._draw(elapsed_s, picture, now)
        self.stop()

    def stop(self) -> None:
        self._live.stop()  # a no-op once stopped
        atexit.unregister(self.stop)


def output(stream: TextIO | None = None) -> LiveLine | Lines:
    """A live line where `stream` (stdout) is a terminal, else rate-limited lines."""
    stream = stream or sys.stdout
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return LiveLine(stream) if terminal else Lines(stream)


class Timings:
    """The trials' own timings (Tune's `time_total_s` in their results), for the ETA: how long
    the ended trials took, how far the running ones are, how many ran at once at most."""

    def __init__(self) -> None:
        self.ended_s, self.ended, self.longest_s = 0.0, 0, 0.0
        self.running: dict[int, tuple[float, float]] = {}  # id(trial) -> (its seconds, as of when)
        self.slots = 0

    def moved(self, trial: Any, old: str | None, new: str, result: dict[str, Any] | None) -> None:
        """`trial` changed state; `result` is its last report (None or {} if none yet)."""
        if old == new:
            return
        own = _own_seconds(result)
        if old == RUNNING:
            self.running.pop(id(trial), None)
        if new == RUNNING:
            self.running[id(trial)] = (own or 0.0, time.monotonic())
        elif new in (COMPLETED, PRUNED) and own is not None:
            self.ended_s, self.ended = self.ended_s + own, self.ended + 1
            self.longest_s = max(self.longest_s, own)

    def reported(self, trial: Any, result: dict[str, Any]) -> None:
        own = _own_seconds(result)
        if id(trial) in self.running and own is not None:
            self.running[id(trial)] = (own, time.monotonic())

    def eta(self, to_start: int, now: float) -> float | None:
        if not to_start and not self.running:
            return None  # nothing left to wait for
        mean = self.ended_s / self.ended if self.ended else None
        running = [own + now - since for own, since in self.running.values()]
        return eta_s(mean, to_start, running, self.slots, self.longest_s)


def _own_seconds(result: dict[str, Any] | None) -> float | None:
    value = (result or {}).get("time_total_s")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
