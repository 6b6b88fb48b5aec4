"""`asha-tune status` and `list`: a sweep's state (tracking/sweep_state.py) as lines for a person
and as JSON for a script: where it stands, its trials by state, the best so far with its noise,
elapsed time and an ETA from the trials' own timings, the last error, and the commands that go on.

Whether its driver is alive is the sweep room's to tell (sweep/control.py: pid or heartbeat); it
comes in as `Driver`, so this module reads nothing but the state it is given.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asha_tune.display import count, is_accuracy, metric_text
from asha_tune.tracking.best import best_trial
from asha_tune.tracking.sweep_state import SweepState, TrialRow
from asha_tune.tracking.tags import (
    COMPLETED,
    FAILED,
    FAILURE_TAG,
    FINAL_STATUSES,
    GPU_UTILIZATION_METRIC,
    INTERRUPTED,
    PRUNED,
    REPLICATES_TAG,
    RUNNING,
    SPACE_TAG,
    TRIALS_TAG,
)
from asha_tune.trial.selection import se_key

# A sweep's state as `status` names it, from its parent run's status tag.
STATES = {RUNNING: "running", COMPLETED: "finished", INTERRUPTED: "interrupted", FAILED: "failed"}


@dataclass(frozen=True)
class Driver:
    """What the sweep room says of a running sweep's driver (sweep/control.py: Seen)."""

    alive: bool | None  # None: cannot tell from here
    text: str
    certain: bool = False  # seen by its process on this machine, not by its heartbeat
    resubmit: str | None = None  # a detached driver's (launch --detach): the command that submits it again


@dataclass(frozen=True)
class Counts:
    finished: int
    stopped_early: int
    failed: int
    running: int
    interrupted: int
    to_go: int | None  # None: the space's size is not recorded

    @property
    def ended(self) -> int:
        return self.finished + self.stopped_early + self.failed


def counts(state: SweepState) -> Counts:
    """Its trials by state; a replicated search's summed over its replicates."""
    if state.replicates:
        parts = [counts(r) for r in state.replicates]
        never = _never_started(state)
        to_go = [p.to_go for p in parts]
        return Counts(
            sum(p.finished for p in parts),
            sum(p.stopped_early for p in parts),
            sum(p.failed for p in parts),
            sum(p.running for p in parts),
            sum(p.interrupted for p in parts),
            None if None in to_go else sum(t or 0 for t in to_go) + never,
        )
    by = [t.status for t in state.trials]
    total = state.num_trials
    return Counts(
        by.count(COMPLETED),
        by.count(PRUNED),
        by.count(FAILED),
        by.count(RUNNING),
        len(by) - sum(by.count(s) for s in (COMPLETED, PRUNED, FAILED, RUNNING)),
        None if total is None else max(0, total - len(by)),
    )


def _never_started(search: SweepState) -> int:
    """The trials of a replicated search's replicates that were never launched."""
    wanted = _int(search.params.get("search.replicates")) or len(search.replicates)
    # Its recorded space's count (space.json: `extend` grows it), else the param logged at launch.
    per = search.num_trials or _int(search.params.get("search.num_trials"))
    missing = max(0, wanted - len(search.replicates))
    return missing * per if per else 0


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def all_trials(state: SweepState) -> list[TrialRow]:
    return [t for r in state.replicates for t in r.trials] if state.replicates else list(state.trials)


def best_so_far(state: SweepState) -> TrialRow | None:
    """The best trial so far by the sweep's one rule (tracking.best); a rehearsal has none."""
    if state.rehearsal:
        return None
    return best_trial(all_trials(state), state.metric, state.mode)


def best_text(best: TrialRow, metric: str) -> str:
    value, se = best.metrics[metric], best.metrics.get(se_key(metric))
    if se is not None and is_accuracy(metric):
        return f"{metric} {value:.2f} ± {se:.2f}%"
    if se is not None:
        return f"{metric_text(metric, value)} ± {se:.3g}"
    return metric_text(metric, value)


def elapsed_s(state: SweepState, now: float) -> float:
    end = state.ended_ms / 1000 if state.ended_ms and state.status != RUNNING else now
    return max(0.0, end - state.started_ms / 1000)


def eta_s(state: SweepState, now: float) -> float | None:
    """How long the running sweep has left, from its own trials' timings: the ended trials'
    mean wall time for each trial to go, what is left of it for each running one, over the
    trials that run at once (as many as run now, else the space's max_concurrent). None while
    no trial has ended, or when the sweep is not running."""
    if state.status != RUNNING:
        return None
    trials = all_trials(state)
    took = [t.duration_s for t in trials if t.status in FINAL_STATUSES and t.duration_s]
    c = counts(state)
    if not took or c.to_go is None:
        return None
    mean = sum(took) / len(took)
    running = [t for t in trials if t.status == RUNNING]
    left = (c.to_go + c.interrupted) * mean
    left += sum(max(0.0, mean - (now - t.started_s)) if t.started_s else mean / 2 for t in running)
    at_once = len(running) or _int(state.params.get("search.max_concurrent")) or 1
    return left / at_once


