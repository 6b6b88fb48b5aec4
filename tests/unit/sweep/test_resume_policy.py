"""One resume policy: the table the docs show is the one the code reads (sweep/resume_policy.py),
and what a resume keeps follows from it."""

from __future__ import annotations

from pathlib import Path

import asha_tune.api
from asha_tune.sweep.records import has_finished
from asha_tune.sweep.resume_policy import KEPT_REPLICATES, KEPT_TRIALS, POLICY, RETRY_FAILED, table
from asha_tune.tracking.records import TrialRecord
from asha_tune.tracking.tags import COMPLETED, FAILED, FINAL_STATUSES, INTERRUPTED, PRUNED, RUNNING

DOCS = Path(__file__).resolve().parents[3] / "docs" / "sweeps.md"


def test_the_facade_and_the_docs_show_the_table_the_code_reads():
    shown = table()
    assert shown.count("\n| a ") == len(POLICY)
    assert shown in (asha_tune.api.__doc__ or "")
    assert shown in DOCS.read_text()


def test_a_trial_that_ended_is_kept_and_only_such_a_trial():
    assert KEPT_TRIALS == FINAL_STATUSES
    assert not RETRY_FAILED  # Tune's resume_errored: a failed trial is not retried
    assert KEPT_REPLICATES == {COMPLETED, FAILED}
    assert INTERRUPTED not in KEPT_REPLICATES


def record(number: int, status: str) -> TrialRecord:
    return TrialRecord(number, f"run-{number}", status, 1, {}, {})


def test_a_sweep_has_finished_once_resume_would_keep_every_trial_of_its_space():
    ended = [record(0, COMPLETED), record(1, PRUNED), record(2, FAILED)]
    assert has_finished(ended, 3)
    assert not has_finished(ended, 4)  # a trial not started yet: resume starts it
    assert not has_finished([*ended[:2], record(2, INTERRUPTED)], 3)  # resume continues it
    assert not has_finished([*ended[:2], record(2, RUNNING)], 3)
