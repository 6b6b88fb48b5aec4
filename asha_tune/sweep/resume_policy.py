"""What `resume` does with each trial, sweep and replicate, by its state when the driver stopped
(DomainBed's relaunch policy: one state decides what runs again).

`POLICY` is the one statement of it. The code reads it (`kept`, which single.py, replicated.py and
tuner.py act on), and asha_tune.api's docstring and docs/sweeps.md print it as `table()` renders it
(tests/unit/sweep/test_resume_policy.py checks that all three agree).
"""

from __future__ import annotations

from dataclasses import dataclass

from asha_tune.tracking.tags import COMPLETED, FAILED, INTERRUPTED, PRUNED, RUNNING

NOT_STARTED = "not started"  # a trial the study has not asked yet, a replicate never launched
KEEP, CONTINUE, START, REPORT, TAKE_OVER = "keep", "continue", "start", "report", "take over"


@dataclass(frozen=True)
class Rule:
    what: str  # trial | sweep | replicate
    states: tuple[str, ...]  # its MLflow status (tracking.tags) when the driver stopped, or NOT_STARTED
    state_text: str
    action: str  # KEEP | CONTINUE | START | REPORT | TAKE_OVER
    text: str  # what `resume` does, in words


POLICY = (
    Rule("trial", (COMPLETED, PRUNED), "completed, or pruned (stopped early by ASHA)", KEEP, "kept"),
    Rule(
        "trial",
        (FAILED,),
        "failed (past its retries, or it reported a failure)",
        KEEP,
        "kept as failed: not retried",
    ),
    Rule(
        "trial",
        (INTERRUPTED, RUNNING),
        "interrupted, or running (driver killed)",
        CONTINUE,
        "continued from its latest checkpoint, or from epoch 1",
    ),
    Rule("trial", (NOT_STARTED,), "not started", START, "started, up to `search.num_trials`"),
    Rule("sweep", (), "every trial ended", REPORT, "nothing runs: its answer is printed again"),
    Rule(
        "sweep",
        (RUNNING,),
        "recorded as running",
        TAKE_OVER,
        "taken over if its driver is gone, else refused",
    ),
    Rule("replicate", (COMPLETED, FAILED), "completed, or failed (every trial failed)", KEEP, "kept"),
    Rule("replicate", (INTERRUPTED, RUNNING), "interrupted, or running", CONTINUE, "continued, as a sweep"),
    Rule("replicate", (NOT_STARTED,), "not started", START, "launched, in order"),
)


def kept(what: str) -> frozenset[str]:
    """The states of a trial or replicate that `resume` keeps as they are (runs no further)."""
    return frozenset(s for rule in POLICY if rule.what == what and rule.action == KEEP for s in rule.states)


KEPT_TRIALS = kept("trial")  # each way a trial ends (FINAL_STATUSES): all kept, the sweep has finished
KEPT_REPLICATES = kept("replicate")  # a replicate's parent run that resume leaves as it is
RETRY_FAILED = FAILED not in KEPT_TRIALS  # Tune's `resume_errored` (tuner.restored_tuner)


def table() -> str:
    """The policy as the Markdown table the docs show."""
    lines = ["| what | its state when the driver stopped | what `resume` does |", "|---|---|---|"]
    lines += [f"| a {rule.what} | {rule.state_text} | {rule.text} |" for rule in POLICY]
    return "\n".join(lines)