def gpu_utilization(state: SweepState) -> float | None:
    """The mean GPU utilisation of the trials that logged it (each trial's last epoch), in %."""
    values = [
        t.metrics[GPU_UTILIZATION_METRIC] for t in all_trials(state) if GPU_UTILIZATION_METRIC in t.metrics
    ]
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else None


def last_error(state: SweepState) -> str | None:
    """The sweep's own failure (a lost head, a full disk), else its last failed trial's."""
    own = state.tags.get(FAILURE_TAG)
    if own:
        return own
    for replicate in reversed(state.replicates):
        if (found := last_error(replicate)) is not None:
            return found
    failed = [t for t in state.trials if t.status == FAILED and t.failure]
    if not failed:
        return None
    last = max(failed, key=lambda t: (t.ended_ms or 0, t.number))
    return f"trial {last.number} failed: {last.failure}"


def duration_text(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 05 min`, `2 d 4 h`."""
    s = int(round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    if s < 2 * 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def when_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


def state_text(state: SweepState, driver: Driver | None) -> str:
    """`running`, `running, but its driver is gone`, `finished`, ..."""
    name = STATES.get(state.status, state.status)
    if state.status == RUNNING and driver is not None and driver.alive is False:
        return "recorded as running, but its driver is gone"
    return name


# --- what to do next ------------------------------------------------------------------------------


def commands(state: SweepState, driver: Driver | None, tail: str, store: str) -> list[str]:
    """The commands that continue or inspect the sweep, in its state. `tail` is what the
    results-folder commands need (--results-dir), `store` what the record readers need
    (--tracking-uri)."""
    name = state.name
    if state.status == RUNNING and (driver is None or driver.alive is not False):
        return [f"asha-tune status {name}{store}", f"asha-tune stop {name}{store}"]
    if state.status in (RUNNING, INTERRUPTED):
        return [driver.resubmit if driver and driver.resubmit else f"asha-tune resume {name}{tail}"]
    if state.status == FAILED:
        space = state.tags.get(SPACE_TAG, "SPACE")
        return [f"asha-tune launch --space {space} --name {name} --restart{tail}"]
    found = [f"asha-tune ui {name}{tail}"]
    if not state.rehearsal:
        found.append(f"asha-tune report {name}{store}")
    return found


# --- the report ---------------------------------------------------------------------------------


def status_record(
    state: SweepState, driver: Driver | None, tail: str = "", store: str = "", now: float | None = None
) -> dict[str, Any]:
    """The sweep's status as JSON (`status --json`): what the lines say, as numbers."""
    now = time.time() if now is None else now
    c = counts(state)
    best = best_so_far(state)
    record: dict[str, Any] = {
        "name": state.name,
        "state": STATES.get(state.status, state.status),
        "driver": None if driver is None else {"alive": driver.alive, "text": driver.text},
        "rehearsal": state.rehearsal,
        "trials": {
            "total": state.num_trials if not state.replicates else None,
            "finished": c.finished,
            "stopped_early": c.stopped_early,
            "failed": c.failed,
            "running": c.running,
            "interrupted": c.interrupted,
            "to_go": c.to_go,
        },
        "best": None,
        "selection": {"protocol": state.protocol, "metric": state.metric, "mode": state.mode},
        "started": state.started_ms / 1000,
        "ended": state.ended_ms / 1000 if state.ended_ms and state.status != RUNNING else None,
        "elapsed_s": round(elapsed_s(state, now), 1),
        "eta_s": None if (eta := eta_s(state, now)) is None else round(eta, 1),
        "gpu_utilization_percent": gpu_utilization(state),
        "last_error": last_error(state),
        "commands": commands(state, driver, tail, store),
        "run_id": state.run_id,
    }
    if best is not None:
        record["best"] = {
            "trial": best.number,
            "status": best.status,
            "value": best.metrics[state.metric],
            "se": best.metrics.get(se_key(state.metric)),
            "run_id": best.run_id,
        }
    if state.replicates:
        record["replicates"] = [status_record(r, None, tail, store, now) for r in state.replicates]
    return record


def trials_line(state: SweepState) -> str:
    c = counts(state)
    ended = f"{c.ended} ended" if state.num_trials is None and not state.replicates else None
    total = c.ended + c.running + c.interrupted + (c.to_go or 0)
    head = ended or f"{c.ended} of {count(total, 'trial')} ended"
    parts = [f"{c.finished} finished", f"{c.stopped_early} stopped early", f"{c.failed} failed"]
    rest = [f"{c.running} running"] if c.running else []
    rest += [f"{c.interrupted} interrupted (resume continues them)"] if c.interrupted else []
    rest += [f"{c.to_go} to go"] if c.to_go else []
    return f"trials: {head} ({', '.join(parts)})" + (f"; {', '.join(rest)}" if rest else "")


def _replicates_text(state: SweepState) -> str:
    """`3 replicates, 2 launched`: the search's own count, and how many have started so far."""
    launched = len(state.replicates)
    recorded = state.tags.get(REPLICATES_TAG, "")
    total = int(recorded) if recorded.isdigit() else launched
    return count(total, "replicate") + (f", {launched} launched" if launched < total else "")


def status_lines(
    state: SweepState, driver: Driver | None, tail: str = "", store: str = "", now: float | None = None
) -> list[str]:
    """`asha-tune status NAME`: the sweep in a few lines."""
    now = time.time() if now is None else now
    kind = f"replicated search ({_replicates_text(state)})" if state.replicates else "sweep"
    rehearsal = " (a rehearsal: simulated trials)" if state.rehearsal else ""
    lines = [f"{kind} {state.name}: {state_text(state, driver)}{rehearsal}"]
    if driver is not None:
        lines.append(f"  driver: {driver.text}")
    space = state.tags.get(SPACE_TAG, "?")
    algorithm, scheduler = state.params.get("search.algorithm", "?"), state.params.get("scheduler.kind", "?")
    lines.append(
        f"  space {space}: {algorithm} search, {scheduler} scheduler; selection {state.protocol} "
        f"({state.metric}, {'higher' if state.mode == 'max' else 'lower'} is better)"
    )
    lines.append("  " + trials_line(state))
    for replicate in state.replicates:
        best = best_so_far(replicate)
        best_part = f"; best {best_text(best, state.metric)} (trial {best.number})" if best else ""
        lines.append(f"    {replicate.name}: {STATES.get(replicate.status, replicate.status)}; "
                     f"{trials_line(replicate).removeprefix('trials: ')}{best_part}")  # fmt: skip
    lines.append("  " + _best_line(state))
    timing = f"  started {when_text(state.started_ms)}, {duration_text(elapsed_s(state, now))} "
    timing += "ago" if state.status == RUNNING else "in all"
    if state.status == RUNNING:
        eta = eta_s(state, now)
        timing += f"; ETA {duration_text(eta)}" if eta is not None else "; ETA once a trial has ended"
    elif state.ended_ms:
        timing += f"; ended {when_text(state.ended_ms)}"
    lines.append(timing)
    gpu = gpu_utilization(state)
    if gpu is not None:
        lines.append(f"  GPU use: {gpu:.0f}% mean utilisation over the trials that logged it")
    error = last_error(state)
    if error:
        lines.append(f"  last error: {error}")
    lines.append("  next: " + " · ".join(commands(state, driver, tail, store)))
    return lines


def _best_line(state: SweepState) -> str:
    if state.rehearsal:
        return "best so far: none (a rehearsal's scores are simulated, not results)"
    best = best_so_far(state)
    if best is None:
        return "best so far: none yet (no trial has ended with a score)"
    how = "ran every epoch" if best.status == COMPLETED else "stopped early; no trial has run every epoch"
    where = f", {best.run_id}"
    return (
        f"best so far: {best_text(best, state.metric)}, trial {best.number} ({how}; last epoch; "
        f"selection {state.protocol}{where})"
    )


def list_lines(states: list[tuple[SweepState, Driver | None]], store: str) -> list[str]:
    """`asha-tune list`: one line per sweep of the store, newest first."""
    if not states:
        return [f"no sweep in {store}"]
    rows = []
    for state, driver in states:
        tag = " (rehearsal)" if state.rehearsal else ""
        tag += f" ({count(len(state.replicates), 'replicate')})" if state.replicates else ""
        trials = state.tags.get(TRIALS_TAG, "")
        best, value = "", state.metrics.get(f"best_{state.metric}")
        if state.trials or state.replicates:  # read whole (a running sweep)
            c = counts(state)
            trials = f"{c.ended}/{c.ended + c.running + c.interrupted + (c.to_go or 0)}"
            found = best_so_far(state)
            value = found.metrics[state.metric] if found is not None else None
        if value is not None and not state.rehearsal:
            best = metric_text(state.metric, value)
        rows.append(
            (
                state.name + tag,
                state_text(state, driver),
                trials,
                best,
                when_text(state.started_ms),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    header = ("sweep", "state", "trials", "best", "started")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=False)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, [*widths, 0], strict=True)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, [*widths, 0], strict=True)).rstrip() for row in rows]
    return out
